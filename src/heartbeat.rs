//! `run_heartbeat(id [, lease])` and `run_checkpoint(id, step [, state [, lease]])`.
//!
//! The fast path is one UPDATE whose WHERE clause holds every precondition
//! (the install is unchanged, the run exists and is live, its metadata is an
//! object or NULL, the lease matches, the checkpoint does not go backwards,
//! the stored heartbeat is not ahead of the clock). Only when it changes no
//! row does [`check`] read the row to say which precondition failed; a
//! heartbeat ahead of the clock (another host's) is then kept by the
//! `_forward` statements, so a heartbeat never moves backwards.

use std::sync::Arc;

use rusqlite::functions::Context;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Result};

use crate::errors::{fail, quote, wrap};
use crate::metadata::{parse, State};
use crate::state::{now_ms, Installed, Shared};
use crate::{args, WRITER};

/// Stamps `lastHeartbeat` = `now`; `Some(now)`, or `None` when the statement
/// changed no row. `config` is the stored config text `inst` was built from.
pub fn heartbeat(
    conn: &Connection,
    inst: &Installed,
    config: &str,
    id: &Value,
    lease: Option<i64>,
    now: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(&inst.sql.heartbeat)?;
    let changed = stmt.execute(params![id, now, lease, config])?;
    Ok((changed > 0).then_some(now))
}

/// Records checkpoint `step` with `state` (JSON text or NULL) and a heartbeat
/// in one statement; as [`heartbeat`].
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
    let changed = stmt.execute(params![id, now, lease, config, step, state])?;
    Ok((changed > 0).then_some(now))
}

/// A stamp request, for the slow path.
struct Stamp<'a> {
    func: &'static str,
    id: &'a Value,
    id_text: &'a str,
    lease: Option<i64>,
    checkpoint: Option<(i64, Option<&'a str>)>,
    now: i64,
}

/// When the fast statement changed nothing: says why, or, when nothing is
/// wrong but the stored heartbeat is ahead of the clock, writes with that
/// heartbeat kept and returns it.
fn slow_path(conn: &Connection, inst: &Installed, config: &str, s: &Stamp<'_>) -> Result<i64> {
    let step = s.checkpoint.map(|c| c.0);
    if let Some(e) = check(conn, inst, s.func, s.id, s.id_text, s.lease, step) {
        return Err(e);
    }
    let out = match s.checkpoint {
        None => conn
            .prepare_cached(&inst.sql.heartbeat_forward)?
            .query_row(params![s.id, s.now, s.lease, config], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?,
        Some((step, state)) => conn
            .prepare_cached(&inst.sql.checkpoint_forward)?
            .query_row(params![s.id, s.now, s.lease, config, step, state], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?,
    };
    out.ok_or_else(|| diagnose(conn, inst, s.func, s.id, s.id_text, s.lease, step))
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
    check(conn, inst, func, id, id_text, lease, step).unwrap_or_else(|| {
        fail(
            func,
            format!(
                "run {} changed while it was being stamped; try again",
                quote(id_text)
            ),
        )
    })
}

/// The first precondition of a stamp that the row fails, if any.
fn check(
    conn: &Connection,
    inst: &Installed,
    func: &str,
    id: &Value,
    id_text: &str,
    lease: Option<i64>,
    step: Option<i64>,
) -> Option<rusqlite::Error> {
    let row: Option<(Option<String>, Option<String>)> = match conn
        .prepare_cached(&inst.sql.read_row)
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
    {
        Ok(row) => row,
        Err(e) => return Some(wrap(func, e)),
    };
    let Some((status, meta)) = row else {
        return Some(fail(
            func,
            format!("no run with {} {}", inst.cfg.id_column, quote(id_text)),
        ));
    };
    let status = status.unwrap_or_default();
    if !inst.cfg.is_live(&status) {
        return Some(fail(
            func,
            format!(
                "run {} is not live, found status {}; only a run in {} has an executor to stamp it",
                quote(id_text),
                quote(&status),
                inst.cfg.live_statuses.join(", ")
            ),
        ));
    }
    let m = match parse(func, id_text, meta.as_deref()) {
        Ok(m) => m,
        Err(msg) => return Some(rusqlite::Error::UserFunctionError(msg.into())),
    };
    let st = State::of(&m);
    if let Some(l) = lease {
        if l != st.lease {
            return Some(fail(
                func,
                format!(
                    "stale lease {l} for run {}, found lease {}: the run was recovered by another client, \
                     this executor must stop",
                    quote(id_text),
                    st.lease
                ),
            ));
        }
    }
    if let (Some(step), Some(current)) = (step, st.checkpoint_step) {
        if step < current {
            return Some(fail(
                func,
                format!(
                    "step {step} of run {} is behind its committed checkpoint, found checkpointStep {current}",
                    quote(id_text)
                ),
            ));
        }
    }
    None
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
    let stamp = Stamp {
        func: F,
        id: &id,
        id_text: &id_text,
        lease,
        checkpoint: None,
        now: now_ms(),
    };
    // SAFETY: the handle is only used on this thread, during this call.
    let handle = unsafe { ctx.get_connection()?.handle() };
    shared
        .run_fast(
            handle,
            F,
            |conn, inst, config| heartbeat(conn, inst, config, &id, lease, stamp.now),
            |conn, inst, config| slow_path(conn, inst, config, &stamp),
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
    let stamp = Stamp {
        func: F,
        id: &id,
        id_text: &id_text,
        lease,
        checkpoint: Some((step, state.as_deref())),
        now: now_ms(),
    };
    // SAFETY: the handle is only used on this thread, during this call.
    let handle = unsafe { ctx.get_connection()?.handle() };
    shared
        .run_fast(
            handle,
            F,
            |conn, inst, config| {
                checkpoint(
                    conn,
                    inst,
                    config,
                    &id,
                    step,
                    state.as_deref(),
                    lease,
                    stamp.now,
                )
            },
            |conn, inst, config| slow_path(conn, inst, config, &stamp),
        )
        .map_err(|e| wrap(F, e))
}
