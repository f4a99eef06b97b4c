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
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Result};

use crate::errors::{fail, show, Failure, Refusal};
use crate::metadata::{decide, iso8601, parse, Action, Request, Run};
use crate::state::{now_ms, Installed, Outcome, Shared};
use crate::{args, WRITER};

const F: &str = "recover_run";

/// Recovers run `id` as `req` asks; returns the outcome object (see docs/api.md).
fn recover(
    conn: &Connection,
    inst: &Installed,
    id: &Value,
    id_text: &str,
    req: Request,
) -> Outcome<crate::metadata::Object> {
    // A concurrent heartbeat may change the row between read and write; a few
    // rounds settle it (each round re-decides from what is really there).
    for _ in 0..8 {
        let row: Option<(Option<String>, Option<String>)> = conn
            .prepare_cached(&inst.sql.read_row)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((status, meta)) = row else {
            return Err(Refusal::NoSuchRun {
                id_column: inst.cfg.id_column.clone(),
            }
            .into());
        };
        let status_text = status.clone().unwrap_or_default();
        let m = parse(meta.as_deref())?;
        let run = Run {
            id: id_text,
            status: &status_text,
            metadata: &m,
        };
        let d = decide(&inst.cfg, run, req)?;
        let new_meta = d.metadata.to_text();
        // A write cannot wait for another writer when the calling statement
        // already holds a read snapshot: SQLite answers SQLITE_BUSY at once.
        let snapshot_held = holds_read_snapshot(conn);
        let changed = if req.action == Action::Fail {
            let mut s = conn.prepare_cached(&inst.sql.write_failed)?;
            if inst.sql.write_failed_has_time {
                s.execute(params![
                    id,
                    meta,
                    new_meta,
                    status,
                    d.status,
                    iso8601(req.now)
                ])
            } else {
                s.execute(params![id, meta, new_meta, status, d.status])
            }
        } else {
            conn.prepare_cached(&inst.sql.write_meta)
                .and_then(|mut s| s.execute(params![id, meta, new_meta, status]))
        }
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy) if snapshot_held => Refusal::BusyInSnapshot.into(),
            _ => Failure::Sql(e),
        })?;
        if changed > 0 {
            return Ok(d.outcome);
        }
    }
    Err(Refusal::KeptChanging.into())
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

pub(crate) fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
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
    shared
        .run(ctx, |conn, inst| {
            let req = Request {
                action,
                threshold_ms: threshold.unwrap_or(inst.cfg.stale_after_ms),
                now: now_ms(),
            };
            recover(conn, inst, &id, &id_text, req).map(|v| v.to_text())
        })
        .map_err(|f| f.into_sql(F, &id_text))
}
