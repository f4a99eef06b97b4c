//! run_recovery: session recovery for lab protocol runs, as a SQLite extension.
//!
//! This file only wires the families of functions together; see
//! ARCHITECTURE.md for the layers and where the state lives.
//!
//! Static use (an app that links SQLite itself):
//! ```
//! let conn = rusqlite::Connection::open_in_memory().unwrap();
//! run_recovery::register(&conn).unwrap();
//! let v: String = conn.query_row("SELECT run_recovery_version()", [], |r| r.get(0)).unwrap();
//! assert!(v.starts_with('v'));
//! ```

use std::sync::Arc;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, Result};

mod args;
mod beat;
pub mod config;
pub mod errors;
mod heartbeat;
pub mod install;
mod jsontext;
mod metadata;
mod orphan_rows;
mod orphans;
mod pulse;
mod recover;
pub mod sqlgen;
mod state;
mod stmt;
pub use metadata::Action;
pub use state::now_ms;

/// Flags of functions that write: never callable from a view or trigger of
/// an untrusted database file.
pub(crate) const WRITER: FunctionFlags =
    FunctionFlags::SQLITE_UTF8.union(FunctionFlags::SQLITE_DIRECTONLY);
/// Flags of functions that only read.
pub(crate) const READER: FunctionFlags =
    FunctionFlags::SQLITE_UTF8.union(FunctionFlags::SQLITE_INNOCUOUS);

/// Every SQL function and module run_recovery registers.
pub const FUNCTIONS: [&str; 13] = [
    "recover_run",
    "run_checkpoint",
    "run_heartbeat",
    "run_heartbeat_every",
    "run_heartbeat_stop",
    "run_recovery_config",
    "run_recovery_debug",
    "run_recovery_heartbeat_text",
    "run_recovery_install",
    "run_recovery_schema_fresh",
    "run_recovery_uninstall",
    "run_recovery_version",
    "orphaned_runs",
];

/// Registers every function and the `orphaned_runs` table on `db`.
pub fn register(db: &Connection) -> Result<()> {
    register_state(db).map(|_| ())
}

/// The state of every connection run_recovery is registered on, by its
/// handle: registered again (the library loaded a second time), a
/// connection keeps its state, so its running pulses and caches. An entry
/// dies with its connection (SQLite drops the functions holding the state
/// when it closes), so a handle reused by a later connection finds none.
static STATES: std::sync::Mutex<Vec<(usize, std::sync::Weak<state::Shared>)>> =
    std::sync::Mutex::new(Vec::new());

/// The state of `db`: the one it has, else a new one.
fn state_of(db: &Connection) -> Arc<state::Shared> {
    // SAFETY: the handle is only read as a number, the key of `db`'s state.
    let key = unsafe { db.handle() } as usize;
    let mut all = STATES.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(_, s)| s.strong_count() > 0);
    if let Some(s) = all
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, s)| s.upgrade())
    {
        return s;
    }
    let s = Arc::new(state::Shared::default());
    all.push((key, Arc::downgrade(&s)));
    s
}

/// [`register`], returning the connection's state (the pulse keeps its own).
fn register_state(db: &Connection) -> Result<Arc<state::Shared>> {
    let shared = state_of(db);
    install::register(db, &shared)?;
    heartbeat::register(db, &shared)?;
    recover::register(db, &shared)?;
    orphans::register(db, &shared)?;
    pulse::register(db, &shared)?;
    // The schema may have been read before these functions existed (an app
    // that ran a PRAGMA, then loaded us): CHECK constraints and generated
    // columns resolved then would call the writers without the DIRECTONLY
    // check. Have SQLite read the schema again, now that they exist.
    db.execute_batch("PRAGMA writable_schema = RESET")?;
    // Connect the eponymous table now: the statement cache is tied to it
    // (see state.rs), and SQLite disconnects it before closing.
    db.prepare("SELECT 1 FROM orphaned_runs WHERE 0")?;
    Ok(shared)
}

/// Takes away from `db` every function and the table [`register`] may have
/// registered (each arity; one never registered is left as it is).
#[cfg(feature = "loadable")]
fn unregister(db: &Connection) {
    for name in FUNCTIONS.iter().filter(|n| **n != "orphaned_runs") {
        let Ok(name) = std::ffi::CString::new(*name) else {
            continue;
        };
        for n_arg in -1..=6 {
            let _ = db.remove_function(name.as_c_str(), n_arg);
        }
    }
    // SAFETY: `db` is the open connection being loaded into; a NULL module
    // drops the module of that name (disconnecting its eponymous table
    // while this library is still loaded).
    unsafe {
        rusqlite::ffi::sqlite3_create_module_v2(
            db.handle(),
            c"orphaned_runs".as_ptr(),
            std::ptr::null(),
            std::ptr::null_mut(),
            None,
        );
    }
}

/// Entry point for `sqlite3_load_extension` (`.load ./dist/run_recovery`).
///
/// # Safety
/// Called by SQLite with a valid connection and API table.
#[cfg(feature = "loadable")]
#[no_mangle]
pub unsafe extern "C" fn sqlite3_runrecovery_init(
    db: *mut rusqlite::ffi::sqlite3,
    pz_err_msg: *mut *mut std::os::raw::c_char,
    p_api: *mut rusqlite::ffi::sqlite3_api_routines,
) -> std::os::raw::c_int {
    // SAFETY: arguments come straight from SQLite's loader.
    unsafe { Connection::extension_init2(db, pz_err_msg, p_api, extension_init) }
}

#[cfg(feature = "loadable")]
fn extension_init(db: Connection) -> Result<bool> {
    // A failed load is unloaded by SQLite (dlclose): nothing of this library
    // may stay registered on the connection then, or its next call (or its
    // close) would run code that is gone.
    if let Err(e) = register(&db) {
        unregister(&db);
        return Err(e);
    }
    // SQLITE_OK_LOAD_PERMANENTLY: the library stays mapped after the
    // connection that loaded it closes, so no background thread can ever
    // run code of an unloaded library.
    Ok(true)
}
