//! Shared fixtures for the integration tests: the spec's schema and helpers.
#![allow(dead_code)]

use rusqlite::{Connection, Result};

/// The host schema of the spec (sql/protocol_runs.sql).
pub const SCHEMA: &str = run_recovery::SPEC_SCHEMA;

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
    conn.query_row("SELECT run_recovery_install()", [], |_| Ok(()))
        .unwrap();
    conn
}

pub fn add_run(conn: &Connection, id: &str, status: &str, meta: Option<&str>) {
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, \
         top_level_protocol_definition_accession_id) VALUES (?1, 'run ' || ?1, ?2, ?3, 'proto')",
        rusqlite::params![id, status, meta],
    )
    .unwrap();
}

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
    conn.execute(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?2) \
         WHERE accession_id = ?1",
        rusqlite::params![id, hb],
    )
    .unwrap();
}

/// Runs a one-value query, giving the error text on failure.
pub fn one<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Result<T, String> {
    conn.query_row(sql, [], |r| r.get(0))
        .map_err(|e| e.to_string())
}

/// Every row of the table, for before/after comparisons.
pub fn snapshot(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = conn
        .prepare("SELECT * FROM protocol_runs ORDER BY accession_id")
        .unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect::<Result<Vec<_>>>())
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

pub fn now_ms() -> i64 {
    run_recovery::now_ms()
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
