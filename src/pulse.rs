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
//!   when a stamp says the run is gone, no longer live, holds another lease
//!   (resumed or failed elsewhere), or its metadata cannot be stamped, and
//!   when run_recovery is uninstalled.
//! - `run_heartbeat_stop(id)`, a new `run_heartbeat_every` on the same run,
//!   and closing the connection that started it all *signal* the thread; none
//!   of them waits for it, so closing a connection never hangs. A stamp
//!   already in flight may still land; no new one starts. Threads die with
//!   the process, so a killed executor's run goes stale.
//! - The loadable library is loaded permanently (SQLITE_OK_LOAD_PERMANENTLY,
//!   see lib.rs), so a pulse thread never runs code of an unloaded library.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::functions::Context;
use rusqlite::types::Value;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, Result};

use crate::errors::{fail, wrap};
use crate::metadata::{parse, State};
use crate::state::{Installed, Shared};
use crate::{args, WRITER};

/// The shortest interval accepted, in milliseconds.
pub const MIN_INTERVAL_MS: i64 = 10;
/// How long the thread waits before retrying a stamp refused with SQLITE_BUSY.
const BUSY_RETRY: Duration = Duration::from_millis(5);

const EVERY: &str = "run_heartbeat_every";
const STOP: &str = "run_heartbeat_stop";

/// The control block shared by a pulse's thread and the connection that started it.
#[derive(Default)]
pub(crate) struct Ctl {
    state: Mutex<CtlState>,
    cv: Condvar,
}

#[derive(Default, Debug, Clone)]
pub(crate) struct CtlState {
    /// Asked to stop (run_heartbeat_stop, replaced, connection closed).
    pub stop: bool,
    /// The thread has left its loop and will write nothing more.
    pub finished: bool,
    /// Why it finished.
    pub reason: Option<String>,
    /// Stamp attempts (one per interval; BUSY retries not counted).
    pub attempts: u64,
    /// Stamps that landed.
    pub stamps: u64,
    /// Attempts that met SQLITE_BUSY/SQLITE_LOCKED and were retried.
    pub busy: u64,
    /// The last error that did not stop the pulse.
    pub last_error: Option<String>,
}

impl Ctl {
    fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the thread to stop; returns whether it was still running.
    pub(crate) fn stop(&self) -> bool {
        let mut g = self.lock();
        g.stop = true;
        self.cv.notify_all();
        !g.finished
    }

    /// What the pulse has done so far (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> CtlState {
        self.lock().clone()
    }

    /// Sleeps `d` or until asked to stop; true when asked to stop.
    fn wait(&self, d: Duration) -> bool {
        let g = self.lock();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |s| !s.stop)
            .unwrap_or_else(|e| e.into_inner());
        g.stop
    }

    fn finish(&self, reason: String) {
        let mut g = self.lock();
        g.finished = true;
        g.reason = Some(reason);
        self.cv.notify_all();
    }
}

/// The pulses started on one connection, by run id. Dropped when SQLite
/// destroys the functions (the connection closes): every pulse is signalled.
#[derive(Default)]
pub(crate) struct Registry {
    pulses: Mutex<HashMap<String, Arc<Ctl>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Ctl>>> {
        self.pulses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops and forgets the pulse of `id`; whether one was still running.
    pub(crate) fn stop(&self, id: &str) -> bool {
        match self.lock().remove(id) {
            Some(ctl) => ctl.stop(),
            None => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Ctl>> {
        self.lock().get(id).cloned()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for ctl in self.lock().values() {
            ctl.stop();
        }
    }
}

pub fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    register_with(db, shared).map(|_| ())
}

/// Registers both functions; returns the registry they share (tests keep it).
pub(crate) fn register_with(db: &Connection, shared: &Arc<Shared>) -> Result<Arc<Registry>> {
    let registry = Arc::new(Registry::default());
    for n_arg in [2, 3] {
        let shared = shared.clone();
        let registry = registry.clone();
        db.create_scalar_function(c"run_heartbeat_every", n_arg, WRITER, move |ctx| {
            sql_every(ctx, &shared, &registry)
        })?;
    }
    let reg = registry.clone();
    db.create_scalar_function(c"run_heartbeat_stop", 1, WRITER, move |ctx| {
        let (_, id_text) = args::run_id(STOP, ctx.get_raw(0))?;
        Ok(reg.stop(&id_text) as i64)
    })?;
    Ok(registry)
}

fn sql_every(ctx: &Context<'_>, shared: &Shared, registry: &Registry) -> Result<i64> {
    let (id, id_text) = args::run_id(EVERY, ctx.get_raw(0))?;
    let interval = args::int(EVERY, "interval_ms", ctx.get_raw(1), MIN_INTERVAL_MS)?;
    let lease = match ctx.len() {
        3 => Some(args::lease(EVERY, ctx.get_raw(2))?),
        _ => None,
    };
    // SAFETY: the connection is the caller's, used on this thread during this call.
    let conn = unsafe { ctx.get_connection()? };
    start(&conn, shared, registry, id, id_text, interval, lease).map(|(lease, _)| lease)
}

/// Starts (or replaces) the pulse of run `id` on `conn`'s main database file;
/// returns the lease every stamp is fenced with, and the pulse's control block.
pub(crate) fn start(
    conn: &Connection,
    shared: &Shared,
    registry: &Registry,
    id: Value,
    id_text: String,
    interval_ms: i64,
    lease: Option<i64>,
) -> Result<(i64, Arc<Ctl>)> {
    let path = database_file(conn)?;
    let caller_busy: i64 = conn
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .map_err(|e| wrap(EVERY, e))?;
    // SAFETY: the handle is the caller's live connection, used on this thread
    // during this call only.
    let handle = unsafe { conn.handle() };
    let lease = shared.run(handle, EVERY, |conn, inst| {
        if interval_ms >= inst.cfg.stale_after_ms {
            return Err(fail(
                EVERY,
                format!(
                    "interval_ms must be below stale_after_ms ({}), or the run would look \
                     orphaned between two beats, found {interval_ms}",
                    inst.cfg.stale_after_ms
                ),
            ));
        }
        first_stamp(conn, inst, &id, &id_text, lease)
    })?;
    let pulse_conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| wrap(EVERY, e))?;
    crate::register(&pulse_conn).map_err(|e| wrap(EVERY, e))?;
    let busy_ms = if caller_busy > 0 {
        caller_busy
    } else {
        interval_ms
    };
    // SQLite's own busy handler sleeps up to 100 ms between tries, so a
    // writer that commits and begins again within a few milliseconds starves
    // it; the pulse's handler tries every millisecond instead, for as long as
    // the busy timeout.
    pulse_conn
        .busy_handler(Some(pulse_busy_handler))
        .map_err(|e| wrap(EVERY, e))?;
    let ctl = Arc::new(Ctl::default());
    let pulse = Pulse {
        conn: pulse_conn,
        busy_ms: i32::try_from(busy_ms).unwrap_or(i32::MAX),
        id,
        lease,
        interval: Duration::from_millis(interval_ms.unsigned_abs()),
        ctl: ctl.clone(),
    };
    std::thread::Builder::new()
        .name(format!("run_recovery pulse {id_text}"))
        .spawn(move || pulse.run())
        .map_err(|e| fail(EVERY, format!("cannot start the pulse thread ({e})")))?;
    if let Some(old) = registry.lock().insert(id_text, ctl.clone()) {
        old.stop();
    }
    Ok((lease, ctl))
}

/// The file behind `conn`'s main database, or the refusal for in-memory and
/// temporary databases (a second connection could not see them).
fn database_file(conn: &Connection) -> Result<String> {
    match conn.path() {
        Some(p) if !p.is_empty() && std::path::Path::new(p).exists() => Ok(p.to_string()),
        other => Err(fail(
            EVERY,
            format!(
                "a pulse opens its own connection to the database file, so it needs a file \
                 on disk, found {}",
                match other {
                    Some(p) if !p.is_empty() =>
                        format!("database {} (not a file on disk)", crate::errors::quote(p)),
                    _ => "an in-memory or temporary database".to_string(),
                }
            ),
        )),
    }
}

/// Stamps a heartbeat on the caller's connection with `run_heartbeat`
/// (fenced with `lease` when given); returns the lease the run holds.
fn first_stamp(
    conn: &Connection,
    inst: &Installed,
    id: &Value,
    id_text: &str,
    lease: Option<i64>,
) -> Result<i64> {
    stamp(conn, id, lease).map_err(renamed)?;
    if let Some(l) = lease {
        return Ok(l);
    }
    let meta: Option<String> = conn
        .prepare_cached(&inst.sql.read_row)
        .and_then(|mut s| s.query_row([id], |r| r.get(1)))
        .map_err(|e| wrap(EVERY, e))?;
    let m = parse(EVERY, id_text, meta.as_deref())
        .map_err(|msg| rusqlite::Error::UserFunctionError(msg.into()))?;
    Ok(State::of(&m).lease)
}

/// One `run_heartbeat(id [, lease])` through the public SQL surface.
fn stamp(conn: &Connection, id: &Value, lease: Option<i64>) -> Result<i64> {
    match lease {
        Some(l) => conn.query_row("SELECT run_heartbeat(?1, ?2)", params![id, l], |r| r.get(0)),
        None => conn.query_row("SELECT run_heartbeat(?1)", params![id], |r| r.get(0)),
    }
}

/// `run_heartbeat: …` said on behalf of `run_heartbeat_every: …`.
fn renamed(e: rusqlite::Error) -> rusqlite::Error {
    let rename = |m: String| match m.strip_prefix("run_heartbeat: ") {
        Some(rest) => format!("{EVERY}: {rest}"),
        None => m,
    };
    match e {
        rusqlite::Error::SqliteFailure(code, Some(m)) => {
            rusqlite::Error::SqliteFailure(code, Some(rename(m)))
        }
        rusqlite::Error::UserFunctionError(m) => {
            rusqlite::Error::UserFunctionError(rename(m.to_string()).into())
        }
        other => wrap(EVERY, other),
    }
}

/// What one stamp attempt came to.
enum Tick {
    Stamped,
    /// SQLITE_BUSY or SQLITE_LOCKED after the busy timeout, or a row that
    /// changed under the stamp: try again shortly.
    Busy,
    /// An error that says nothing about the run (I/O, full disk): try again
    /// next interval.
    Transient(String),
    /// The run cannot be kept alive by this pulse any more.
    Stop(String),
}

struct Pulse {
    /// The pulse's own connection, with run_recovery registered on it.
    conn: Connection,
    /// How long one stamp waits for a lock before it is retried.
    busy_ms: i32,
    id: Value,
    lease: i64,
    interval: Duration,
    ctl: Arc<Ctl>,
}

impl Pulse {
    fn run(self) {
        BUSY_LIMIT_MS.with(|c| c.set(self.busy_ms));
        let reason = 'outer: loop {
            if self.ctl.wait(self.interval) {
                break "stopped (run_heartbeat_stop, replaced, or its connection closed)"
                    .to_string();
            }
            self.ctl.lock().attempts += 1;
            loop {
                match classify(&self.conn, self.stamp_locked()) {
                    Tick::Stamped => {
                        self.ctl.lock().stamps += 1;
                        break;
                    }
                    Tick::Busy => {
                        self.ctl.lock().busy += 1;
                        if self.ctl.wait(BUSY_RETRY) {
                            break 'outer "stopped while the database was busy".to_string();
                        }
                    }
                    Tick::Transient(msg) => {
                        self.ctl.lock().last_error = Some(msg);
                        break;
                    }
                    Tick::Stop(msg) => break 'outer msg,
                }
            }
        };
        self.ctl.finish(reason);
        // The connection closes here, on the pulse's own thread.
    }

    /// Takes the write lock first, then stamps: `run_heartbeat` reads the
    /// clock when it is called, so a stamp that waited for the lock inside
    /// its UPDATE would write a time that is already old.
    fn stamp_locked(&self) -> Result<i64> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let out = stamp(&self.conn, &self.id, Some(self.lease))
            .and_then(|hb| self.conn.execute_batch("COMMIT").map(|()| hb));
        if out.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        out
    }
}

thread_local! {
    /// The busy timeout of the pulse running on this thread, in milliseconds.
    static BUSY_LIMIT_MS: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The pulse connection's busy handler: retry every millisecond, up to the
/// busy timeout (it runs on the pulse's own thread).
fn pulse_busy_handler(tries: i32) -> bool {
    if tries >= BUSY_LIMIT_MS.with(|c| c.get()) {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Sorts a stamp's result: landed, busy (retry soon), a verdict on the run
/// from run_heartbeat (stop), or anything else (retry next interval).
fn classify(conn: &Connection, r: Result<i64>) -> Tick {
    let e = match r {
        Ok(_) => return Tick::Stamped,
        Err(e) => e,
    };
    if is_busy(&e) {
        return Tick::Busy;
    }
    let msg = renamed(e).to_string();
    if msg.contains("changed while it was being stamped") {
        Tick::Busy
    } else if msg.contains("run_recovery is not installed") {
        // The core says "not installed" when it could not read its settings,
        // which includes SQLITE_BUSY in rollback-journal mode: look for
        // ourselves before giving up.
        match conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'run_recovery_settings'",
            [],
            |r| r.get::<_, bool>(0),
        ) {
            Ok(false) => Tick::Stop(msg),
            Ok(true) => Tick::Busy,
            Err(e) if is_busy(&e) => Tick::Busy,
            Err(e) => Tick::Transient(wrap(EVERY, e).to_string()),
        }
    } else if msg.starts_with(EVERY) {
        // run_heartbeat's own verdicts: no such run, not live, stale lease,
        // metadata that is not an object, not installed.
        Tick::Stop(msg)
    } else {
        Tick::Transient(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SCHEMA: &str = "CREATE TABLE protocol_runs (
        accession_id CHAR(32) NOT NULL PRIMARY KEY,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
        updated_at DATETIME, name VARCHAR, properties_json TEXT,
        start_time DATETIME, end_time DATETIME, status VARCHAR(21),
        top_level_protocol_definition_accession_id CHAR(32) NOT NULL);";

    fn setup(dir: &tempfile::TempDir, config: &str) -> (String, Connection) {
        let path = dir.path().join("runs.db").to_string_lossy().into_owned();
        let conn = Connection::open(&path).unwrap();
        crate::register(&conn).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.query_row("SELECT run_recovery_install(?1)", [config], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id)
             VALUES ('r1', 'PCR', 'running', 'p'), ('r2', 'ELISA', 'queued', 'p');",
        )
        .unwrap();
        (path, conn)
    }

    /// Polls `cond` every 5 ms; fails the test after 20 s.
    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) until the pulse has left its loop.
    fn wait_finished(ctl: &Ctl) -> CtlState {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = ctl.snapshot();
            if s.finished || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn heartbeat_of(conn: &Connection, id: &str) -> i64 {
        conn.query_row(
            "SELECT json_extract(properties_json, '$.lastHeartbeat') FROM protocol_runs WHERE accession_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn lease_of(conn: &Connection, id: &str) -> i64 {
        conn.query_row(
            "SELECT coalesce(json_extract(properties_json, '$.lease'), 1) FROM protocol_runs WHERE accession_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn start_on(
        conn: &Connection,
        registry: &Registry,
        id: &str,
        interval: i64,
        lease: Option<i64>,
    ) -> Result<(i64, Arc<Ctl>)> {
        let shared = Shared::default();
        start(
            conn,
            &shared,
            registry,
            Value::Text(id.into()),
            id.into(),
            interval,
            lease,
        )
    }

    #[test]
    fn stamps_until_stopped_and_stop_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn) = setup(&dir, "{}");
        let registry = Registry::default();
        let (lease, ctl) = start_on(&conn, &registry, "r1", 10, None).unwrap();
        assert_eq!(lease, 1);
        let first = heartbeat_of(&conn, "r1");
        wait_until("3 stamps", || ctl.snapshot().stamps >= 3);
        assert!(heartbeat_of(&conn, "r1") >= first);
        assert!(
            registry.stop("r1"),
            "a running pulse reports it was stopped"
        );
        let s = wait_finished(&ctl);
        assert!(s.finished);
        assert!(s.reason.unwrap().starts_with("stopped"));
        assert!(!registry.stop("r1"), "nothing left to stop");
    }

    #[test]
    fn stops_at_the_first_tick_after_a_resume_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = setup(&dir, "{}");
        let registry = Registry::default();
        let (lease, ctl) = start_on(&conn, &registry, "r1", 20, None).unwrap();
        assert_eq!(lease, 1);
        let other = Connection::open(&path).unwrap();
        crate::register(&other).unwrap();
        // Threshold 0: the run counts as orphaned as soon as its heartbeat is 1 ms old.
        let outcome: String = loop {
            match other.query_row("SELECT recover_run('r1', 'resume', 0)", [], |r| r.get(0)) {
                Ok(o) => break o,
                Err(e) => assert!(e.to_string().contains("still alive"), "{e}"),
            }
        };
        assert!(outcome.contains("\"lease\":2"), "{outcome}");
        let after_resume = ctl.snapshot();
        let hb = heartbeat_of(&other, "r1");
        let s = wait_finished(&ctl);
        assert!(s.finished);
        assert!(
            s.reason.as_deref().unwrap().contains("stale lease 1"),
            "{s:?}"
        );
        // The first attempt after the resume (one interval at most) stopped it,
        // and nothing it did kept the run alive.
        assert!(
            s.attempts - after_resume.attempts <= 1,
            "{s:?} {after_resume:?}"
        );
        assert_eq!(s.stamps, after_resume.stamps);
        assert_eq!(heartbeat_of(&other, "r1"), hb);
        assert_eq!(lease_of(&other, "r1"), 2);
    }

    #[test]
    fn stops_when_the_run_is_failed_or_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn) = setup(&dir, "{}");
        let registry = Registry::default();
        let (_, ctl) = start_on(&conn, &registry, "r1", 10, None).unwrap();
        conn.execute(
            "UPDATE protocol_runs SET status = 'completed' WHERE accession_id = 'r1'",
            [],
        )
        .unwrap();
        let s = wait_finished(&ctl);
        assert!(s
            .reason
            .unwrap()
            .contains("is not live, found status 'completed'"));
    }

    #[test]
    fn stops_when_uninstalled() {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn) = setup(&dir, "{}");
        let registry = Registry::default();
        let (_, ctl) = start_on(&conn, &registry, "r1", 10, None).unwrap();
        conn.query_row("SELECT run_recovery_uninstall()", [], |_| Ok(()))
            .unwrap();
        let s = wait_finished(&ctl);
        assert!(s.reason.unwrap().contains("run_recovery is not installed"));
    }

    #[test]
    fn busy_is_retried_never_a_lost_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = setup(&dir, "{}");
        conn.busy_timeout(Duration::from_millis(20)).unwrap();
        let registry = Registry::default();
        let (_, ctl) = start_on(&conn, &registry, "r1", 10, None).unwrap();
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        wait_until("3 busy retries", || {
            let s = ctl.snapshot();
            assert!(!s.finished, "busy must not stop the pulse: {s:?}");
            s.busy >= 3
        });
        let during = ctl.snapshot();
        assert!(!during.finished, "busy must not stop the pulse: {during:?}");
        blocker.execute_batch("COMMIT").unwrap();
        let stamps = during.stamps;
        wait_until("a stamp after the lock", || ctl.snapshot().stamps > stamps);
        assert!(!ctl.snapshot().finished);
        assert!(registry.stop("r1"));
    }

    #[test]
    fn closing_the_connection_signals_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = setup(&dir, "{}");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let shared = Arc::new(Shared::default());
        let registry = register_with(&conn, &shared).unwrap();
        let lease: i64 = conn
            .query_row("SELECT run_heartbeat_every('r1', 10)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(lease, 1);
        let ctl = registry.get("r1").unwrap();
        // Hold the write lock so the pulse sits in its 5 s busy wait.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        wait_until("an attempt", || ctl.snapshot().attempts >= 1);
        drop(registry);
        conn.close().map_err(|(_, e)| e).unwrap();
        // close returned while the pulse is still inside its busy wait.
        let s = ctl.snapshot();
        assert!(s.stop, "closing the connection signals the pulse");
        blocker.execute_batch("COMMIT").unwrap();
        let s = wait_finished(&ctl);
        assert!(s.finished);
    }

    #[test]
    fn refusals_name_the_function_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn) = setup(&dir, "{\"stale_after_ms\": 1000}");
        let err = |sql: &str| conn.query_row(sql, [], |_| Ok(())).unwrap_err().to_string();
        assert_eq!(
            err("SELECT run_heartbeat_every('nope', 100)"),
            "run_heartbeat_every: no run with accession_id 'nope'"
        );
        assert!(err("SELECT run_heartbeat_every('r2', 100)")
            .starts_with("run_heartbeat_every: run 'r2' is not live, found status 'queued'"));
        assert!(err("SELECT run_heartbeat_every('r1', 100, 7)")
            .starts_with("run_heartbeat_every: stale lease 7 for run 'r1', found lease 1"));
        assert_eq!(
            err("SELECT run_heartbeat_every('r1', 5)"),
            "run_heartbeat_every: interval_ms must be an integer >= 10, found 5"
        );
        assert!(err("SELECT run_heartbeat_every('r1', 1000)")
            .contains("interval_ms must be below stale_after_ms (1000)"));
        assert_eq!(
            err("SELECT run_heartbeat_stop(NULL)"),
            "run_heartbeat_stop: run id must be text or an integer, found NULL"
        );
        let stopped: i64 = conn
            .query_row("SELECT run_heartbeat_stop('r1')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stopped, 0);
    }

    #[test]
    fn refused_for_memory_and_temporary_databases() {
        for path in [":memory:", ""] {
            let conn = Connection::open(path).unwrap();
            crate::register(&conn).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.query_row("SELECT run_recovery_install()", [], |_| Ok(()))
                .unwrap();
            let e = conn
                .query_row("SELECT run_heartbeat_every('r1', 100)", [], |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                "run_heartbeat_every: a pulse opens its own connection to the database file, \
                 so it needs a file on disk, found an in-memory or temporary database"
            );
        }
    }

    #[test]
    fn a_new_pulse_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn) = setup(&dir, "{}");
        let registry = Registry::default();
        let (_, old) = start_on(&conn, &registry, "r1", 10, None).unwrap();
        let (_, new) = start_on(&conn, &registry, "r1", 10, Some(1)).unwrap();
        let s = wait_finished(&old);
        assert!(s.reason.unwrap().starts_with("stopped"));
        assert!(!new.snapshot().finished);
        assert!(registry.stop("r1"));
    }
}
