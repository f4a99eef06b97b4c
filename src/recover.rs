//! `recover_run(id, action [, threshold_ms])`: resume, fail or dismiss an
//! orphaned run, as an atomic compare-and-set.
//!
//! The row is read, the decision made in Rust ([`metadata::decide`]), and
//! written back with `UPDATE … WHERE status IS <read> AND metadata IS <read>`.
//! If anything changed the row in between (another client's recovery, a
//! heartbeat), the UPDATE changes nothing and the row is read and decided
//! again, so of two clients racing on one orphan exactly one wins and the
//! other is told the run was already recovered.

use std::sync::Arc;

use rusqlite::functions::Context;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Result};

use crate::errors::{fail, quote, show, wrap};
use crate::metadata::{decide, iso8601, parse, Action};
use crate::state::{now_ms, Installed, Shared};
use crate::{args, WRITER};

const F: &str = "recover_run";

/// Recovers run `id`; returns the outcome object (see docs/api.md).
pub fn recover(
    conn: &Connection,
    inst: &Installed,
    id: &Value,
    id_text: &str,
    action: Action,
    threshold_ms: i64,
    now: i64,
) -> Result<serde_json::Value> {
    // A concurrent heartbeat may change the row between read and write; a few
    // rounds settle it (each round re-decides from what is really there).
    for _ in 0..8 {
        let row: Option<(Option<String>, Option<String>)> = conn
            .prepare_cached(&inst.sql.read_row)
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(|e| wrap(F, e))?;
        let Some((status, meta)) = row else {
            return Err(fail(
                F,
                format!("no run with {} {}", inst.cfg.id_column, quote(id_text)),
            ));
        };
        let status_text = status.clone().unwrap_or_default();
        let m = parse(F, id_text, meta.as_deref())
            .map_err(|msg| rusqlite::Error::UserFunctionError(msg.into()))?;
        let d = decide(
            &inst.cfg,
            id_text,
            &status_text,
            &m,
            action,
            threshold_ms,
            now,
        )
        .map_err(|msg| rusqlite::Error::UserFunctionError(msg.into()))?;
        let new_meta = serde_json::Value::Object(d.metadata).to_string();
        // A write cannot wait for another writer when the calling statement
        // already holds a read snapshot: SQLite answers SQLITE_BUSY at once.
        let snapshot_held = holds_read_snapshot(conn);
        let changed = if action == Action::Fail {
            conn.prepare_cached(&inst.sql.write_failed)
                .and_then(|mut s| {
                    if inst.sql.write_failed_has_time {
                        s.execute(params![id, meta, new_meta, status, d.status, iso8601(now)])
                    } else {
                        s.execute(params![id, meta, new_meta, status, d.status])
                    }
                })
        } else {
            conn.prepare_cached(&inst.sql.write_meta)
                .and_then(|mut s| s.execute(params![id, meta, new_meta, status]))
        }
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(c, _)
                if c.code == rusqlite::ErrorCode::DatabaseBusy && snapshot_held =>
            {
                fail(
                    F,
                    format!(
                        "run {} is being changed by another client, and this statement reads from \
                         an older snapshot (it also reads a table, e.g. orphaned_runs), so it cannot \
                         write; the run was probably already recovered: call recover_run in a \
                         statement of its own to see its state",
                        quote(id_text)
                    ),
                )
            }
            e => wrap(F, e),
        })?;
        if changed > 0 {
            return Ok(d.outcome);
        }
    }
    Err(fail(
        F,
        format!(
            "run {} kept changing while it was being recovered; try again",
            quote(id_text)
        ),
    ))
}

/// Whether the connection holds a read transaction on main right now (the
/// statement calling recover_run reads a table itself).
fn holds_read_snapshot(conn: &Connection) -> bool {
    // SAFETY: sqlite3_txn_state only reads the state of the live connection
    // this call runs on; the schema name is a NUL-terminated literal.
    unsafe {
        rusqlite::ffi::sqlite3_txn_state(conn.handle(), c"main".as_ptr())
            == rusqlite::ffi::SQLITE_TXN_READ
    }
}

pub fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    for n_arg in [2, 3] {
        let shared = shared.clone();
        db.create_scalar_function(c"recover_run", n_arg, WRITER, move |ctx| {
            sql_recover(ctx, &shared)
        })?;
    }
    Ok(())
}

fn sql_recover(ctx: &Context<'_>, shared: &Shared) -> Result<String> {
    let (id, id_text) = args::run_id(F, ctx.get_raw(0))?;
    let action = match ctx.get_raw(1) {
        ValueRef::Text(t) => Action::parse(&String::from_utf8_lossy(t)),
        _ => None,
    }
    .ok_or_else(|| {
        fail(
            F,
            format!(
                "unknown action {}, expected one of {}",
                show(ctx.get_raw(1)),
                Action::NAMES
            ),
        )
    })?;
    let threshold = match ctx.len() {
        3 => Some(args::int(F, "threshold_ms", ctx.get_raw(2), 0)?),
        _ => None,
    };
    // SAFETY: the handle is only used on this thread, during this call.
    let handle = unsafe { ctx.get_connection()?.handle() };
    shared.run(handle, F, |conn, inst| {
        let threshold = threshold.unwrap_or(inst.cfg.stale_after_ms);
        recover(conn, inst, &id, &id_text, action, threshold, now_ms()).map(|v| v.to_string())
    })
}
