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
//!   database (refused for in-memory and temporary databases), through the
//!   caller's VFS and with its URI parameters, with the
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
    let pulse_conn = open_like(&conn, &path)?;
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

/// A second connection to `path` as the caller opened its main database:
/// through the same VFS (a VFS with its own locking, encryption or
/// compression must see the pulse's writes as its own), with the same URI
/// parameters (all but `vfs`, which is passed by name).
fn open_like(conn: &Connection, path: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // SAFETY: `conn` is the caller's open connection, on this thread.
    let (vfs, params) = unsafe { vfs_and_params(conn.handle()) };
    let target = if params.is_empty() {
        path.to_string()
    } else {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", uri_escape(k), uri_escape(v)))
            .collect();
        format!("file:{}?{}", uri_escape(path), query.join("&"))
    };
    match vfs {
        Some(name) => Connection::open_with_flags_and_vfs(&target, flags, name.as_str()),
        None => Connection::open_with_flags(&target, flags),
    }
}

/// The name of the VFS behind `db`'s main database, and its URI parameters
/// (without `vfs`), in order.
///
/// # Safety
/// `db` is an open connection, used on this thread.
unsafe fn vfs_and_params(
    db: *mut rusqlite::ffi::sqlite3,
) -> (Option<String>, Vec<(String, String)>) {
    use rusqlite::ffi;
    use std::ffi::{c_void, CStr};
    let main = c"main";
    let mut vfs: *mut ffi::sqlite3_vfs = std::ptr::null_mut();
    // SAFETY: SQLITE_FCNTL_VFS_POINTER writes the main database's VFS
    // pointer into `vfs`; the VFS stays registered while `db` uses it, and
    // its zName is a NUL-terminated name, copied here.
    let name = unsafe {
        let rc = ffi::sqlite3_file_control(
            db,
            main.as_ptr(),
            ffi::SQLITE_FCNTL_VFS_POINTER,
            (&mut vfs as *mut *mut ffi::sqlite3_vfs).cast::<c_void>(),
        );
        if rc == ffi::SQLITE_OK && !vfs.is_null() && !(*vfs).zName.is_null() {
            Some(CStr::from_ptr((*vfs).zName).to_string_lossy().into_owned())
        } else {
            None
        }
    };
    let mut params = Vec::new();
    // SAFETY: sqlite3_db_filename's answer is valid while `db` is open, and
    // is what sqlite3_uri_key / sqlite3_uri_parameter take; each key and
    // value is a NUL-terminated text owned by SQLite, copied here.
    unsafe {
        let file = ffi::sqlite3_db_filename(db, main.as_ptr());
        if !file.is_null() {
            for i in 0.. {
                let key = ffi::sqlite3_uri_key(file, i);
                if key.is_null() {
                    break;
                }
                let value = ffi::sqlite3_uri_parameter(file, key);
                let key = CStr::from_ptr(key).to_string_lossy().into_owned();
                if key == "vfs" {
                    continue;
                }
                let value = if value.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(value).to_string_lossy().into_owned()
                };
                params.push((key, value));
            }
        }
    }
    (name, params)
}

/// `text` with every byte but letters, digits, `-._~/` as `%XX` (a URI
/// filename's path or parameter).
fn uri_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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
