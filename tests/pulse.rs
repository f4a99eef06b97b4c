//! `run_heartbeat_every` / `run_heartbeat_stop`: a pulse stamps from its own
//! thread and connection until stopped, and stops by itself at the first
//! refusal. Observed through SQL only: the heartbeat in the row and the
//! connection's pulses as `run_recovery_debug()` shows them.
mod common;

use std::time::{Duration, Instant};

use common::*;
use rusqlite::Connection;
use serde_json::Value;

/// A database file with two runs: `r1` running, `r2` queued.
fn setup(dir: &tempfile::TempDir, config: &str) -> (std::path::PathBuf, Connection) {
    let (path, conn) = fresh_db(dir.path(), config);
    add_run(&conn, "r1", "running", None);
    add_run(&conn, "r2", "queued", None);
    (path, conn)
}

/// The pulse of `id` as `run_recovery_debug()` shows it.
fn pulse(conn: &Connection, id: &str) -> Value {
    let debug: String = one(conn, "SELECT run_recovery_debug()").unwrap();
    let v: Value = serde_json::from_str(&debug).unwrap();
    v["pulses"][id].clone()
}

fn count(p: &Value, what: &str) -> u64 {
    p[what]
        .as_u64()
        .unwrap_or_else(|| panic!("no {what} in {p}"))
}

/// Polls `cond` every 5 ms; fails the test after 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until the pulse of `id` has left its loop; returns it.
fn wait_finished(conn: &Connection, id: &str) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("the pulse of {id} to finish"), || {
        last = pulse(conn, id);
        last["finished"] == true
    });
    last
}

/// Why the pulse of `id` finished, once it has.
fn stop_reason(conn: &Connection, id: &str) -> String {
    let p = wait_finished(conn, id);
    p["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {p}"))
        .to_string()
}

fn heartbeat(conn: &Connection, id: &str) -> i64 {
    meta(conn, id)["lastHeartbeat"].as_i64().unwrap()
}

/// Asserts that nothing stamps run `id` any more (a stamp already in flight
/// when it was stopped may land during the first 100 ms).
fn assert_no_more_stamps(conn: &Connection, id: &str) {
    std::thread::sleep(Duration::from_millis(100));
    let settled = heartbeat(conn, id);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        heartbeat(conn, id),
        settled,
        "run {id} is still being stamped"
    );
}

#[test]
fn stamps_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, conn) = setup(&dir, "{}");
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10)").unwrap(),
        1
    );
    let first = heartbeat(&conn, "r1");
    wait_until("3 stamps", || count(&pulse(&conn, "r1"), "stamps") >= 3);
    assert!(heartbeat(&conn, "r1") > first);
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_stop('r1')").unwrap(),
        1
    );
    assert_eq!(
        pulse(&conn, "r1"),
        Value::Null,
        "a stopped pulse is forgotten"
    );
    assert_no_more_stamps(&conn, "r1");
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_stop('r1')").unwrap(),
        0,
        "nothing left to stop"
    );
}

#[test]
fn stops_at_the_first_tick_after_a_resume_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = setup(&dir, "{}");
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 20)").unwrap(),
        1
    );
    let other = open(&path);
    // Threshold 0: the run counts as orphaned as soon as its heartbeat is 1 ms old.
    let outcome: String = loop {
        match one::<String>(&other, "SELECT recover_run('r1', 'resume', 0)") {
            Ok(o) => break o,
            Err(e) => assert!(e.contains("still alive"), "{e}"),
        }
    };
    assert!(outcome.contains("\"lease\":2"), "{outcome}");
    let after_resume = pulse(&conn, "r1");
    let hb = heartbeat(&other, "r1");
    let p = wait_finished(&conn, "r1");
    assert_eq!(
        p["reason"].as_str().unwrap(),
        "run_heartbeat_every: stale lease 1 for run 'r1', found lease 2: the run was recovered \
         by another client, this executor must stop"
    );
    // The first attempt after the resume (one interval at most) stopped it,
    // and nothing it did kept the run alive.
    assert!(
        count(&p, "attempts") - count(&after_resume, "attempts") <= 1,
        "{p} {after_resume}"
    );
    assert_eq!(count(&p, "stamps"), count(&after_resume, "stamps"));
    assert_eq!(heartbeat(&other, "r1"), hb);
    assert_eq!(meta(&other, "r1")["lease"], 2);
}

/// A pulse stops by itself at the first refusal: the run finished, or
/// run_recovery was uninstalled.
#[test]
fn stops_when_the_run_is_finished_or_run_recovery_uninstalled() {
    for (change, why) in [
        (
            "UPDATE protocol_runs SET status = 'completed' WHERE accession_id = 'r1'",
            "run_heartbeat_every: run 'r1' is not live, found status 'completed'",
        ),
        (
            "SELECT run_recovery_uninstall()",
            "run_heartbeat_every: run_recovery is not installed",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn) = setup(&dir, "{}");
        one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10)").unwrap();
        conn.execute_batch(change).unwrap();
        let reason = stop_reason(&conn, "r1");
        assert!(reason.starts_with(why), "{change}: {reason}");
    }
}

#[test]
fn busy_is_retried_never_a_lost_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = setup(&dir, "{}");
    conn.busy_timeout(Duration::from_millis(20)).unwrap();
    one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10)").unwrap();
    let blocker = open_plain(&path);
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    wait_until("3 busy retries", || {
        let p = pulse(&conn, "r1");
        assert_eq!(p["finished"], false, "busy must not stop the pulse: {p}");
        count(&p, "busy") >= 3
    });
    blocker.execute_batch("COMMIT").unwrap();
    let stamps = count(&pulse(&conn, "r1"), "stamps");
    wait_until("a stamp after the lock", || {
        count(&pulse(&conn, "r1"), "stamps") > stamps
    });
    assert_eq!(pulse(&conn, "r1")["finished"], false);
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_stop('r1')").unwrap(),
        1
    );
}

#[test]
fn closing_the_connection_signals_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = setup(&dir, "{}");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10)").unwrap(),
        1
    );
    // Hold the write lock so the pulse sits in its 5 s busy wait.
    let blocker = open_plain(&path);
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    wait_until("an attempt", || count(&pulse(&conn, "r1"), "attempts") >= 1);
    let started = Instant::now();
    conn.close().map_err(|(_, e)| e).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close waited for the pulse: {:?}",
        started.elapsed()
    );
    blocker.execute_batch("COMMIT").unwrap();
    assert_no_more_stamps(&blocker, "r1");
}

#[test]
fn refusals_name_the_function_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let (_, conn) = setup(&dir, "{\"stale_after_ms\": 1000}");
    let err = |sql: &str| one::<i64>(&conn, sql).unwrap_err();
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
    assert_eq!(
        err("SELECT run_heartbeat_every('r1', 1000)"),
        "run_heartbeat_every: interval_ms must be below stale_after_ms (1000), or the run would \
         look orphaned between two beats, found 1000"
    );
    assert_eq!(
        err("SELECT run_heartbeat_stop(NULL)"),
        "run_heartbeat_stop: run id must be text or an integer, found NULL"
    );
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_stop('r1')").unwrap(),
        0
    );
    assert_eq!(
        one::<String>(&conn, "SELECT run_recovery_debug() ->> '$.pulses'").unwrap(),
        "{}",
        "no refused call left a pulse behind"
    );
}

#[test]
fn refused_for_memory_and_temporary_databases() {
    for path in [":memory:", ""] {
        let conn = Connection::open(path).unwrap();
        run_recovery::register(&conn).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        one::<String>(&conn, "SELECT run_recovery_install()").unwrap();
        assert_eq!(
            one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 100)").unwrap_err(),
            "run_heartbeat_every: a pulse opens its own connection to the database file, \
             so it needs a file on disk, found an in-memory or temporary database"
        );
    }
}

#[test]
fn a_new_pulse_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, conn) = setup(&dir, "{}");
    one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10)").unwrap();
    one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10, 1)").unwrap();
    let stamps = count(&pulse(&conn, "r1"), "stamps");
    wait_until("the new pulse stamps", || {
        count(&pulse(&conn, "r1"), "stamps") > stamps
    });
    // One stop ends all stamping: the replaced pulse was stopped already.
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat_stop('r1')").unwrap(),
        1
    );
    assert_no_more_stamps(&conn, "r1");
}

/// The pulse opens the file as the caller did: through the caller's VFS
/// (here `unix-dotfile`, whose locks the default VFS does not see) and with
/// its URI parameters. Under the default VFS the pulse would write through
/// the caller's EXCLUSIVE transaction; with the caller's, it waits for it.
#[test]
fn the_pulse_opens_the_file_through_the_callers_vfs() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_db(dir.path(), "dot.db", "delete", 30_000);
    let uri = format!("file:{path}?vfs=unix-dotfile&cache=private");
    let conn = Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    run_recovery::register(&conn).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    one::<i64>(&conn, "SELECT run_heartbeat_every('r1', 10)").unwrap();
    wait_until("the pulse stamps", || {
        count(&pulse(&conn, "r1"), "stamps") >= 2
    });
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let held_from = heartbeat(&conn, "r1");
    let stamps = count(&pulse(&conn, "r1"), "stamps");
    std::thread::sleep(Duration::from_millis(300));
    // Nothing landed inside the transaction: the pulse saw the dot-file lock
    // (through the default VFS it would have stamped the file meanwhile).
    assert_eq!(count(&pulse(&conn, "r1"), "stamps"), stamps);
    assert_eq!(heartbeat(&conn, "r1"), held_from);
    conn.execute_batch(
        "UPDATE protocol_runs SET name = 'renamed in the transaction' WHERE accession_id = 'r1'; COMMIT",
    )
    .unwrap();
    wait_until("a stamp after the commit", || {
        count(&pulse(&conn, "r1"), "stamps") > stamps
    });
    let check: String = one(&conn, "PRAGMA integrity_check").unwrap();
    assert_eq!(check, "ok");
    let name: String = one(
        &conn,
        "SELECT name FROM protocol_runs WHERE accession_id = 'r1'",
    )
    .unwrap();
    assert_eq!(name, "renamed in the transaction");
    one::<i64>(&conn, "SELECT run_heartbeat_stop('r1')").unwrap();
}
