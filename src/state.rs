//! Per-connection state shared by every function registered on a connection:
//! the installed config (re-read from `run_recovery_settings` on every call,
//! re-parsed only when it changed) and a cache of prepared statements:
//! rusqlite's, for most statements, and the stamp UPDATEs kept as
//! [`Prepared`] statements (see [`Stmts`]), found without hashing their text.
//!
//! The prepared statements live on a non-owning [`Connection`] built from the
//! caller's handle. SQLite's `sqlite3_close` refuses to close a connection
//! that still has prepared statements, but it first disconnects every virtual
//! table, so the cache is tied to the `orphaned_runs` table: it is used only
//! while that table is connected (registration connects it), and emptied in
//! its `xDisconnect`, before SQLite checks for unfinalized statements. When
//! the cache cannot be used (the table was disconnected, or a call is nested
//! inside another), statements are prepared fresh: slower, never wrong.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use rusqlite::functions::Context;
use rusqlite::{ffi, Connection, ErrorCode, OptionalExtension};

use crate::config::Config;
use crate::errors::{self, Failure, Refusal};
use crate::sqlgen::FunctionSql;
use crate::stmt::{Bind, Prepared};

/// What a function needs to know about the installed layer.
pub(crate) struct Installed {
    pub cfg: Config,
    pub sql: FunctionSql,
    /// The schema cookie (`PRAGMA schema_version`) at which the installed
    /// objects were last found complete (-1: not yet).
    verified_schema: AtomicI64,
}

/// A function's work on the connection: its value, a refusal, or SQLite's error.
pub(crate) type Outcome<R> = std::result::Result<R, Failure>;

/// The state of one connection: made by `register` for that connection and
/// handed only to the functions and the table registered on it. That is the
/// invariant the safe methods rely on.
#[derive(Default)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// The pulses started on this connection (`run_heartbeat_every`).
    pub pulses: crate::pulse::Registry,
}

#[derive(Default)]
struct Inner {
    /// Non-owning connection holding the statement cache; `Some` only while
    /// `vtabs > 0`.
    conn: Option<Connection>,
    /// The stamp statements prepared on `conn` (see [`Stmts`]); emptied with it.
    kept: Vec<Prepared>,
    /// The config text last read and what was built from it.
    installed: Cached,
    /// How many `orphaned_runs` instances are connected.
    vtabs: usize,
}

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
            g.kept.clear();
            g.conn = None;
        }
    }

    /// Runs `f` with the connection the SQL function `ctx` belongs to and
    /// the installed config.
    pub fn run<R>(
        &self,
        ctx: &Context<'_>,
        f: impl FnOnce(&Connection, &Installed) -> Outcome<R>,
    ) -> Outcome<R> {
        // SAFETY: `ctx` is a call of a function registered on the connection
        // this state belongs to (see [`Shared`]); the handle is used on this
        // thread, during this call.
        unsafe { self.run_on(caller(ctx)?, f) }
    }

    /// [`Shared::run`] on a raw connection handle.
    ///
    /// # Safety
    /// `handle` must be the open connection this state was registered on,
    /// used on the calling thread and only for the duration of the call.
    pub unsafe fn run_on<R>(
        &self,
        handle: *mut ffi::sqlite3,
        f: impl FnOnce(&Connection, &Installed) -> Outcome<R>,
    ) -> Outcome<R> {
        // SAFETY: the caller's contract.
        unsafe {
            self.with_conn(handle, |stmts, cache| {
                let inst = load(stmts.conn, cache)?.1;
                f(stmts.conn, &inst)
            })
        }
    }

    /// The hot path of run_heartbeat / run_checkpoint. `attempt` runs one
    /// statement that itself checks the stored config is still the text it
    /// is given (so no separate read of the settings, no second transaction)
    /// and returns `Ok(None)` when it changed no row. Then the config is read
    /// afresh and `attempt` tried once more, before `explain` says why (or,
    /// when nothing is wrong, takes the slower path itself).
    ///
    /// # Safety
    /// As [`Shared::run_on`].
    pub unsafe fn run_fast_on<R>(
        &self,
        handle: *mut ffi::sqlite3,
        attempt: impl Fn(&mut Stmts<'_>, &Installed, &str) -> rusqlite::Result<Option<R>>,
        explain: impl FnOnce(&Connection, &Installed, &str) -> Outcome<R>,
    ) -> Outcome<R> {
        // Schema or JSON trouble (SQLITE_ERROR): re-read the config, then explain.
        let retry = |e: &rusqlite::Error| e.sqlite_error_code() == Some(ErrorCode::Unknown);
        let body = |stmts: &mut Stmts<'_>, cache: &mut Cached| -> Outcome<R> {
            crate::stmt::take_stale();
            if let Some((text, inst)) = cache.clone() {
                // No read of the schema here: a kept statement SQLite had to
                // prepare again (the schema changed), or one never run on a
                // schema found complete, changes nothing (see
                // crate::stmt::fresh), and `load` then looks again.
                stmts.verified = false;
                match attempt(stmts, &inst, &text) {
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    Err(e) if retry(&e) || crate::stmt::stale_seen() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // The schema may change between the look and the write (another
            // connection's migration): then look again, a few times.
            for _ in 0..STALE_TRIES {
                crate::stmt::take_stale();
                let (text, inst) = load(stmts.conn, cache)?;
                stmts.verified = true;
                let out = attempt(stmts, &inst, &text);
                let stale = crate::stmt::take_stale();
                return match out {
                    Ok(Some(r)) => Ok(r),
                    _ if stale => continue,
                    Ok(None) => explain(stmts.conn, &inst, &text),
                    Err(e) if retry(&e) => explain(stmts.conn, &inst, &text),
                    Err(e) => Err(e.into()),
                };
            }
            Err(Refusal::SchemaKeptChanging { tries: STALE_TRIES }.into())
        };
        // SAFETY: the caller's contract.
        unsafe { self.with_conn(handle, body) }
    }

    /// [`Shared::run_fast_on`] for the SQL function `ctx`.
    pub fn run_fast<R>(
        &self,
        ctx: &Context<'_>,
        attempt: impl Fn(&mut Stmts<'_>, &Installed, &str) -> rusqlite::Result<Option<R>>,
        explain: impl FnOnce(&Connection, &Installed, &str) -> Outcome<R>,
    ) -> Outcome<R> {
        // SAFETY: as in [`Shared::run`].
        unsafe { self.run_fast_on(caller(ctx)?, attempt, explain) }
    }

    /// Gives `f` a connection on `handle` and the config cache: the cached
    /// statements when they can be used, else a fresh connection object.
    ///
    /// # Safety
    /// As [`Shared::run_on`].
    unsafe fn with_conn<R>(
        &self,
        handle: *mut ffi::sqlite3,
        f: impl FnOnce(&mut Stmts<'_>, &mut Cached) -> Outcome<R>,
    ) -> Outcome<R> {
        let guard = match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        match guard {
            Some(mut g) if g.vtabs > 0 => {
                if g.conn.is_none() {
                    // SAFETY: `handle` is this state's open connection (the
                    // caller's contract); the non-owning Connection never
                    // closes it, and it is dropped in xDisconnect, before the
                    // handle is closed.
                    g.conn = Some(unsafe { Connection::from_handle(handle) }?);
                }
                let Inner {
                    conn,
                    installed,
                    kept,
                    ..
                } = &mut *g;
                let conn = conn
                    .as_ref()
                    .ok_or_else(|| Failure::Sql(errors::internal("statement cache missing")))?;
                f(
                    &mut Stmts {
                        conn,
                        kept: Some(kept),
                        verified: false,
                    },
                    installed,
                )
            }
            other => {
                drop(other);
                // SAFETY: as above; this Connection lives only for this call.
                let conn = unsafe { Connection::from_handle(handle) }?;
                let mut fresh = None;
                let out = f(
                    &mut Stmts {
                        conn: &conn,
                        kept: None,
                        verified: false,
                    },
                    &mut fresh,
                );
                conn.flush_prepared_statement_cache();
                out
            }
        }
    }
}

/// How many times a stamp looks at the installed objects again when the
/// schema changed between the look and the write.
const STALE_TRIES: u32 = 3;

/// The config text last read, and what was built from it.
type Cached = Option<(Arc<str>, Arc<Installed>)>;

/// At most this many stamp statements are kept (the heartbeat's two, see
/// `heartbeat::attempt`, and the checkpoint's, of the config installed and
/// of one before it).
const KEPT_MAX: usize = 6;

/// The connection a stamp runs on, with the statements kept on it: `kept`
/// is `None` when they cannot be kept (see the module's documentation), and
/// statements are then prepared through rusqlite, as every other one is.
pub(crate) struct Stmts<'a> {
    conn: &'a Connection,
    kept: Option<&'a mut Vec<Prepared>>,
    /// Whether the installed objects were found complete in this call,
    /// at the schema the statements now run on (see [`load`]).
    verified: bool,
}

impl Stmts<'_> {
    /// Runs `sql`, which returns no rows, with `binds` as ?1, ?2, …: the
    /// number of rows it changed.
    pub fn execute(&mut self, sql: &Arc<str>, binds: &[Bind<'_>]) -> rusqlite::Result<usize> {
        let Some(kept) = self.kept.as_deref_mut() else {
            return self
                .conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(binds));
        };
        // SAFETY: `conn` wraps this state's open connection on the calling
        // thread (see `with_conn`); the kept statements are finalized in
        // xDisconnect, before it closes.
        let db = unsafe { self.conn.handle() };
        let at = match kept.iter().position(|p| p.is(sql)) {
            Some(at) => at,
            None => {
                if kept.len() >= KEPT_MAX {
                    kept.remove(0);
                }
                // SAFETY: as above.
                kept.push(unsafe { Prepared::new(db, sql.clone())? });
                kept.len() - 1
            }
        };
        // Run on a schema `load` found complete in this call, the statement
        // is trusted at its current reprepare count; otherwise it changes
        // nothing unless it was trusted before at the count it has now.
        // SAFETY: as above; the statement was prepared on `db`.
        unsafe { kept[at].execute_fenced(db, binds, self.verified) }
    }
}

/// The connection a SQL function was called on.
fn caller(ctx: &Context<'_>) -> Outcome<*mut ffi::sqlite3> {
    // SAFETY: the connection of a running function call: open for the call.
    Ok(unsafe { ctx.get_connection()?.handle() })
}

const CONFIG_SQL: &str = "SELECT value FROM main.run_recovery_settings WHERE key = 'config'";

/// The config text stored by install: the one reader, with one error policy.
/// No settings table (the statement fails with SQLITE_ERROR, "no such
/// table", when prepared or, cached, when run) or no config row:
/// [`Refusal::NotInstalled`]. Anything else, a locked database included, is
/// SQLite's error as it is (the caller's busy_timeout applies).
pub(crate) fn stored_config_text(conn: &Connection) -> Outcome<String> {
    let read = conn
        .prepare_cached(CONFIG_SQL)
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional());
    match read {
        Ok(Some(text)) => Ok(text),
        Ok(None) => Err(Refusal::NotInstalled.into()),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::Unknown) => {
            Err(Refusal::NotInstalled.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The stored config, parsed (see [`stored_config_text`]).
pub(crate) fn stored_config(conn: &Connection) -> Outcome<Config> {
    let text = stored_config_text(conn)?;
    Config::from_stored(&text).map_err(|p| Refusal::StoredConfigUnreadable(p).into())
}

/// Reads the stored config, reusing what was built from it when unchanged.
fn load(conn: &Connection, cache: &mut Cached) -> Outcome<(Arc<str>, Arc<Installed>)> {
    let text = stored_config_text(conn)?;
    if let Some((seen, inst)) = cache {
        if **seen == *text {
            // One read of the schema cookie; the objects are looked at
            // again only when it changed.
            verify(conn, inst, schema_cookie(conn)?)?;
            return Ok((seen.clone(), inst.clone()));
        }
    }
    let cfg = Config::from_stored(&text).map_err(Refusal::StoredConfigUnreadable)?;
    let inst = Arc::new(Installed {
        sql: FunctionSql::new(&cfg),
        cfg,
        verified_schema: AtomicI64::new(-1),
    });
    verify(conn, &inst, schema_cookie(conn)?)?;
    let text: Arc<str> = text.into();
    *cache = Some((text.clone(), inst.clone()));
    Ok((text, inst))
}

/// Checks that what install made is still there, as install made it: every
/// trigger on the configured table, every view, and the configured columns.
/// A table rebuilt by a migration (its triggers dropped with it), a trigger
/// dropped by hand or a renamed column leave the fence out of force: every
/// function refuses then, saying what changed, until install runs again.
/// Done once per schema change (`cookie`, the schema cookie, is kept).
fn verify(conn: &Connection, inst: &Installed, cookie: i64) -> Outcome<()> {
    if inst.verified_schema.load(Ordering::Relaxed) == cookie {
        return Ok(());
    }
    let cfg = &inst.cfg;
    let mut missing: Vec<String> = Vec::new();
    {
        let mut st =
            conn.prepare_cached("SELECT type, tbl_name FROM main.sqlite_schema WHERE name = ?1")?;
        for (t, on) in crate::sqlgen::installed_triggers() {
            let row: Option<(String, String)> = st
                .query_row([&t], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let on = on.unwrap_or(&cfg.table);
            match row {
                Some((ty, tbl)) if ty == "trigger" && tbl.eq_ignore_ascii_case(on) => {}
                _ => missing.push(format!("trigger {t}")),
            }
        }
        for v in crate::sqlgen::VIEWS {
            let row: Option<(String, String)> = st
                .query_row([v], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if !matches!(row, Some((ty, _)) if ty == "view") {
                missing.push(format!("view {v}"));
            }
        }
    }
    let columns: Vec<String> = conn
        .prepare_cached("SELECT name FROM pragma_table_info(?1, 'main')")?
        .query_map([&cfg.table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut gone: Vec<(&'static str, String)> = Vec::new();
    let wanted = [
        ("id_column", Some(&cfg.id_column)),
        ("status_column", Some(&cfg.status_column)),
        ("metadata_column", Some(&cfg.metadata_column)),
        ("name_column", cfg.name_column.as_ref()),
        ("end_time_column", cfg.end_time_column.as_ref()),
        ("updated_at_column", cfg.updated_at_column.as_ref()),
    ];
    for (key, col) in wanted {
        if let Some(col) = col {
            if !columns.iter().any(|c| c.eq_ignore_ascii_case(col)) {
                gone.push((key, col.clone()));
            }
        }
    }
    if missing.is_empty() && gone.is_empty() {
        inst.verified_schema.store(cookie, Ordering::Relaxed);
        return Ok(());
    }
    Err(Refusal::InstallChanged {
        table: cfg.table.clone(),
        table_exists: !columns.is_empty(),
        missing,
        columns_gone: gone,
    }
    .into())
}

const COOKIE_SQL: &str = "PRAGMA main.schema_version";

/// The schema cookie of `main`, through rusqlite's statement cache.
fn schema_cookie(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(COOKIE_SQL)?.query_row([], |r| r.get(0))
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
