//! `orphaned_runs` computes its rows in Rust from the live runs' metadata
//! (src/orphan_rows.rs) when it is sure to read them as the view's SQL does,
//! and otherwise runs that SQL. On random live and finished runs, with
//! metadata chosen to tell the two apart (every type where an integer is
//! read, duplicate and escaped keys, nesting, spacing, JSON null, malformed
//! text, NULL), the table-valued function must return exactly the rows of
//! the view's SELECT at the same clock and threshold: the same values, of
//! the same types, in the same order, for every column and for the five
//! facts alone.
//!
//! Cases: `PROPTEST_CASES` (default 256; `make test-stress` runs 5,000).
mod common;

use common::*;
use proptest::prelude::*;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

const NOW: i64 = 1_800_000_000_000;

fn rows(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map(p, |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The view's SELECT at `now`, `threshold`, `include`, as SQL computes it.
fn view_sql() -> String {
    run_recovery::sqlgen::orphan_select(
        &run_recovery::config::Config::default(),
        "?1",
        "?2",
        "?3",
        run_recovery::sqlgen::OrphanColumns::ALL,
    )
}

fn int_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (NOW - 200_000..NOW).prop_map(|v| v.to_string()),
        // The same heartbeat on several runs: their ids decide the order.
        3 => Just((NOW - 100_000).to_string()),
        1 => Just("null".to_string()),
        1 => Just("-0".to_string()),
        1 => Just("0".to_string()),
        1 => Just("-5".to_string()),
        1 => Just("2.5".to_string()),
        1 => Just("1e3".to_string()),
        1 => Just("\"17\"".to_string()),
        1 => Just("true".to_string()),
        1 => Just("[1]".to_string()),
        1 => Just("99999999999999999999".to_string()),
        1 => Just("-9223372036854775808".to_string()),
    ]
}

fn state_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"plate":3,"wells":[1,2]}"#.to_string()),
        Just(r#"{"plate": 3}"#.to_string()),
        Just(r#""a \"q\" \u00e9 é""#.to_string()),
        Just("null".to_string()),
        Just("1.50E+2".to_string()),
        Just("[]".to_string()),
    ]
}

fn member() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("lastHeartbeat"),
        Just("dismissedHeartbeat"),
        Just("checkpointStep"),
        Just("lease"),
        Just("resumes"),
    ];
    prop_oneof![
        6 => (key, int_value()).prop_map(|(k, v)| format!("\"{k}\":{v}")),
        2 => state_value().prop_map(|v| format!("\"checkpointState\":{v}")),
        2 => Just("\"op\": \"ana\"".to_string()),
        1 => Just("\"l\\u0065ase\":4".to_string()),
        1 => Just("\"deck\":{\"lastHeartbeat\":1}".to_string()),
    ]
}

fn metadata() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => proptest::collection::vec(member(), 0..6)
            .prop_map(|m| Some(format!("{{{}}}", m.join(",")))),
        1 => Just(None),
        1 => Just(Some("{oops".to_string())),
        1 => Just(Some("[1,2]".to_string())),
        1 => Just(Some(" {\"lastHeartbeat\":5}".to_string())),
        1 => Just(Some("{'lastHeartbeat':5}".to_string())),
    ]
}

fn status() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        5 => Just("running"),
        2 => Just("PAUSED"),
        1 => Just("Resuming"),
        1 => Just("completed"),
        1 => Just("queued"),
    ]
}

/// A run: its id (a text; some share a heartbeat, so the id decides the
/// order), status and metadata.
fn run() -> impl Strategy<Value = (String, &'static str, Option<String>)> {
    ("[a-d][0-9]{0,2}", status(), metadata())
}

fn db_with(runs: &[(String, &'static str, Option<String>)]) -> Connection {
    let conn = installed();
    for (id, status, meta) in runs {
        if conn
            .query_row(
                "SELECT 1 FROM protocol_runs WHERE accession_id = ?1",
                [id],
                |_| Ok(()),
            )
            .is_ok()
        {
            continue;
        }
        add_run(&conn, id, status, Some("{}"));
        without_triggers(&conn, |c| {
            c.execute(
                "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
                params![id, meta],
            )
        })
        .unwrap();
    }
    conn
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn the_table_returns_the_views_rows(
        runs in proptest::collection::vec(run(), 0..10),
        threshold in prop_oneof![Just(0i64), Just(30_000), Just(100_000), Just(i64::MAX)],
        include in 0..2i64,
    ) {
        let conn = db_with(&runs);
        let want = rows(&conn, &view_sql(), params![NOW, threshold, include]);
        let got = rows(
            &conn,
            "SELECT * FROM orphaned_runs(?1, ?2, ?3)",
            params![threshold, NOW, include],
        );
        prop_assert_eq!(&got, &want);
        // The five facts alone, and the one order the table claims.
        let five = |r: &Vec<Value>| vec![r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone(), r[5].clone()];
        let got5 = rows(
            &conn,
            "SELECT run_id, name, status, last_heartbeat, checkpoint_step FROM orphaned_runs(?1, ?2, ?3)",
            params![threshold, NOW, include],
        );
        prop_assert_eq!(got5, want.iter().map(five).collect::<Vec<_>>());
        let by_age = rows(
            &conn,
            "SELECT * FROM orphaned_runs(?1, ?2, ?3) ORDER BY age_ms DESC",
            params![threshold, NOW, include],
        );
        prop_assert_eq!(by_age.len(), want.len());
    }
}

/// Runs whose metadata the Rust reader is sure of, and one it is not: the
/// answer is the view's either way (the second query runs the view's SQL).
#[test]
fn a_run_it_cannot_read_sends_the_query_to_sql() {
    let runs = vec![
        (
            "a".to_string(),
            "running",
            Some(r#"{"lastHeartbeat":5,"checkpointState":{"x":1}}"#.to_string()),
        ),
        (
            "b".to_string(),
            "running",
            Some(r#"{"lastHeartbeat":5,"lease":3}"#.to_string()),
        ),
        ("c".to_string(), "running", None),
    ];
    let conn = db_with(&runs);
    let sure = rows(&conn, "SELECT * FROM orphaned_runs(0, ?1)", params![NOW]);
    assert_eq!(sure, rows(&conn, &view_sql(), params![NOW, 0, 0]));
    assert_eq!(sure.len(), 3);
    // Equal heartbeats (5, and NULL counting as... not equal to 5): id order.
    assert_eq!(sure[0][0], Value::Text("c".into()));
    assert_eq!(sure[1][0], Value::Text("a".into()));
    assert_eq!(sure[2][0], Value::Text("b".into()));
    assert_eq!(sure[1][6], Value::Text(r#"{"x":1}"#.into()));
    assert_eq!(sure[2][7], Value::Integer(3));
    // A lease written as text: CAST reads "3" as 3; the SQL decides.
    without_triggers(&conn, |c| {
        c.execute(
            r#"UPDATE protocol_runs SET properties_json = '{"lastHeartbeat":5,"lease":"7"}' WHERE accession_id = 'b'"#,
            [],
        )
    })
    .unwrap();
    let unsure = rows(&conn, "SELECT * FROM orphaned_runs(0, ?1)", params![NOW]);
    assert_eq!(unsure, rows(&conn, &view_sql(), params![NOW, 0, 0]));
    assert_eq!(unsure[2][7], Value::Integer(7));
}

/// Ties are ordered as SQLite orders the id column: its collation (NOCASE
/// here) and its order of types (integers before texts), not Rust's.
#[test]
fn equal_heartbeats_follow_sqlites_order_of_ids() {
    let conn = db();
    conn.execute_batch("CREATE TABLE jobs (id ANY COLLATE NOCASE, state TEXT, meta TEXT) STRICT;")
        .unwrap();
    install(
        &conn,
        r#"{"table":"jobs","id_column":"id","status_column":"state","metadata_column":"meta","name_column":null}"#,
    );
    let beat = r#"{"lastHeartbeat":5}"#;
    for id in [
        Value::Text("B".into()),
        Value::Text("a".into()),
        Value::Integer(10),
        Value::Text("c".into()),
        Value::Integer(9),
        Value::Real(9.5),
    ] {
        conn.execute(
            "INSERT INTO jobs (id, state, meta) VALUES (?1, 'running', ?2)",
            params![id, beat],
        )
        .unwrap();
    }
    without_triggers(&conn, |c| c.execute("UPDATE jobs SET meta = ?1", [beat])).unwrap();
    let got = rows(
        &conn,
        "SELECT run_id FROM orphaned_runs(0, ?1)",
        params![NOW],
    );
    let cfg = run_recovery::config::Config::from_stored(
        &one::<String>(
            &conn,
            "SELECT value FROM run_recovery_settings WHERE key = 'config'",
        )
        .unwrap(),
    )
    .unwrap();
    let view = run_recovery::sqlgen::orphan_select(
        &cfg,
        "?1",
        "?2",
        "?3",
        run_recovery::sqlgen::OrphanColumns::ALL,
    );
    let want: Vec<Vec<Value>> = rows(&conn, &view, params![NOW, 0, 0])
        .into_iter()
        .map(|r| vec![r[0].clone()])
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        got.concat(),
        vec![
            Value::Integer(9),
            Value::Real(9.5),
            Value::Integer(10),
            // NOCASE: a before B (the bytes would put B first).
            Value::Text("a".into()),
            Value::Text("B".into()),
            Value::Text("c".into()),
        ]
    );
}
