//! Helpers shared by the reliability, property and security tests
//! (`tests/reliability_*.rs`, `tests/prop_*.rs`, `tests/security_*.rs`).
//!
//! Child processes: a test re-runs its own test binary with
//! `RUN_RECOVERY_WORKER=<mode>` set and `--exact <worker test>`; the worker
//! test sees the variable, does its job and exits. No extra binary to build.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The host schema of the spec (sql/protocol_runs.sql).
pub const HOST_SCHEMA: &str = run_recovery::SPEC_SCHEMA;

/// Opens `path` with run_recovery registered, WAL and a generous busy timeout.
/// Registers before running any SQL (see `open_registered_late`).
pub fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    run_recovery::register(&conn).expect("register");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn
}

/// Like [`open`], but the schema is read (by `PRAGMA journal_mode`) before
/// the functions are registered — what an app does when it loads the
/// extension after its first query.
pub fn open_registered_late(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    run_recovery::register(&conn).expect("register");
    conn
}

/// Opens `path` WITHOUT the extension: a client that only has plain SQLite.
pub fn open_plain(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn
}

/// Opens read-only, with the extension registered.
pub fn open_read_only(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    run_recovery::register(&conn).expect("register");
    conn
}

/// A fresh database file with the host schema and run_recovery installed with `config`.
pub fn fresh_db(dir: &Path, config: &str) -> (std::path::PathBuf, Connection) {
    let path = dir.join("runs.db");
    let conn = open(&path);
    conn.execute_batch(HOST_SCHEMA).unwrap();
    conn.query_row("SELECT run_recovery_install(?1)", [config], |r| {
        r.get::<_, String>(0)
    })
    .expect("install");
    (path, conn)
}

pub fn insert_run(conn: &Connection, id: &str, status: &str, meta: Option<&str>) {
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, \
         top_level_protocol_definition_accession_id) VALUES (?1, ?1, ?2, ?3, 'proto')",
        rusqlite::params![id, status, meta],
    )
    .expect("insert run");
}

// The run readers shared with the other integration tests.
#[path = "../common/mod.rs"]
mod base;
#[allow(unused_imports)] // not every test crate uses both
pub use base::{meta, status};

/// Every row of every table and the schema, as text: compared before and after
/// a call that must change nothing.
pub fn snapshot(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let rows = s
        .query_map([], |r| {
            Ok(format!(
                "{:?}",
                (
                    r.get::<_, rusqlite::types::Value>(0)?,
                    r.get::<_, rusqlite::types::Value>(1)?,
                    r.get::<_, rusqlite::types::Value>(2)?
                )
            ))
        })
        .unwrap();
    out.extend(rows.map(|r| r.unwrap()));
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in tables {
        let sql = format!(
            "SELECT * FROM \"{}\" ORDER BY rowid",
            t.replace('"', "\"\"")
        );
        let mut s = conn.prepare(&sql).unwrap();
        let n = s.column_count();
        let rows = s
            .query_map([], |r| {
                let vals: Vec<String> = (0..n)
                    .map(|i| r.get_ref(i).map(show_raw))
                    .collect::<rusqlite::Result<_>>()?;
                Ok(format!("{t}: {vals:?}"))
            })
            .unwrap();
        out.extend(rows.map(|r| r.unwrap()));
    }
    out
}

/// A value exactly as stored (text as bytes: it may be invalid UTF-8).
fn show_raw(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => format!("int {i}"),
        ValueRef::Real(r) => format!("real {:?}", r.to_bits()),
        ValueRef::Text(t) => format!("text {t:?}"),
        ValueRef::Blob(b) => format!("blob {b:?}"),
    }
}

/// Moves a run's heartbeat `ms` into the past, as if time had passed: done on a
/// connection with triggers disabled, because the pure-SQL layer (rightly)
/// refuses to move `lastHeartbeat` backwards.
pub fn age_heartbeat(path_or_conn: &Connection, id: &str, ms: i64) {
    use rusqlite::config::DbConfig;
    let conn = path_or_conn;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .unwrap();
    let r = conn.execute(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', \
         CAST(json_extract(properties_json, '$.lastHeartbeat') AS INTEGER) - ?2) \
         WHERE accession_id = ?1",
        rusqlite::params![id, ms],
    );
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
        .unwrap();
    assert_eq!(r.expect("age heartbeat"), 1, "run {id} not found");
}

/// The text of an SQL error (what a client sees).
pub fn err_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        other => other.to_string(),
    }
}

/// A small deterministic PRNG (xorshift64*), so failures replay from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Seed from `RUN_RECOVERY_SEED` or the clock; printed so a run can be replayed.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("RUN_RECOVERY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| run_recovery::now_ms() as u64);
        eprintln!("{what}: RUN_RECOVERY_SEED={seed}");
        Rng::new(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An integer from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Starts this test binary again as a worker: `worker_test` is the name of
/// the test function that serves `RUN_RECOVERY_WORKER`; `args` reach it as
/// `RUN_RECOVERY_WORKER_ARGS` (tab-separated).
pub fn spawn_worker(worker_test: &str, mode: &str, args: &[String]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .args([
            worker_test,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
            "-q",
        ])
        .env("RUN_RECOVERY_WORKER", mode)
        .env("RUN_RECOVERY_WORKER_ARGS", args.join("\t"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

/// In a worker: the mode and arguments, or None in a normal test run.
pub fn worker_request() -> Option<(String, Vec<String>)> {
    let mode = std::env::var("RUN_RECOVERY_WORKER").ok()?;
    let args = std::env::var("RUN_RECOVERY_WORKER_ARGS").unwrap_or_default();
    Some((mode, args.split('\t').map(str::to_string).collect()))
}
