//! Orphan detection is served from the status index, not a scan of every run.
mod common;

use common::*;

fn big_db(runs: i64, live: i64) -> rusqlite::Connection {
    let conn = db();
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut ins = conn
            .prepare(
                "INSERT INTO protocol_runs (accession_id, name, status, properties_json, \
                 top_level_protocol_definition_accession_id) VALUES (?1, 'r', ?2, ?3, 'p')",
            )
            .unwrap();
        for i in 0..runs {
            let status = if i < live {
                "running"
            } else if i % 7 == 0 {
                "failed"
            } else {
                "completed"
            };
            let meta = format!(r#"{{"lastHeartbeat": {}, "app": "x{i}"}}"#, 1_000 + i);
            ins.execute(rusqlite::params![format!("{i:032}"), status, meta])
                .unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    one::<String>(&conn, "SELECT run_recovery_install()").unwrap();
    conn
}

fn plan(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let params = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
    stmt.query_map(rusqlite::params_from_iter(params), |r| {
        r.get::<_, String>(3)
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect::<Vec<_>>()
    .join("\n")
}

/// Counts virtual-machine steps of everything the connection runs (nested
/// statements included) while `sql` runs.
fn vm_work(conn: &rusqlite::Connection, sql: &str) -> (i64, u64) {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = counter.clone();
    conn.progress_handler(
        100,
        Some(move || {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        }),
    )
    .unwrap();
    let rows: i64 = one(conn, sql).unwrap();
    conn.progress_handler(0, None::<fn() -> bool>).unwrap();
    (
        rows,
        counter.load(std::sync::atomic::Ordering::Relaxed) * 100,
    )
}

#[test]
fn the_view_and_the_function_search_the_status_index() {
    let conn = big_db(100_000, 100);
    let view = plan(&conn, "SELECT * FROM run_recovery_orphans");
    assert!(
        view.contains("USING INDEX ix_protocol_runs_status (status=?)"),
        "{view}"
    );
    assert!(!view.contains("SCAN protocol_runs"), "{view}");
    let cfg = run_recovery::config::Config::default();
    let inner = run_recovery::sqlgen::FunctionSql::new(&cfg)
        .orphans_for(run_recovery::sqlgen::OrphanColumns::ALL);
    let p = plan(&conn, &inner);
    assert!(
        p.contains("USING INDEX ix_protocol_runs_status (status=?)"),
        "{p}"
    );

    // Behaviour, not just the plan: the work done does not grow with history.
    let (rows, steps_100k) = vm_work(&conn, "SELECT count(*) FROM orphaned_runs");
    assert_eq!(rows, 100);
    let (rows, steps_view) = vm_work(&conn, "SELECT count(*) FROM run_recovery_orphans");
    assert_eq!(rows, 100);
    let (_, full_scan) = vm_work(
        &conn,
        "SELECT count(*) FROM protocol_runs WHERE lower(status) = 'running'",
    );
    assert!(
        steps_100k * 10 < full_scan,
        "orphaned_runs: {steps_100k} VM steps vs a full scan's {full_scan}"
    );
    assert!(
        steps_view * 10 < full_scan,
        "view: {steps_view} VM steps vs a full scan's {full_scan}"
    );
}

#[test]
fn the_work_stays_flat_as_history_grows() {
    let small = big_db(1_000, 100);
    let large = big_db(100_000, 100);
    let (_, s) = vm_work(&small, "SELECT count(*) FROM orphaned_runs");
    let (_, l) = vm_work(&large, "SELECT count(*) FROM orphaned_runs");
    assert!(
        l <= s * 2 + 1000,
        "1k runs: {s} steps, 100k runs: {l} steps"
    );
}
