//! Crash to resume with real processes: a worker (`run-recovery worker`)
//! heartbeating with the pulse is killed with SIGKILL; the orphan is found,
//! resumed from its last committed checkpoint, and completed with every step
//! done exactly once. Repeated with the kill at random moments.

mod common;

use std::time::Duration;

use common::*;

/// Kills the worker (SIGKILL on Unix) and returns the wall-clock time of the kill.
/// A worker that already ended by itself (completed) is left as it is.
fn kill9(w: &mut Worker) -> i64 {
    let _ = w.child.kill();
    let t = run_recovery::now_ms();
    w.child.wait().unwrap();
    t
}

/// Resumes run `id` on `conn`; returns (new lease, checkpoint step it reports).
fn resume(conn: &rusqlite::Connection, id: &str) -> (i64, Option<i64>) {
    let out: String = conn
        .query_row("SELECT recover_run(?1, 'resume')", [id], |r| r.get(0))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (v["lease"].as_i64().unwrap(), v["checkpoint_step"].as_i64())
}

#[test]
fn killed_worker_is_found_within_threshold_plus_interval_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (threshold, interval) = (600, 50);
    let path = new_db(dir.path(), "kill.db", "wal", threshold);
    let conn = connect(&path);
    let args = ["--steps", "6", "--step-ms", "80", "--interval", "50"];
    let mut w = spawn_worker(&path, "r1", &args);
    assert!(w.wait_for("step 2/6 done"));
    std::thread::sleep(Duration::from_millis(40));
    let killed = kill9(&mut w);
    assert_eq!(status(&conn, "r1"), "running");

    // Found within threshold + one interval of the kill: the dead worker's
    // last stamp is at most one interval old at the moment of the kill.
    let hb = meta_int(&conn, "r1", "lastHeartbeat").unwrap();
    assert!(!is_orphan_at(&conn, "r1", threshold, hb + threshold));
    assert!(is_orphan_at(
        &conn,
        "r1",
        threshold,
        killed + threshold + interval
    ));
    let found = wait_orphan(&conn, "r1");
    println!(
        "killed at +0 ms, last heartbeat {} ms before the kill, orphan found after {} ms (threshold {threshold}, interval {interval})",
        killed - hb,
        found - killed
    );

    // Resume returns the last committed checkpoint; nothing committed is lost.
    assert_eq!(steps_done(&conn, "r1"), exactly_once(2));
    let (lease, step) = resume(&conn, "r1");
    assert_eq!((lease, step), (2, Some(2)));
    let state: String = conn
        .query_row(
            "SELECT json_extract(properties_json, '$.checkpointState') FROM protocol_runs",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, r#"{"done":2,"last":"aspirate 100 uL buffer"}"#);
    integrity_ok(&conn);

    let w = spawn_worker(&path, "r1", &[&args[..], &["--lease", "2"]].concat());
    let (code, err) = w.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(&conn, "r1"), "completed");
    assert_eq!(steps_done(&conn, "r1"), exactly_once(6));
    integrity_ok(&conn);
}

/// xorshift64*, seeded from the clock unless RUN_RECOVERY_E2E_SEED is set.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_kills_lose_nothing_committed() {
    let seed = std::env::var("RUN_RECOVERY_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| run_recovery::now_ms() as u64 | 1);
    println!("seed {seed} (replay with RUN_RECOVERY_E2E_SEED={seed})");
    let mut rng = Rng(seed);
    let (threshold, interval, steps) = (300, 20, 4);
    let mut worst_gap = 0;
    let (mut before_first_step, mut mid_run, mut after_completion) = (0, 0, 0);
    for round in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let journal = if round % 2 == 0 { "wal" } else { "delete" };
        let path = new_db(dir.path(), "kill.db", journal, threshold);
        let conn = connect(&path);
        // The step's transaction is held open for a while (--tx-ms), so some
        // kills land between the step's write and its checkpoint.
        let args = [
            "--steps",
            "4",
            "--step-ms",
            "12",
            "--tx-ms",
            "8",
            "--interval",
            "20",
        ];
        let mut w = spawn_worker(&path, "r1", &args);
        assert!(w.wait_for(&format!(
            "started pid={} lease=1 from_step=1 pulse_every=20ms",
            w.child.id()
        )));
        std::thread::sleep(Duration::from_millis(rng.below(100)));
        let killed = kill9(&mut w);
        let ctx = format!("round {round} ({journal}, seed {seed})");

        let done = steps_done(&conn, "r1");
        let k = done.len() as i64;
        assert_eq!(done, exactly_once(k), "{ctx}: committed steps");
        assert_eq!(
            meta_int(&conn, "r1", "checkpointStep").unwrap_or(0),
            k,
            "{ctx}"
        );
        integrity_ok(&conn);
        if status(&conn, "r1") == "completed" {
            after_completion += 1;
            assert_eq!(k, steps, "{ctx}");
            continue;
        }
        if k == 0 {
            before_first_step += 1;
        } else {
            mid_run += 1;
        }
        let hb = meta_int(&conn, "r1", "lastHeartbeat").unwrap();
        worst_gap = worst_gap.max(killed - hb);
        assert!(
            is_orphan_at(&conn, "r1", threshold, killed + threshold + interval),
            "{ctx}: not an orphan at kill + threshold + interval; last heartbeat {} ms before the kill",
            killed - hb
        );
        wait_orphan(&conn, "r1");
        let (lease, step) = resume(&conn, "r1");
        assert_eq!(lease, 2, "{ctx}");
        assert_eq!(
            step.unwrap_or(0),
            k,
            "{ctx}: resume returns the last committed checkpoint"
        );

        let w = spawn_worker(&path, "r1", &[&args[..], &["--lease", "2"]].concat());
        let (code, err) = w.finish();
        assert_eq!(code, Some(0), "{ctx}: {err}");
        assert_eq!(status(&conn, "r1"), "completed", "{ctx}");
        assert_eq!(steps_done(&conn, "r1"), exactly_once(steps), "{ctx}");
        integrity_ok(&conn);
    }
    println!(
        "50 kills: {before_first_step} before the first checkpoint, {mid_run} mid-run, \
         {after_completion} after completion; longest heartbeat gap at a kill {worst_gap} ms (interval {interval})"
    );
}

#[test]
fn a_run_resumed_elsewhere_is_not_kept_alive_by_the_old_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_db(dir.path(), "fence.db", "wal", 400);
    let conn = connect(&path);
    let mut w = spawn_worker(
        &path,
        "r1",
        &["--steps", "3", "--step-ms", "400", "--interval", "20"],
    );
    assert!(w.wait_for("step 1/3 done"));
    // The worker is alive; take the run away from it anyway (threshold 0).
    let out: String = loop {
        match conn.query_row("SELECT recover_run('r1', 'resume', 0)", [], |r| r.get(0)) {
            Ok(o) => break o,
            Err(e) => assert!(e.to_string().contains("still alive"), "{e}"),
        }
    };
    assert!(out.contains("\"lease\":2"), "{out}");
    let hb = meta_int(&conn, "r1", "lastHeartbeat").unwrap();
    // The old worker's next checkpoint is refused and it stops.
    let (code, err) = w.finish();
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("stale lease 1"), "{err}");
    // Its pulse never stamped the resumed run.
    assert_eq!(meta_int(&conn, "r1", "lastHeartbeat").unwrap(), hb);
    assert_eq!(steps_done(&conn, "r1"), exactly_once(1));
}
