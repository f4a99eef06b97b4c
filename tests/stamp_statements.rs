//! `run_heartbeat` and `run_checkpoint` run their UPDATE from statements the
//! connection keeps (src/stmt.rs, src/state.rs), not rusqlite's cache. These
//! tests change what those statements were made from under them: the config
//! (a new SQL text, more of them than are kept), the table's schema, the id's
//! type; and check the connection still closes with every statement
//! finalized.
mod common;

use common::*;
use rusqlite::Connection;

fn heartbeat(conn: &Connection, id: &str) -> Result<i64, String> {
    conn.query_row("SELECT run_heartbeat(?1)", [id], |r| r.get(0))
        .map_err(|e| err_text(&e))
}

fn checkpoint(conn: &Connection, id: &str, step: i64) -> Result<i64, String> {
    conn.query_row(
        "SELECT run_checkpoint(?1, ?2, json_object('plate', ?2))",
        rusqlite::params![id, step],
        |r| r.get(0),
    )
    .map_err(|e| err_text(&e))
}

/// The configs the tests move between: each a different set of live
/// statuses, so a different heartbeat and checkpoint SQL text.
const CONFIGS: [&str; 6] = [
    r#"{"live_statuses":["running"]}"#,
    r#"{"live_statuses":["running","paused"]}"#,
    r#"{"live_statuses":["running","paused","pausing"]}"#,
    r#"{"live_statuses":["running","resuming"]}"#,
    r#"{"live_statuses":["running","canceling"]}"#,
    r#"{"live_statuses":["running","intervening"]}"#,
];

#[test]
fn every_new_install_is_stamped_with_its_own_statements() {
    let conn = installed();
    add_run(&conn, "r", "running", Some(r#"{"operator":"ana"}"#));
    add_run(&conn, "p", "paused", Some("{}"));
    // Twice through more configs than the connection keeps statements for:
    // each install makes a new SQL text, prepared and kept (an old one
    // evicted), and the one kept before is found again by its text.
    for round in 0..2 {
        for (i, config) in CONFIGS.iter().enumerate() {
            install(&conn, config);
            let step = (round * CONFIGS.len() + i) as i64;
            assert!(heartbeat(&conn, "r").unwrap() > 0, "{config}");
            assert_eq!(
                checkpoint(&conn, "r", step),
                Ok(meta_int(&conn, "r", "lastHeartbeat").unwrap())
            );
            assert_eq!(meta_int(&conn, "r", "checkpointStep"), Some(step));
            // 'paused' is live only where the config says so: the statement
            // of this install decides, not one made for another.
            let paused_live = config.contains("\"paused\"");
            let p = heartbeat(&conn, "p");
            assert_eq!(p.is_ok(), paused_live, "{config}: {p:?}");
            if !paused_live {
                let e = p.unwrap_err();
                assert!(e.contains("'p' is not live"), "{config}: {e}");
            }
        }
    }
    assert_eq!(meta(&conn, "r")["operator"], "ana");
    integrity_ok(&conn);
    conn.close()
        .expect("every kept statement finalized before close");
}

#[test]
fn a_schema_change_under_a_kept_statement() {
    let conn = installed();
    add_run(&conn, "r", "running", Some("{}"));
    let before = heartbeat(&conn, "r").unwrap();
    conn.execute_batch(
        "ALTER TABLE protocol_runs ADD COLUMN operator TEXT;
         CREATE INDEX ix_operator ON protocol_runs (operator);",
    )
    .unwrap();
    // The kept UPDATE is prepared again by SQLite, against the new schema.
    assert!(heartbeat(&conn, "r").unwrap() >= before);
    assert_eq!(
        checkpoint(&conn, "r", 3),
        Ok(meta_int(&conn, "r", "lastHeartbeat").unwrap())
    );
    // A change that breaks the statement: the error names the function and
    // the cause, and the next call after a fix works again.
    conn.execute_batch("ALTER TABLE protocol_runs RENAME COLUMN properties_json TO meta")
        .unwrap();
    let e = heartbeat(&conn, "r").unwrap_err();
    assert!(e.starts_with("run_heartbeat: "), "{e}");
    assert!(e.contains("properties_json"), "{e}");
    conn.execute_batch("ALTER TABLE protocol_runs RENAME COLUMN meta TO properties_json")
        .unwrap();
    assert!(heartbeat(&conn, "r").unwrap() >= before);
    assert_eq!(meta_int(&conn, "r", "checkpointStep"), Some(3));
    conn.close()
        .expect("every kept statement finalized before close");
}

#[test]
fn integer_and_text_ids_are_bound_as_they_came() {
    let conn = installed();
    // An integer id column: a text id that reads as a number finds the row
    // through the column's affinity, as it did through rusqlite's binding.
    conn.execute_batch(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT, status TEXT, meta TEXT);
         INSERT INTO jobs VALUES (7, 'job', 'running', '{}');",
    )
    .unwrap();
    install(
        &conn,
        r#"{"table":"jobs","id_column":"id","metadata_column":"meta","end_time_column":null,"updated_at_column":null}"#,
    );
    let by_int: i64 = conn
        .query_row("SELECT run_heartbeat(7)", [], |r| r.get(0))
        .unwrap();
    let by_text: i64 = conn
        .query_row("SELECT run_heartbeat('7')", [], |r| r.get(0))
        .unwrap();
    assert!(by_text >= by_int);
    let e = conn
        .query_row("SELECT run_heartbeat(8)", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert!(err_text(&e).contains("run_heartbeat"), "{}", err_text(&e));
    assert!(err_text(&e).contains('8'), "{}", err_text(&e));
    conn.close()
        .expect("every kept statement finalized before close");
}

#[test]
fn a_long_text_id_is_bound_whole() {
    let conn = installed();
    // Bound without a copy: the UPDATE must see every byte (the two ids
    // differ only in their last one).
    let (a, b) = ("x".repeat(10_000) + "a", "x".repeat(10_000) + "b");
    add_run(&conn, &a, "running", Some("{}"));
    add_run(&conn, &b, "running", Some("{}"));
    set_heartbeat(&conn, &a, 1000);
    set_heartbeat(&conn, &b, 1000);
    assert!(heartbeat(&conn, &b).unwrap() > 1000);
    assert_eq!(meta_int(&conn, &a, "lastHeartbeat"), Some(1000));
    assert!(meta_int(&conn, &b, "lastHeartbeat").unwrap() > 1000);
    let e = heartbeat(&conn, &("x".repeat(10_000) + "c")).unwrap_err();
    assert!(e.contains("no run with accession_id"), "{e}");
    conn.close()
        .expect("every kept statement finalized before close");
}
