//! `run_heartbeat(id [, lease])` and `run_checkpoint(id, step [, state [, lease]])`.
//!
//! The fast path is one UPDATE … RETURNING whose WHERE clause holds every
//! precondition (run exists, is live, metadata is an object or NULL, lease
//! matches, checkpoint does not go backwards). Only when it changes no row
//! does [`diagnose`] read the row to say which precondition failed.

use std::sync::Arc;

use rusqlite::functions::Context;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Result};

use crate::errors::{fail, quote, wrap};
use crate::metadata::{parse, State};
use crate::state::{now_ms, Installed, Shared};
use crate::{args, WRITER};

/// Stamps `lastHeartbeat` (never backwards) and returns it; `Ok(None)` when
/// the statement changed no row (then [`diagnose`] says why). `config` is the
/// stored config text `inst` was built from.
pub fn heartbeat(
    conn: &Connection,
    inst: &Installed,
    config: &str,
    id: &Value,
    lease: Option<i64>,
    now: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(&inst.sql.heartbeat)?;
    stmt.query_row(params![id, now, lease, config], |r| r.get::<_, i64>(0))
        .optional()
}

/// Records checkpoint `step` with `state` (JSON text or NULL) and a heartbeat
/// in one statement; returns the heartbeat, or `Ok(None)` as [`heartbeat`].
#[allow(clippy::too_many_arguments)]
pub fn checkpoint(
    conn: &Connection,
    inst: &Installed,
    config: &str,
    id: &Value,
    step: i64,
    state: Option<&str>,
    lease: Option<i64>,
    now: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(&inst.sql.checkpoint)?;
    stmt.query_row(params![id, now, lease, config, step, state], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
}

/// Says why a stamp changed no row. Reads the row; changes nothing.
pub fn diagnose(
    conn: &Connection,
    inst: &Installed,
    func: &str,
    id: &Value,
    id_text: &str,
    lease: Option<i64>,
    step: Option<i64>,
) -> rusqlite::Error {
    let row: Option<(Option<String>, Option<String>)> = match conn
        .prepare_cached(&inst.sql.read_row)
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
    {
        Ok(row) => row,
        Err(e) => return wrap(func, e),
    };
    let Some((status, meta)) = row else {
        return fail(
            func,
            format!("no run with {} {}", inst.cfg.id_column, quote(id_text)),
        );
    };
    let status = status.unwrap_or_default();
    if !inst.cfg.is_live(&status) {
        return fail(
            func,
            format!(
                "run {} is not live, found status {}; only a run in {} has an executor to stamp it",
                quote(id_text),
                quote(&status),
                inst.cfg.live_statuses.join(", ")
            ),
        );
    }
    let m = match parse(func, id_text, meta.as_deref()) {
        Ok(m) => m,
        Err(msg) => return rusqlite::Error::UserFunctionError(msg.into()),
    };
    let st = State::of(&m);
    if let Some(l) = lease {
        if l != st.lease {
            return fail(
                func,
                format!(
                    "stale lease {l} for run {}, found lease {}: the run was recovered by another client, \
                     this executor must stop",
                    quote(id_text),
                    st.lease
                ),
            );
        }
    }
    if let (Some(step), Some(current)) = (step, st.checkpoint_step) {
        if step < current {
            return fail(
                func,
                format!(
                    "step {step} of run {} is behind its committed checkpoint, found checkpointStep {current}",
                    quote(id_text)
                ),
            );
        }
    }
    fail(
        func,
        format!(
            "run {} changed while it was being stamped; try again",
            quote(id_text)
        ),
    )
}

pub fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    for n_arg in [1, 2] {
        let shared = shared.clone();
        db.create_scalar_function(c"run_heartbeat", n_arg, WRITER, move |ctx| {
            sql_heartbeat(ctx, &shared)
        })?;
    }
    for n_arg in [2, 3, 4] {
        let shared = shared.clone();
        db.create_scalar_function(c"run_checkpoint", n_arg, WRITER, move |ctx| {
            sql_checkpoint(ctx, &shared)
        })?;
    }
    Ok(())
}

fn sql_heartbeat(ctx: &Context<'_>, shared: &Shared) -> Result<i64> {
    const F: &str = "run_heartbeat";
    let (id, id_text) = args::run_id(F, ctx.get_raw(0))?;
    let lease = match ctx.len() {
        2 => Some(args::lease(F, ctx.get_raw(1))?),
        _ => None,
    };
    // SAFETY: the handle is only used on this thread, during this call.
    let handle = unsafe { ctx.get_connection()?.handle() };
    let now = now_ms();
    shared
        .run_fast(
            handle,
            F,
            |conn, inst, config| heartbeat(conn, inst, config, &id, lease, now),
            |conn, inst| diagnose(conn, inst, F, &id, &id_text, lease, None),
        )
        .map_err(|e| wrap(F, e))
}

fn sql_checkpoint(ctx: &Context<'_>, shared: &Shared) -> Result<i64> {
    const F: &str = "run_checkpoint";
    let (id, id_text) = args::run_id(F, ctx.get_raw(0))?;
    let step = args::int(F, "step", ctx.get_raw(1), 0)?;
    let state = match ctx.len() {
        n if n >= 3 => args::json_state(F, ctx.get_raw(2))?,
        _ => None,
    };
    let lease = match ctx.len() {
        4 => Some(args::lease(F, ctx.get_raw(3))?),
        _ => None,
    };
    // SAFETY: the handle is only used on this thread, during this call.
    let handle = unsafe { ctx.get_connection()?.handle() };
    let now = now_ms();
    shared
        .run_fast(
            handle,
            F,
            |conn, inst, config| {
                checkpoint(conn, inst, config, &id, step, state.as_deref(), lease, now)
            },
            |conn, inst| diagnose(conn, inst, F, &id, &id_text, lease, Some(step)),
        )
        .map_err(|e| wrap(F, e))
}
