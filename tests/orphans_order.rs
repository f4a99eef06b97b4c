//! `orphaned_runs` hands its rows out in the order of its query, and tells
//! SQLite so for the one ORDER BY that order satisfies. Every ORDER BY is
//! checked here against SQLite's own sort of the same rows, with NULL,
//! negative and extreme heartbeats, so a claim the rows do not keep fails.
mod common;

use common::*;
use rusqlite::types::Value;
use rusqlite::Connection;

/// Runs whose heartbeats are -5, NULL (removed), 7, 7 again, i64::MIN and a
/// malformed metadata text (no fields at all), all live and stale.
fn db_with_odd_heartbeats() -> Connection {
    let conn = installed();
    for (id, meta) in [
        ("r-neg", r#"{"lastHeartbeat":-5}"#),
        ("r-null", r#"{"app":1}"#),
        ("r-pos", r#"{"lastHeartbeat":7}"#),
        ("r-pos-twin", r#"{"lastHeartbeat":7}"#),
        ("r-min", r#"{"lastHeartbeat":-9223372036854775808}"#),
        ("r-bad", "not json"),
        ("a-first", r#"{"lastHeartbeat":1000}"#),
    ] {
        add_run_as_is(&conn, id, "running", meta);
    }
    conn
}

/// Adds a live run with exactly `meta`: the install's triggers stamp a run
/// that goes live, so the metadata the test means is put back, as a client
/// without the layer would write it.
fn add_run_as_is(conn: &Connection, id: &str, status: &str, meta: &str) {
    add_run(conn, id, status, Some(meta));
    without_triggers(conn, |c| {
        c.execute(
            "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
            [id, meta],
        )
        .unwrap();
    });
}

const CALL: &str = "orphaned_runs(0, 5000000)";

/// Every ORDER BY checked: each column both ways (but the checkpoint state,
/// JSON text), and some pairs.
fn orderings() -> Vec<String> {
    let cols = COLUMNS.iter().filter(|c| **c != "checkpoint_state");
    let mut out = Vec::new();
    for c in cols {
        out.push(c.to_string());
        out.push(format!("{c} DESC"));
    }
    out.extend(
        [
            "last_heartbeat, run_id",
            "last_heartbeat DESC, run_id DESC",
            "age_ms DESC, run_id",
            "age_ms, run_id",
            "age_ms DESC, run_id DESC",
            "last_heartbeat NULLS LAST",
        ]
        .map(String::from),
    );
    out
}

fn rows(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The keys of `order` (its terms without ASC/DESC/NULLS), for comparing
/// only what the ORDER BY decides (ties may come in any order).
fn keys(order: &str) -> String {
    order
        .split(',')
        .map(|t| t.split_whitespace().next().unwrap())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_order_by_matches_sqlites_own_sort() {
    let conn = db_with_odd_heartbeats();
    conn.execute_batch(&format!("CREATE TEMP TABLE copied AS SELECT * FROM {CALL}"))
        .unwrap();
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM temp.copied").unwrap(),
        7,
        "every odd run is an orphan"
    );
    for order in orderings() {
        let k = keys(&order);
        let ours = rows(&conn, &format!("SELECT {k} FROM {CALL} ORDER BY {order}"));
        let sqlite = rows(
            &conn,
            &format!("SELECT {k} FROM temp.copied ORDER BY {order}"),
        );
        assert_eq!(ours, sqlite, "ORDER BY {order}");
    }
}

#[test]
fn null_heartbeat_sorts_first_as_sqlite_puts_it() {
    let conn = db_with_odd_heartbeats();
    let ids: Vec<String> = rows(
        &conn,
        &format!("SELECT run_id FROM {CALL} WHERE run_id IN ('r-neg', 'r-null', 'r-pos') ORDER BY last_heartbeat"),
    )
    .into_iter()
    .map(|r| match &r[0] {
        Value::Text(t) => t.clone(),
        other => panic!("run_id {other:?}"),
    })
    .collect();
    assert_eq!(ids, ["r-null", "r-neg", "r-pos"]);
}

fn plan(conn: &Connection, sql: &str) -> String {
    rows(conn, &format!("EXPLAIN QUERY PLAN {sql}"))
        .into_iter()
        .map(|r| format!("{:?}", r[3]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn only_age_ms_desc_is_claimed_and_sqlite_sorts_the_rest() {
    let conn = db_with_odd_heartbeats();
    for order in orderings() {
        let p = plan(&conn, &format!("SELECT * FROM {CALL} ORDER BY {order}"));
        let sorted_by_sqlite = p.contains("USE TEMP B-TREE FOR ORDER BY");
        assert_eq!(
            !sorted_by_sqlite,
            order == "age_ms DESC",
            "ORDER BY {order}: {p}"
        );
    }
    // The claim holds without the inputs too (the configured threshold).
    let p = plan(&conn, "SELECT * FROM orphaned_runs ORDER BY age_ms DESC");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

/// The ten visible columns, in declaration order.
const COLUMNS: [&str; 10] = run_recovery::sqlgen::ORPHAN_COLUMNS;

fn project(rows: &[Vec<Value>], mask: usize) -> Vec<Vec<Value>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, v)| v.clone())
                .collect()
        })
        .collect()
}

fn select(mask: usize) -> String {
    COLUMNS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `orphaned_runs` computes only the columns a query reads (SQLite's
/// colUsed): every one of the 1,023 non-empty sets of columns reads, value
/// for value and in the same order, what `SELECT *` reads; `count(*)` (no
/// column) counts the same rows; with and without dismissed orphans. The
/// view, which SQLite flattens into the query, agrees on every set too.
#[test]
fn every_set_of_columns_reads_what_select_star_reads() {
    let conn = db_with_odd_heartbeats();
    let dismissed = r#"{"lastHeartbeat":9,"dismissedHeartbeat":9,"checkpointStep":3,"checkpointState":{"w":[1,2]},"lease":4,"resumes":2}"#;
    let undismissed = r#"{"lastHeartbeat":11,"dismissedHeartbeat":9,"checkpointStep":2,"checkpointState":"s","lease":2,"resumes":1}"#;
    for (id, meta) in [("r-dismissed", dismissed), ("r-beat-since", undismissed)] {
        add_run_as_is(&conn, id, "PAUSED", meta);
    }
    for (include, expect) in [(0, 8), (1, 9)] {
        let call = format!("orphaned_runs(0, 5000000, {include})");
        let all = rows(&conn, &format!("SELECT * FROM {call}"));
        assert_eq!(all.len(), expect, "include_dismissed = {include}");
        assert!(
            all.iter().any(|r| r[7] == Value::Integer(4)) == (include == 1),
            "the dismissed run's lease is read only when it is listed"
        );
        assert_eq!(
            one::<i64>(&conn, &format!("SELECT count(*) FROM {call}")).unwrap(),
            expect as i64
        );
        for mask in 1..(1 << COLUMNS.len()) {
            let got = rows(&conn, &format!("SELECT {} FROM {call}", select(mask)));
            assert_eq!(got, project(&all, mask), "SELECT {}", select(mask));
        }
    }
    // The view (the configured threshold, real time; dismissed hidden):
    // every set without age_ms, which moves with the clock.
    let all = rows(&conn, "SELECT * FROM orphaned_runs");
    assert_eq!(all.len(), 8);
    let age = 1 << 4;
    for mask in (1..(1 << COLUMNS.len())).filter(|m| m & age == 0) {
        let view = rows(
            &conn,
            &format!(
                "SELECT {} FROM run_recovery_orphans ORDER BY age_ms DESC, run_id",
                select(mask)
            ),
        );
        assert_eq!(view, project(&all, mask), "view: SELECT {}", select(mask));
    }
}
