//! `orphaned_runs` streams the rows of its own prepared SELECT, which it
//! keeps in a pool between queries. These tests drive the cursor the ways
//! SQLite can: two cursors at once, one cursor filtered again for every row
//! of an outer loop, a scan left half-way, the schema changed under a pooled
//! statement, and a SELECT that can no longer be prepared.
mod common;

use common::*;
use rusqlite::Connection;

/// Three live runs, stale at `now_ms` 5,000,000 with a 0 threshold:
/// heartbeats 1,000 (a), 2,000 (b) and 3,000 (c).
fn three_orphans() -> Connection {
    let conn = installed();
    for (id, hb) in [("a", 1000), ("b", 2000), ("c", 3000)] {
        add_run(&conn, id, "running", Some("{}"));
        set_heartbeat(&conn, id, hb);
    }
    conn
}

fn strings(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn two_cursors_at_once_each_run_their_own_statement() {
    let conn = three_orphans();
    let pairs = strings(
        &conn,
        "SELECT a.run_id || b.run_id FROM orphaned_runs(0, 5000000) a, orphaned_runs(0, 5000000) b ORDER BY 1",
    );
    assert_eq!(
        pairs,
        ["aa", "ab", "ac", "ba", "bb", "bc", "ca", "cb", "cc"]
    );
}

#[test]
fn the_inner_loop_of_a_join_is_filtered_again_for_every_outer_row() {
    let conn = three_orphans();
    // now_ms from the outer row: at 1,500 only a is stale, at 2,500 a and b,
    // at 3,500 all three; at 500 none.
    let rows = strings(
        &conn,
        "SELECT v.column1 || ':' || group_concat(o.run_id, ',') \
         FROM (VALUES (500), (1500), (2500), (3500)) v \
         JOIN orphaned_runs o ON o.threshold_ms = 0 AND o.now_ms = v.column1 \
         GROUP BY v.column1 ORDER BY v.column1",
    );
    assert_eq!(rows, ["1500:a", "2500:a,b", "3500:a,b,c"]);
    // A NULL input between two scans gives no rows, and the next scan is whole.
    let rows = strings(
        &conn,
        "SELECT coalesce(v.column2, 'null') || ':' || count(o.run_id) \
         FROM (VALUES (1, 3500), (2, NULL), (3, 3500)) v \
         LEFT JOIN orphaned_runs o ON o.threshold_ms = 0 AND o.now_ms = v.column2 \
         GROUP BY v.column1 ORDER BY v.column1",
    );
    assert_eq!(rows, ["3500:3", "null:0", "3500:3"]);
}

#[test]
fn a_scan_left_half_way_leaves_the_next_query_whole() {
    let conn = three_orphans();
    for _ in 0..3 {
        assert_eq!(
            strings(
                &conn,
                "SELECT run_id FROM orphaned_runs(0, 5000000) LIMIT 1"
            ),
            ["a"]
        );
        assert_eq!(
            strings(&conn, "SELECT run_id FROM orphaned_runs(0, 5000000)"),
            ["a", "b", "c"]
        );
    }
    // A write between two queries is seen: the pooled statement was reset,
    // it holds no old read.
    set_heartbeat(&conn, "a", 5_010_000);
    assert_eq!(
        strings(&conn, "SELECT run_id FROM orphaned_runs(0, 5000000)"),
        ["b", "c"]
    );
    // More than stale_after_ms (30 s) ahead of now: a clock that was wrong
    // wrote it, and the run is listed (age_ms negative).
    set_heartbeat(&conn, "a", 4_000_000_000_000);
    assert_eq!(
        strings(
            &conn,
            "SELECT run_id || ':' || (age_ms < 0) FROM orphaned_runs(0, 5000000)"
        ),
        ["b:0", "c:0", "a:1"]
    );
}

#[test]
fn a_pooled_statement_follows_a_changed_install_and_schema() {
    let conn = three_orphans();
    let ids = || strings(&conn, "SELECT run_id FROM orphaned_runs(0, 5000000)");
    assert_eq!(ids(), ["a", "b", "c"]);
    // A new index changes the schema under the pooled statement.
    conn.execute_batch("CREATE INDEX ix_name ON protocol_runs (name)")
        .unwrap();
    assert_eq!(ids(), ["a", "b", "c"]);
    // Another live status list: the SELECT is a different one.
    install(&conn, r#"{"live_statuses": ["paused"]}"#);
    assert!(ids().is_empty(), "running is no longer live");
    conn.execute(
        "UPDATE protocol_runs SET status = 'paused' WHERE accession_id = 'b'",
        [],
    )
    .unwrap();
    set_heartbeat(&conn, "b", 2000);
    assert_eq!(ids(), ["b"]);
}

#[test]
fn a_select_that_cannot_be_prepared_is_an_error_naming_orphaned_runs() {
    let conn = three_orphans();
    assert_eq!(
        strings(&conn, "SELECT run_id FROM orphaned_runs(0, 5000000)"),
        ["a", "b", "c"]
    );
    // The table is renamed under the installed config (SQLite renames it in
    // the triggers and views too; the settings still name protocol_runs):
    // the changed schema is noticed and the function says what to do.
    conn.execute_batch("ALTER TABLE protocol_runs RENAME TO protocol_runs_old")
        .unwrap();
    let e = conn
        .prepare("SELECT run_id FROM orphaned_runs(0, 5000000)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_err();
    let text = err_text(&e);
    assert!(
        text.starts_with("orphaned_runs: ")
            && text.contains("table 'protocol_runs' is gone")
            && text.contains("run SELECT run_recovery_install() again"),
        "{text}"
    );
}
