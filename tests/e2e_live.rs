//! A live worker is never reported as an orphan while its pulse heartbeats,
//! even with every core busy and another connection holding the write lock
//! 40 % of the time. (Its own test binary, so the load does not slow the
//! other end-to-end tests.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn a_heartbeating_worker_is_never_an_orphan_under_load() {
    let dir = tempfile::tempdir().unwrap();
    // A threshold of 10 intervals, as the docs recommend.
    let (threshold, interval) = (500, 50);
    let path = new_db(dir.path(), "live.db", "delete", threshold);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    // Burn every core.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for _ in 0..cores {
        let stop = stop.clone();
        load.push(std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::hint::black_box(x);
            }
        }));
    }
    // And keep the database busy: a write transaction of 20 ms every 50 ms.
    {
        let stop = stop.clone();
        let path = path.clone();
        load.push(std::thread::spawn(move || {
            let conn = connect(&path);
            conn.execute_batch("CREATE TABLE IF NOT EXISTS noise (x)")
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO noise VALUES (randomblob(100));")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
                conn.execute_batch("COMMIT").unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        }));
    }
    let conn = connect(&path);
    let mut w = spawn_worker(
        &path,
        "r1",
        &["--steps", "80", "--step-ms", "50", "--interval", "50"],
    );
    assert!(w.wait_for(&format!(
        "started pid={} lease=1 from_step=1 pulse_every={interval}ms",
        w.child.id()
    )));
    let (mut checks, mut oldest) = (0u32, 0);
    // Watch for 3 s under load, then let the worker finish.
    let watch = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < watch && w.child.try_wait().unwrap().is_none() {
        let listed: i64 = conn
            .query_row(
                "SELECT count(*) FROM orphaned_runs WHERE run_id = 'r1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let now = run_recovery::now_ms();
        let hb = meta_int(&conn, "r1", "lastHeartbeat").unwrap();
        if status(&conn, "r1") == "running" {
            assert_eq!(
                listed,
                0,
                "a live worker was reported as an orphan: last heartbeat {} ms ago",
                now - hb
            );
            oldest = oldest.max(now - hb);
        }
        checks += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        status(&conn, "r1"),
        "running",
        "the worker is still at work after the watch"
    );
    let (code, err) = w.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(&conn, "r1"), "completed");
    assert_eq!(steps_done(&conn, "r1"), exactly_once(80));
    // The checks are what gives the test its power: at least one per 100 ms
    // on average, five per threshold. (Under this load a check takes 10 ms of
    // sleep plus three queries that may wait for the write lock, so asking
    // for one per 30 ms made the test fail on a slow machine without the
    // worker ever being reported.)
    assert!(checks >= 30, "only {checks} checks in 3 s");
    println!(
        "{checks} checks with {cores} cores busy and the write lock contended: never an orphan; \
         oldest heartbeat seen {oldest} ms (threshold {threshold}, interval {interval})"
    );
}
