//! The one test toolkit of the Rust integration tests: databases with the
//! host schema (`sql/protocol_runs.sql`, the file every test of every
//! language reads), runs and their readers, snapshots; processes
//! (`procs.rs`: the `run-recovery` binary, worker processes, the test runner
//! of the tests that start workers); a replayable PRNG (`rng.rs`); the app's
//! statuses, state machine and spellings (`statuses.rs`).
#![allow(dead_code)]

mod procs;
mod rng;
mod statuses;

#[allow(unused_imports)]
pub use procs::*;
#[allow(unused_imports)]
pub use rng::*;
#[allow(unused_imports)]
pub use statuses::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Result};

/// The host table (sql/protocol_runs.sql).
pub const SCHEMA: &str = include_str!("../../sql/protocol_runs.sql");

/// An in-memory database with the schema and run_recovery registered (not installed).
pub fn db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    run_recovery::register(&conn).unwrap();
    conn
}

/// As [`db`], installed with the default config.
pub fn installed() -> Connection {
    let conn = db();
    install(&conn, "{}");
    conn
}

/// `run_recovery_install(config)`; panics when refused.
pub fn install(conn: &Connection, config: &str) {
    conn.query_row("SELECT run_recovery_install(?1)", [config], |r| {
        r.get::<_, String>(0)
    })
    .expect("install");
    allow_backdating(conn);
}

/// Lets plain writes move `lastHeartbeat` back (`allow_backdating` in the
/// settings): the tests age runs that way. The hostile suite runs without.
pub fn allow_backdating(conn: &Connection) {
    conn.execute(
        "INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')",
        [],
    )
    .expect("allow_backdating");
}

/// Opens `path` with run_recovery registered and a generous busy timeout,
/// in the journal mode the file has. Registers before running any SQL (see
/// [`open_registered_late`]).
pub fn connect(path: impl AsRef<Path>) -> Connection {
    let conn = Connection::open(path).expect("open");
    run_recovery::register(&conn).expect("register");
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn
}

/// [`connect`], in WAL mode.
pub fn open(path: impl AsRef<Path>) -> Connection {
    let conn = connect(path);
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
pub fn open_plain(path: impl AsRef<Path>) -> Connection {
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

/// A fresh database file `dir/runs.db` (WAL) with the schema and
/// run_recovery installed with `config`.
pub fn fresh_db(dir: &Path, config: &str) -> (PathBuf, Connection) {
    let path = dir.join("runs.db");
    let conn = open(&path);
    conn.execute_batch(SCHEMA).unwrap();
    install(&conn, config);
    (path, conn)
}

/// A new database file `dir/name` in `journal` mode, installed with
/// `stale_after_ms = threshold`, holding run `r1` ('PCR plate 1') in `running`.
pub fn new_db(dir: &Path, name: &str, journal: &str, threshold: i64) -> String {
    let path = dir.join(name).to_string_lossy().into_owned();
    let conn = connect(&path);
    conn.pragma_update(None, "journal_mode", journal).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    install(&conn, &format!("{{\"stale_after_ms\": {threshold}}}"));
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id)
         VALUES ('r1', 'PCR plate 1', 'running', 'p')",
        [],
    )
    .unwrap();
    path
}

/// Inserts run `id` (named `run <id>`) in `status` with metadata `meta`.
pub fn add_run(conn: &Connection, id: &str, status: &str, meta: Option<&str>) {
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, \
         top_level_protocol_definition_accession_id) VALUES (?1, 'run ' || ?1, ?2, ?3, 'proto')",
        rusqlite::params![id, status, meta],
    )
    .expect("insert run");
}

/// Run `id`'s metadata, parsed (JSON null when the column is NULL).
pub fn meta(conn: &Connection, id: &str) -> serde_json::Value {
    let text: Option<String> = conn
        .query_row(
            "SELECT properties_json FROM protocol_runs WHERE accession_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    text.map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null)
}

/// An integer key of run `id`'s metadata, as SQLite reads it.
pub fn meta_int(conn: &Connection, id: &str, key: &str) -> Option<i64> {
    conn.query_row(
        &format!("SELECT json_extract(properties_json, '$.{key}') FROM protocol_runs WHERE accession_id = ?1"),
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

pub fn status(conn: &Connection, id: &str) -> String {
    conn.query_row(
        "SELECT status FROM protocol_runs WHERE accession_id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// Sets a run's lastHeartbeat through plain SQL (as an old executor would have).
pub fn set_heartbeat(conn: &Connection, id: &str, hb: i64) {
    // Aging a run on purpose: allowed by the settings key (a database
    // that is not installed has no settings table, and no guard either).
    let _ = conn.execute(
        "INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')",
        [],
    );
    conn.execute(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?2) \
         WHERE accession_id = ?1",
        rusqlite::params![id, hb],
    )
    .unwrap();
}

/// Runs `f` with the installed triggers switched off on `conn`: what a
/// client without the pure-SQL layer (or an old file) can write.
pub fn without_triggers<R>(conn: &Connection, f: impl FnOnce(&Connection) -> R) -> R {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .unwrap();
    let out = f(conn);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
        .unwrap();
    out
}

/// Moves a run's heartbeat `ms` into the past, as if time had passed: with
/// the triggers off, because the pure-SQL layer (rightly) refuses to move
/// `lastHeartbeat` backwards.
pub fn age_heartbeat(conn: &Connection, id: &str, ms: i64) {
    let changed = without_triggers(conn, |c| {
        c.execute(
            "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', \
             CAST(json_extract(properties_json, '$.lastHeartbeat') AS INTEGER) - ?2) \
             WHERE accession_id = ?1",
            rusqlite::params![id, ms],
        )
    });
    assert_eq!(changed.expect("age heartbeat"), 1, "run {id} not found");
}

/// The first column of every row `sql` gives (with `params`).
pub fn column<T: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map(params, |r| r.get(0))
        .unwrap()
        .collect::<Result<_>>()
        .unwrap()
}

/// Runs a one-value query, giving the error text on failure.
pub fn one<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Result<T, String> {
    conn.query_row(sql, [], |r| r.get(0))
        .map_err(|e| err_text(&e))
}

/// The text of an SQL error (what a client sees).
pub fn err_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        other => other.to_string(),
    }
}

pub fn now_ms() -> i64 {
    run_recovery::now_ms()
}

pub fn integrity_ok(conn: &Connection) {
    let ic: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok");
}

/// The schema and every row of every table, as text: compared before and
/// after a call that must change nothing.
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
    let tables: Vec<String> = column(
        conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        [],
    );
    for t in tables {
        out.extend(table_rows(conn, &t));
    }
    out
}

/// Every row of table `t` (by rowid), each value exactly as stored: compared
/// before and after, where only that table must stay as it was.
pub fn table_rows(conn: &Connection, t: &str) -> Vec<String> {
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
    rows.map(|r| r.unwrap()).collect()
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
