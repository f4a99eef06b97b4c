//! `run_heartbeat_every(id, interval_ms [, lease])` and `run_heartbeat_stop(id)`:
//! a background pulse that stamps a run's heartbeat from its own thread, on
//! its own connection to the same database file.
//!
//! Lifecycle of one pulse:
//! - The call checks its arguments, stamps a first heartbeat on the caller's
//!   connection (so every refusal — no such run, not live, stale lease — is
//!   the call's error), and captures the lease the run holds (or checks the
//!   one given). Every later stamp is fenced with that lease.
//! - It opens a second connection to the file named by the caller's main
//!   database (refused for in-memory and temporary databases), with the
//!   caller's busy_timeout (or one interval when the caller has none), and
//!   starts a thread that stamps once per interval.
//! - SQLITE_BUSY/SQLITE_LOCKED after the busy timeout is never a lost
//!   heartbeat: the thread retries shortly after. The pulse stops by itself
//!   at the first refusal of a stamp: the run is gone, no longer live, holds
//!   another lease (resumed or failed elsewhere), its metadata cannot be
//!   stamped, or run_recovery was uninstalled.
//! - `run_heartbeat_stop(id)`, a new `run_heartbeat_every` on the same run,
//!   and closing the connection that started it all *signal* the thread; none
//!   of them waits for it, so closing a connection never hangs. A stamp
//!   already in flight may still land; no new one starts. Threads die with
//!   the process, so a killed executor's run goes stale.
//! - The loadable library is loaded permanently (SQLITE_OK_LOAD_PERMANENTLY,
//!   see lib.rs), so a pulse thread never runs code of an unloaded library.

//!
//! Files: this one registers the functions and starts a pulse;
//! `control.rs` holds the control block and the registry;
//! `thread.rs` the thread's loop. `run_recovery_debug()` shows the pulses
//! of the connection (attempts, stamps, busy retries, why one finished).

mod control;
mod thread;

use std::sync::Arc;
use std::time::Duration;

use rusqlite::functions::Context;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Result};

use control::Ctl;
pub(crate) use control::Registry;
use thread::Pulse;

use crate::errors::Refusal;
use crate::heartbeat::{self, Stamp};
use crate::metadata::{parse, State};
use crate::state::{now_ms, Outcome, Shared};
use crate::{args, WRITER};

/// The shortest interval accepted, in milliseconds.
pub const MIN_INTERVAL_MS: i64 = 10;

const EVERY: &str = "run_heartbeat_every";
const STOP: &str = "run_heartbeat_stop";

pub(crate) fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    for n_arg in [2, 3] {
        let shared = shared.clone();
        db.create_scalar_function(c"run_heartbeat_every", n_arg, WRITER, move |ctx| {
            sql_every(ctx, &shared)
        })?;
    }
    let shared = shared.clone();
    db.create_scalar_function(c"run_heartbeat_stop", 1, WRITER, move |ctx| {
        let (_, id_text) = args::run_id(STOP, ctx.get_raw(0))?;
        Ok(shared.pulses.stop(&id_text) as i64)
    })?;
    Ok(())
}

/// A pulse asked for.
struct Request {
    id: Value,
    id_text: String,
    interval_ms: i64,
    lease: Option<i64>,
}

fn sql_every(ctx: &Context<'_>, shared: &Shared) -> Result<i64> {
    let (id, id_text) = args::run_id(EVERY, ctx.get_raw(0))?;
    let interval_ms = args::int(EVERY, "interval_ms", ctx.get_raw(1), MIN_INTERVAL_MS)?;
    let lease = match ctx.len() {
        3 => Some(args::lease(EVERY, ctx.get_raw(2))?),
        _ => None,
    };
    let req = Request {
        id,
        id_text,
        interval_ms,
        lease,
    };
    start(ctx, shared, &req).map_err(|f| f.into_sql(EVERY, &req.id_text))
}

/// Starts (or replaces) the pulse of run `req.id` on the caller's main
/// database file; returns the lease every stamp is fenced with.
fn start(ctx: &Context<'_>, shared: &Shared, req: &Request) -> Outcome<i64> {
    // SAFETY: the connection is the caller's, used on this thread during this call.
    let conn = unsafe { ctx.get_connection() }?;
    let path = database_file(&conn)?;
    let caller_busy: i64 = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
    let stale_after_ms = shared.run(ctx, |_, inst| Ok(inst.cfg.stale_after_ms))?;
    if req.interval_ms >= stale_after_ms {
        return Err(Refusal::IntervalTooLong {
            interval_ms: req.interval_ms,
            stale_after_ms,
        }
        .into());
    }
    // The first stamp, on the caller's connection: every refusal (no such
    // run, not live, stale lease) is the call's error.
    let first = Stamp {
        id: &req.id,
        lease: req.lease,
        checkpoint: None,
        now: now_ms(),
    };
    heartbeat::stamp(shared, ctx, &first)?;
    let lease = match req.lease {
        Some(l) => l,
        None => shared.run(ctx, |conn, inst| {
            let meta: Option<String> = conn
                .prepare_cached(&inst.sql.read_row)?
                .query_row([&req.id], |r| r.get(1))?;
            Ok(State::of(&parse(meta.as_deref())?).lease)
        })?,
    };
    let pulse_conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let pulse_shared = crate::register_state(&pulse_conn)?;
    let busy_ms = if caller_busy > 0 {
        caller_busy
    } else {
        req.interval_ms
    };
    // SQLite's own busy handler sleeps up to 100 ms between tries, so a
    // writer that commits and begins again within a few milliseconds starves
    // it; the pulse's handler tries every millisecond instead, for as long as
    // the busy timeout.
    pulse_conn.busy_handler(Some(thread::busy_handler))?;
    let ctl = Arc::new(Ctl::default());
    let pulse = Pulse {
        conn: pulse_conn,
        shared: pulse_shared,
        busy_ms: i32::try_from(busy_ms).unwrap_or(i32::MAX),
        id: req.id.clone(),
        id_text: req.id_text.clone(),
        lease,
        interval: Duration::from_millis(req.interval_ms.unsigned_abs()),
        ctl: ctl.clone(),
    };
    std::thread::Builder::new()
        .name(format!("run_recovery pulse {}", req.id_text))
        .spawn(move || pulse.run())
        .map_err(|e| Refusal::NoThread { why: e.to_string() })?;
    shared.pulses.insert(req.id_text.clone(), ctl);
    Ok(lease)
}

/// The file behind `conn`'s main database, or the refusal for in-memory and
/// temporary databases (a second connection could not see them).
fn database_file(conn: &Connection) -> std::result::Result<String, Refusal> {
    match conn.path() {
        Some(p) if !p.is_empty() && std::path::Path::new(p).exists() => Ok(p.to_string()),
        Some(p) if !p.is_empty() => Err(Refusal::NeedsFile {
            found: Some(p.to_string()),
        }),
        _ => Err(Refusal::NeedsFile { found: None }),
    }
}
