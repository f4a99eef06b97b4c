//! Statements the extension prepares and keeps itself, through SQLite's C
//! API: the SELECTs `orphaned_runs` steps row by row, and the stamp UPDATEs
//! of `run_heartbeat` / `run_checkpoint`.
//!
//! rusqlite's statement cache finds a statement by its SQL text, hashing the
//! text on every lookup and again on every return; for the ~1.5 kB stamp
//! UPDATE that was 5% of a heartbeat. A [`Prepared`] is found by the `Arc`
//! its SQL came in (pointer first, text only when the pointers differ).
//!
//! Every statement here is prepared with `SQLITE_PREPARE_PERSISTENT` and
//! finalized when dropped; its owner drops it before SQLite closes the
//! connection (the owners are the `orphaned_runs` table and the state that
//! table keeps alive, both released in its `xDisconnect`).

use std::cell::Cell;
use std::ffi::{c_int, c_uint, CStr};
use std::ptr::NonNull;
use std::sync::Arc;

use rusqlite::types::{ToSql, ToSqlOutput, Value};
use rusqlite::{ffi, Result};

/// One prepared statement, owned: finalized when dropped.
pub(crate) struct Prepared {
    sql: Arc<str>,
    stmt: NonNull<ffi::sqlite3_stmt>,
    /// How many times SQLite had prepared this statement again (its
    /// `SQLITE_STMTSTATUS_REPREPARE`) when it last ran on a schema found
    /// complete; `None`: never. See [`fresh`].
    trusted_at: Cell<Option<c_int>>,
}

impl Prepared {
    /// Prepares `sql` (one statement) on `db`. Errors are SQLite's, unnamed.
    ///
    /// # Safety
    /// `db` is an open connection handle, and the statement is used and
    /// dropped only on that connection's thread while it is open.
    pub unsafe fn new(db: *mut ffi::sqlite3, sql: Arc<str>) -> Result<Prepared> {
        let len = c_int::try_from(sql.len())
            .map_err(|_| crate::errors::internal("a statement too long to prepare"))?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; `stmt` is written by SQLite;
        // `db` is open (the caller's contract).
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT as c_uint,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            // SAFETY: as above; a failed prepare leaves `stmt` NULL.
            return Err(unsafe { error(db, rc) });
        }
        let stmt =
            NonNull::new(stmt).ok_or_else(|| crate::errors::internal("an empty statement"))?;
        Ok(Prepared {
            sql,
            stmt,
            trusted_at: Cell::new(None),
        })
    }

    /// Whether this is the statement of `sql`.
    pub fn is(&self, sql: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.sql, sql) || self.sql == *sql
    }

    pub fn handle(&self) -> NonNull<ffi::sqlite3_stmt> {
        self.stmt
    }

    pub fn as_ptr(&self) -> *mut ffi::sqlite3_stmt {
        self.stmt.as_ptr()
    }

    /// [`Prepared::execute`] for a statement that calls [`fresh`]: when
    /// `trust` (the caller found the installed objects complete in this
    /// call), the statement's current reprepare count is trusted first.
    ///
    /// # Safety
    /// As [`Prepared::execute`].
    pub unsafe fn execute_fenced(
        &self,
        db: *mut ffi::sqlite3,
        binds: &[Bind<'_>],
        trust: bool,
    ) -> Result<usize> {
        let stmt = self.as_ptr();
        if trust {
            // SAFETY: the statement is ours and alive (the caller's contract).
            let now =
                unsafe { ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0) };
            self.trusted_at.set(Some(now));
        }
        let outer = RUNNING.with(|r| r.replace(Some((stmt, self.trusted_at.get()))));
        // SAFETY: the caller's contract.
        let out = unsafe { self.execute(db, binds) };
        RUNNING.with(|r| r.set(outer));
        out
    }

    /// Runs this statement, which returns no rows, with `binds` as ?1, ?2, …
    /// and returns the number of rows it changed. The statement is left
    /// reset with its parameters cleared (the texts are bound without a
    /// copy, so none may stay bound after the call).
    ///
    /// # Safety
    /// `db` is the open connection the statement was prepared on, on its thread.
    pub unsafe fn execute(&self, db: *mut ffi::sqlite3, binds: &[Bind<'_>]) -> Result<usize> {
        let stmt = self.as_ptr();
        // SAFETY: the statement is ours and alive on `db` (the caller's
        // contract); each text stays borrowed, so valid, for this whole call,
        // and is unbound by sqlite3_clear_bindings before the call returns.
        unsafe {
            let mut rc = ffi::sqlite3_reset(stmt);
            for (i, b) in binds.iter().enumerate() {
                if rc != ffi::SQLITE_OK {
                    break;
                }
                let at = i as c_int + 1;
                rc = match *b {
                    Bind::Null => ffi::sqlite3_bind_null(stmt, at),
                    Bind::Int(v) => ffi::sqlite3_bind_int64(stmt, at, v),
                    Bind::Text(t) => match c_int::try_from(t.len()) {
                        Ok(n) => ffi::sqlite3_bind_text(
                            stmt,
                            at,
                            t.as_ptr().cast(),
                            n,
                            ffi::SQLITE_STATIC(),
                        ),
                        Err(_) => ffi::SQLITE_TOOBIG,
                    },
                };
            }
            let out = match rc {
                ffi::SQLITE_OK => match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_DONE => Ok(usize::try_from(ffi::sqlite3_changes(db)).unwrap_or(0)),
                    ffi::SQLITE_ROW => Err(crate::errors::internal(
                        "a statement run for its changes returned rows",
                    )),
                    rc => Err(error(db, rc)),
                },
                rc => Err(error(db, rc)),
            };
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
            out
        }
    }
}

thread_local! {
    /// The kept statement running on this thread (see
    /// [`Prepared::execute_fenced`]) and the reprepare count it may run at;
    /// `None`: any.
    static RUNNING: Cell<Option<(*mut ffi::sqlite3_stmt, Option<c_int>)>> =
        const { Cell::new(None) };
    /// Set when [`fresh`] answered no; read by [`take_stale`].
    static STALE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the kept statement running on this thread (if any) runs on the
/// schema it was last trusted on: SQLite prepares a kept statement again,
/// inside `sqlite3_step` and before it reads a row, when the schema changed
/// (on any connection), so a changed count means a migration, a dropped
/// trigger or a renamed column may have taken the fence away. The stamp
/// statements call this (through their SQL function, see `sqlgen`) before
/// they write anything; answering no, they change nothing, and the caller
/// looks at the installed objects again (see `state::verify`). Outside a
/// kept statement (a statement prepared afresh in a call that looked
/// already): yes.
pub(crate) fn fresh() -> bool {
    let Some((stmt, trusted)) = RUNNING.with(Cell::get) else {
        return true;
    };
    // SAFETY: RUNNING holds a statement only while `execute_fenced` steps
    // it on this thread, so it is alive.
    let now = unsafe { ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0) };
    let ok = trusted == Some(now);
    if !ok {
        STALE.with(|s| s.set(true));
    }
    ok
}

/// Whether [`fresh`] answered no on this thread since the last call;
/// clears the mark.
pub(crate) fn take_stale() -> bool {
    STALE.with(|s| s.replace(false))
}

/// Whether [`fresh`] answered no on this thread since [`take_stale`].
pub(crate) fn stale_seen() -> bool {
    STALE.with(Cell::get)
}

// SAFETY: a SQLite statement is not tied to a thread; like rusqlite's
// `Connection` (which is `Send`), it may move to another thread as long as
// no two threads use it at once. Its owners use it on the thread SQLite
// calls them on: the `orphaned_runs` cursor and table (not `Send`), and the
// connection state, which holds it behind its mutex.
unsafe impl Send for Prepared {}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: the statement is ours, not finalized before, and its
        // connection is still open (see `Prepared::new`).
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// The error SQLite reports for `rc` on `db`, as rusqlite shows it.
///
/// # Safety
/// `db` is an open connection handle.
pub(crate) unsafe fn error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    // SAFETY: `db` is open; sqlite3_errmsg returns a NUL-terminated text
    // owned by SQLite, valid until the next call on `db`, copied here.
    let text = unsafe {
        let msg = ffi::sqlite3_errmsg(db);
        if msg.is_null() {
            None
        } else {
            Some(CStr::from_ptr(msg).to_string_lossy().into_owned())
        }
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), text)
}

/// A parameter value for [`Prepared::execute`] (and, through [`ToSql`],
/// for rusqlite's statements).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bind<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl<'a> From<&'a Value> for Bind<'a> {
    /// Integers and texts as they are; anything else (the callers never pass
    /// it: a run id is checked to be text or an integer) binds NULL.
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Integer(i) => Bind::Int(*i),
            Value::Text(t) => Bind::Text(t),
            _ => Bind::Null,
        }
    }
}

impl From<Option<i64>> for Bind<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Bind::Null, Bind::Int)
    }
}

impl<'a> From<Option<&'a str>> for Bind<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Bind::Null, Bind::Text)
    }
}

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Bind::Null => ToSqlOutput::from(rusqlite::types::Null),
            Bind::Int(v) => ToSqlOutput::from(v),
            Bind::Text(t) => ToSqlOutput::from(t),
        })
    }
}
