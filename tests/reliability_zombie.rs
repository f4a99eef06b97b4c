//! Zombies: an executor that was declared dead (its run resumed by another
//! client, or failed) wakes up and writes. Every write that carries its old
//! lease is refused — through the extension (`run_heartbeat` /
//! `run_checkpoint` with the old lease) and through pure SQL (a connection
//! without the extension writing back the metadata it read earlier) — and
//! the refused write changes nothing.

mod common;

use run_recovery::sqlgen::STALE_LEASE_MESSAGE;
use rusqlite::Connection;

use common::*;

const ID: &str = "9b2e8f0c1d3a4b5c6d7e8f9a0b1c2d3e";

struct World {
    _dir: tempfile::TempDir,
    /// The old executor, with the extension.
    zombie: Connection,
    /// The old executor's sibling that only has plain SQLite (e.g. the browser app).
    plain: Connection,
    /// The client that recovers the run (and later the new executor).
    rescuer: Connection,
    /// The metadata text the old executor read before it went quiet.
    old_text: String,
}

fn world(status: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (path, rescuer) = fresh_db(dir.path(), "{}");
    add_run(
        &rescuer,
        ID,
        status,
        Some(r#"{"operator":"ada","plate":"P1"}"#),
    );
    let zombie = open(&path);
    let plain = open_plain(&path);
    // The executor works normally with lease 1 …
    zombie
        .query_row("SELECT run_heartbeat(?1, 1)", [ID], |r| r.get::<_, i64>(0))
        .unwrap();
    zombie
        .query_row(
            "SELECT run_checkpoint(?1, 3, '{\"well\":\"A3\"}', 1)",
            [ID],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    let old_text: String = plain
        .query_row(
            "SELECT properties_json FROM protocol_runs WHERE accession_id = ?1",
            [ID],
            |r| r.get(0),
        )
        .unwrap();
    // … then goes quiet for two minutes.
    age_heartbeat(&rescuer, ID, 120_000);
    World {
        _dir: dir,
        zombie,
        plain,
        rescuer,
        old_text,
    }
}

fn recover(w: &World, action: &str) -> serde_json::Value {
    let out: String = w
        .rescuer
        .query_row("SELECT recover_run(?1, ?2)", [ID, action], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Runs `sql` on `conn`, expects an error containing every `needles`, and
/// checks that nothing in the database changed.
fn refused(
    w: &World,
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    needles: &[&str],
) {
    let before = snapshot(&w.rescuer);
    let e = conn
        .query_row(sql, params, |_| Ok(()))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(()),
            e => Err(e),
        })
        .expect_err(&format!("a zombie write went through: {sql}"));
    let msg = err_text(&e);
    for n in needles {
        assert!(msg.contains(n), "{sql}: error {msg:?} lacks {n:?}");
    }
    assert_eq!(
        snapshot(&w.rescuer),
        before,
        "{sql}: a refused write changed the database"
    );
}

fn zombie_writes_are_refused(w: &World, ext_needle: &str) {
    refused(
        w,
        &w.zombie,
        "SELECT run_heartbeat(?1, 1)",
        &[&ID],
        &["run_heartbeat: ", ext_needle],
    );
    refused(
        w,
        &w.zombie,
        "SELECT run_checkpoint(?1, 4, '{\"well\":\"A4\"}', 1)",
        &[&ID],
        &["run_checkpoint: ", ext_needle],
    );
    // Pure SQL: writing back the old metadata as it was read …
    refused(
        w,
        &w.plain,
        "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
        &[&ID, &w.old_text],
        &[STALE_LEASE_MESSAGE],
    );
    // … or read-modify-write on the old text (the app records its progress) …
    refused(
        w,
        &w.plain,
        "UPDATE protocol_runs SET properties_json = json_set(?2, '$.progress', 4, '$.checkpointStep', 4) \
         WHERE accession_id = ?1",
        &[&ID, &w.old_text],
        &[STALE_LEASE_MESSAGE],
    );
    // … or a zombie that also tries to put the status back.
    refused(
        w,
        &w.plain,
        "UPDATE protocol_runs SET status = 'running', properties_json = ?2 WHERE accession_id = ?1",
        &[&ID, &w.old_text],
        &[STALE_LEASE_MESSAGE],
    );
    // The same through the extension's connection (the triggers do not care who writes).
    refused(
        w,
        &w.zombie,
        "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
        &[&ID, &w.old_text],
        &[STALE_LEASE_MESSAGE],
    );
}

#[test]
fn a_zombie_of_a_resumed_run_is_refused_everywhere() {
    let w = world("running");
    let out = recover(&w, "resume");
    assert_eq!(out["lease"], 2);
    assert_eq!(out["checkpoint_step"], 3);
    zombie_writes_are_refused(&w, "stale lease 1");
    // The new executor carries on with lease 2.
    w.rescuer
        .query_row(
            "SELECT run_checkpoint(?1, 4, '{\"well\":\"A4\"}', 2)",
            [ID],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    let m = meta(&w.rescuer, ID);
    assert_eq!(
        (m["lease"].as_i64(), m["checkpointStep"].as_i64()),
        (Some(2), Some(4))
    );
    // And the zombie is still refused after the new executor moved on.
    zombie_writes_are_refused(&w, "stale lease 1");
}

#[test]
fn a_zombie_of_a_failed_run_is_refused_everywhere() {
    for live in ["running", "PAUSED", "Intervening"] {
        let w = world(live);
        let out = recover(&w, "fail");
        assert_eq!(out["lease"], 2);
        let failed = status(&w.rescuer, ID);
        assert_eq!(failed.to_lowercase(), "failed");
        zombie_writes_are_refused(&w, "is not live");
        // Even without a lease, our functions do not bring a failed run back.
        refused(
            &w,
            &w.zombie,
            "SELECT run_heartbeat(?1)",
            &[&ID],
            &["run_heartbeat: ", "is not live"],
        );
        refused(
            &w,
            &w.zombie,
            "SELECT run_checkpoint(?1, 9)",
            &[&ID],
            &["run_checkpoint: ", "is not live"],
        );
        assert_eq!(status(&w.rescuer, ID), failed);
    }
}

#[test]
fn a_zombie_write_that_drops_the_recovery_keys_cannot_roll_them_back() {
    let w = world("running");
    recover(&w, "resume");
    let before = meta(&w.rescuer, ID);
    // The old executor's app code rewrites the metadata from its own model,
    // which never knew the recovery keys (no lease, so the guard cannot tell).
    w.plain
        .execute(
            "UPDATE protocol_runs SET properties_json = '{\"operator\":\"ada\",\"plate\":\"P2\"}' \
             WHERE accession_id = ?1",
            [ID],
        )
        .unwrap();
    let after = meta(&w.rescuer, ID);
    assert_eq!(after["plate"], "P2", "the app's own write is kept");
    for key in [
        "lease",
        "lastHeartbeat",
        "checkpointStep",
        "checkpointState",
        "resumes",
        "recoveryLog",
    ] {
        assert_eq!(after[key], before[key], "{key} was merged back");
    }
    // So the zombie is still fenced off afterwards.
    zombie_writes_are_refused(&w, "stale lease 1");
}
