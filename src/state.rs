//! Per-connection state shared by every function registered on a connection:
//! the installed config (re-read from `run_recovery_settings` on every call,
//! re-parsed only when it changed) and a cache of prepared statements.
//!
//! The prepared statements live on a non-owning [`Connection`] built from the
//! caller's handle. SQLite's `sqlite3_close` refuses to close a connection
//! that still has prepared statements, but it first disconnects every virtual
//! table, so the cache is tied to the `orphaned_runs` table: it is used only
//! while that table is connected (registration connects it), and emptied in
//! its `xDisconnect`, before SQLite checks for unfinalized statements. When
//! the cache cannot be used (the table was disconnected, or a call is nested
//! inside another), statements are prepared fresh: slower, never wrong.

use std::sync::{Mutex, MutexGuard, TryLockError};

use rusqlite::{ffi, Connection, OptionalExtension, Result};

use crate::config::Config;
use crate::errors;
use crate::sqlgen::FunctionSql;

/// What a function needs to know about the installed layer.
pub struct Installed {
    pub cfg: Config,
    pub sql: FunctionSql,
}

#[derive(Default)]
pub struct Shared {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Non-owning connection holding the statement cache; `Some` only while
    /// `vtabs > 0`.
    conn: Option<Connection>,
    /// The config text last read and what was built from it.
    installed: Option<(String, std::sync::Arc<Installed>)>,
    /// How many `orphaned_runs` instances are connected.
    vtabs: usize,
}

const CONFIG_SQL: &str = "SELECT value FROM run_recovery_settings WHERE key = 'config'";

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether calls on this connection currently use the statement cache.
    pub fn cache_in_use(&self) -> bool {
        self.lock().vtabs > 0
    }

    pub fn vtab_connected(&self) {
        self.lock().vtabs += 1;
    }

    /// Called from `xDisconnect`: finalizes the cached statements once no
    /// `orphaned_runs` instance is left, so the connection can close.
    pub fn vtab_disconnected(&self) {
        let mut g = self.lock();
        g.vtabs = g.vtabs.saturating_sub(1);
        if g.vtabs == 0 {
            g.conn = None;
        }
    }

    /// Runs `f` with a connection on `handle` and the installed config.
    /// `func` names the SQL function in errors ("not installed" included).
    pub fn run<R>(
        &self,
        handle: *mut ffi::sqlite3,
        func: &str,
        f: impl FnOnce(&Connection, &Installed) -> Result<R>,
    ) -> Result<R> {
        self.with_conn(handle, |conn, cache| {
            let (_, inst) = load(conn, cache, func)?;
            f(conn, &inst)
        })
    }

    /// The hot path of run_heartbeat / run_checkpoint. `attempt` runs one
    /// statement that itself checks the stored config is still the text it
    /// is given (so no separate read of the settings, no second transaction)
    /// and returns `Ok(None)` when it changed no row. Then the config is read
    /// afresh and `attempt` tried once more, before `explain` says why (or,
    /// when nothing is wrong, takes the slower path itself).
    pub fn run_fast<R>(
        &self,
        handle: *mut ffi::sqlite3,
        func: &str,
        attempt: impl Fn(&Connection, &Installed, &str) -> Result<Option<R>>,
        explain: impl FnOnce(&Connection, &Installed, &str) -> Result<R>,
    ) -> Result<R> {
        self.with_conn(handle, |conn, cache| {
            if let Some((text, inst)) = cache.clone() {
                match attempt(conn, &inst, &text) {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    // Schema or JSON trouble: re-read the config, then explain.
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::Unknown => {}
                    Err(e) => return Err(e),
                }
            }
            let (text, inst) = load(conn, cache, func)?;
            match attempt(conn, &inst, &text) {
                Ok(Some(r)) => Ok(r),
                Ok(None) => explain(conn, &inst, &text),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::Unknown =>
                {
                    explain(conn, &inst, &text)
                }
                Err(e) => Err(e),
            }
        })
    }

    /// Gives `f` a connection on `handle` and the config cache: the cached
    /// statements when they can be used, else a fresh connection object.
    fn with_conn<R>(
        &self,
        handle: *mut ffi::sqlite3,
        f: impl FnOnce(&Connection, &mut Cached) -> Result<R>,
    ) -> Result<R> {
        let guard = match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        match guard {
            Some(mut g) if g.vtabs > 0 => {
                if g.conn.is_none() {
                    // SAFETY: `handle` is the live connection this function was
                    // called on; the non-owning Connection never closes it, and
                    // it is dropped in xDisconnect, before the handle is closed.
                    g.conn = Some(unsafe { Connection::from_handle(handle) }?);
                }
                let Inner {
                    conn, installed, ..
                } = &mut *g;
                let conn = conn
                    .as_ref()
                    .ok_or_else(|| errors::internal("statement cache missing"))?;
                f(conn, installed)
            }
            other => {
                drop(other);
                // SAFETY: as above; this Connection lives only for this call.
                let conn = unsafe { Connection::from_handle(handle) }?;
                let mut fresh = None;
                let out = f(&conn, &mut fresh);
                conn.flush_prepared_statement_cache();
                out
            }
        }
    }
}

type Cached = Option<(String, std::sync::Arc<Installed>)>;

/// Reads the stored config, reusing what was built from it when unchanged.
fn load(
    conn: &Connection,
    cache: &mut Cached,
    func: &str,
) -> Result<(String, std::sync::Arc<Installed>)> {
    let text: Option<String> = conn
        .prepare_cached(CONFIG_SQL)
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(|e| match e.sqlite_error_code() {
            // Locked out, not missing: say so (the caller's busy_timeout applies).
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                errors::wrap(func, e)
            }
            _ => errors::not_installed(func),
        })?;
    let Some(text) = text else {
        return Err(errors::not_installed(func));
    };
    if let Some((seen, inst)) = cache {
        if *seen == text {
            return Ok((text, inst.clone()));
        }
    }
    let cfg = Config::from_stored(&text)
        .map_err(|e| errors::internal(format!("stored config is unreadable ({e})")))?;
    let inst = std::sync::Arc::new(Installed {
        sql: FunctionSql::new(&cfg),
        cfg,
    });
    *cache = Some((text.clone(), inst.clone()));
    Ok((text, inst))
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
