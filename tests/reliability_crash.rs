//! Crash loop: a worker process runs a protocol (heartbeats, autocommit
//! checkpoints, and checkpoints inside a larger application transaction) and
//! is killed with SIGKILL at a random moment. After every kill:
//! `PRAGMA integrity_check` is ok, no committed checkpoint is lost (the
//! worker prints `@@ckpt N` only after COMMIT returned, so the database's
//! `checkpointStep` must be >= the last N printed), and once its heartbeat is
//! stale the run is listed by `orphaned_runs` and by the
//! `run_recovery_orphans` view; it is then resumed from that checkpoint.
//!
//! `make test` runs [`crash_loop`] (20 kills, half on a WAL database, half
//! on a rollback-journal one); `make test-stress` runs [`crash_loop_full`]
//! (200 kills). Override with `RUN_RECOVERY_KILLS`, replay with
//! `RUN_RECOVERY_SEED`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn main() {
    run_tests(
        &[
            Test::new("crash_loop", crash_loop, None),
            Test::new(
                "crash_loop_full",
                crash_loop_full,
                Some("stress: 200 SIGKILLs; run by `make test-stress`"),
            ),
        ],
        serve,
    );
}

/// stale_after_ms for the crash databases: small, so a killed run is stale at once.
const STALE_MS: i64 = 40;

/// Worker side (mode "crash"): args are db path, run id, lease, seed.
/// Runs until killed.
fn serve(mode: &str, args: &[String]) {
    assert_eq!(mode, "crash");
    let path = Path::new(&args[0]);
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    run_recovery::register(&conn).unwrap();
    let id = args[1].as_str();
    let lease: i64 = args[2].parse().unwrap();
    let mut rng = Rng::new(args[3].parse().unwrap());
    let mut out = std::io::stdout().lock();
    let mut say = |s: String| {
        writeln!(out, "@@{s}").unwrap();
        out.flush().unwrap();
    };
    say("ready".into());
    let mut step: i64 = 0;
    loop {
        match rng.below(3) {
            0 => {
                say("phase heartbeat".into());
                conn.query_row("SELECT run_heartbeat(?1, ?2)", (id, lease), |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap();
            }
            1 => {
                step += 1;
                say(format!("phase checkpoint {step}"));
                conn.query_row(
                    "SELECT run_checkpoint(?1, ?2, json_object('well', ?2, 'pad', hex(randomblob(200))), ?3)",
                    (id, step, lease),
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
                say(format!("ckpt {step}"));
            }
            _ => {
                step += 1;
                say(format!("phase transaction {step}"));
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                // The app's own writes, large enough that a commit spans many pages.
                conn.execute(
                    "INSERT INTO app_results (run, step, payload) VALUES (?1, ?2, randomblob(?3))",
                    (id, step, 4096 + rng.below(60_000) as i64),
                )
                .unwrap();
                conn.query_row(
                    "SELECT run_checkpoint(?1, ?2, json_object('well', ?2), ?3)",
                    (id, step, lease),
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
                conn.execute(
                    "UPDATE protocol_runs SET output_data_json = json_object('wells', ?2) WHERE accession_id = ?1",
                    (id, step),
                )
                .unwrap();
                conn.execute_batch("COMMIT").unwrap();
                say(format!("ckpt {step}"));
            }
        }
    }
}

#[derive(Default, Debug)]
struct Figures {
    kills: u64,
    /// What the worker was doing when the kill landed (its last phase line).
    moments: BTreeMap<String, u64>,
    /// Kills that landed after a commit the worker had not reported yet.
    unreported_commits: u64,
    max_step: i64,
}

fn crash_db(dir: &Path, name: &str, journal: &str) -> (std::path::PathBuf, rusqlite::Connection) {
    let path = dir.join(name);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.pragma_update(None, "journal_mode", journal).unwrap();
    run_recovery::register(&conn).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute_batch(
        "CREATE TABLE app_results (run TEXT NOT NULL, step INTEGER NOT NULL, payload BLOB)",
    )
    .unwrap();
    conn.query_row(
        "SELECT run_recovery_install(json_object('stale_after_ms', ?1))",
        [STALE_MS],
        |r| r.get::<_, String>(0),
    )
    .unwrap();
    (path, conn)
}

fn one_kill(path: &Path, conn: &rusqlite::Connection, n: u64, rng: &mut Rng, f: &mut Figures) {
    let id = format!("crash-run-{n:05}");
    add_run(
        conn,
        &id,
        if n % 2 == 0 { "running" } else { "RUNNING" },
        Some(r#"{"operator":"ada"}"#),
    );
    let mut child = spawn_self(
        "crash",
        &[
            path.to_string_lossy().into_owned(),
            id.clone(),
            "1".into(),
            rng.next().to_string(),
        ],
    );
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("@@") {
                if tx.send(rest.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    assert_eq!(rx.recv().unwrap(), "ready");
    // A random moment: 0 to 60 ms into the protocol.
    std::thread::sleep(Duration::from_micros(rng.below(60_000)));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the worker must have been killed");
    reader.join().unwrap();
    let lines: Vec<String> = rx.try_iter().collect();
    let last_reported: i64 = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ckpt "))
        .map(|s| s.parse().unwrap())
        .max()
        .unwrap_or(0);
    let moment = match lines.last() {
        None => "before the first operation".to_string(),
        Some(l) if l.starts_with("ckpt") => "between operations".to_string(),
        Some(l) => l
            .strip_prefix("phase ")
            .unwrap_or(l)
            .split(' ')
            .next()
            .unwrap()
            .to_string(),
    };
    *f.moments.entry(moment).or_default() += 1;
    f.kills += 1;

    // 1. The file is intact.
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "kill {n}: integrity_check");
    // 2. No committed checkpoint lost.
    let m = meta(conn, &id);
    let step = m["checkpointStep"].as_i64().unwrap_or(0);
    assert!(
        step >= last_reported,
        "kill {n}: committed checkpoint {last_reported} lost, the row says {step}"
    );
    if step > last_reported {
        f.unreported_commits += 1;
    }
    f.max_step = f.max_step.max(step);
    if step > 0 {
        assert_eq!(
            m["checkpointState"]["well"], step,
            "kill {n}: state of step {step}"
        );
    }
    assert_eq!(m["operator"], "ada", "kill {n}: the app's key survived");
    // The app's rows of a committed transaction are all there, none of an uncommitted one.
    let app_steps: i64 = conn
        .query_row(
            "SELECT count(*) FROM app_results WHERE run = ?1 AND step > ?2",
            rusqlite::params![id, step],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(app_steps, 0, "kill {n}: app rows beyond the checkpoint");
    // 3. Once stale, the run is an orphan for every client.
    let hb = m["lastHeartbeat"].as_i64().expect("a stamped heartbeat");
    while run_recovery::now_ms() <= hb + STALE_MS + 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let listed: Vec<String> = column(conn, "SELECT run_id FROM orphaned_runs", []);
    assert_eq!(listed, vec![id.clone()], "kill {n}: orphaned_runs");
    let view: Vec<String> = column(conn, "SELECT run_id FROM run_recovery_orphans", []);
    assert_eq!(
        view,
        vec![id.clone()],
        "kill {n}: run_recovery_orphans view"
    );
    let explicit: i64 = conn
        .query_row(
            "SELECT checkpoint_step FROM orphaned_runs(?1, ?2) WHERE run_id = ?3",
            rusqlite::params![STALE_MS, hb + STALE_MS + 1, id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .unwrap()
        .unwrap_or(0);
    assert_eq!(explicit, step, "kill {n}: orphaned_runs(threshold, now)");
    // 4. Resume from the checkpoint, and finish the run (the app's transition).
    let out: String = conn
        .query_row("SELECT recover_run(?1, 'resume')", [&id], |r| r.get(0))
        .unwrap();
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["lease"], 2);
    assert_eq!(out["checkpoint_step"].as_i64().unwrap_or(0), step);
    conn.execute(
        "UPDATE protocol_runs SET status = CASE WHEN status = 'RUNNING' THEN 'COMPLETED' ELSE 'completed' END \
         WHERE accession_id = ?1",
        [&id],
    )
    .unwrap();
}

fn crash_loop_with(kills: u64) -> Figures {
    let mut rng = Rng::from_env("crash loop");
    let dir = tempfile::tempdir().unwrap();
    let mut f = Figures::default();
    for (name, journal, share) in [
        ("wal.db", "wal", kills - kills / 2),
        ("delete.db", "delete", kills / 2),
    ] {
        let (path, conn) = crash_db(dir.path(), name, journal);
        for n in 0..share {
            one_kill(&path, &conn, n, &mut rng, &mut f);
        }
        let left: i64 = conn
            .query_row("SELECT count(*) FROM orphaned_runs(0)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left, 0,
            "{journal}: every killed run was recovered and completed"
        );
    }
    println!(
        "crash loop: {} SIGKILLs, 0 integrity failures, 0 lost checkpoints, every killed run found \
         as an orphan; kill moments {:?}; {} kills landed after a commit the worker had not reported; \
         highest checkpoint {}",
        f.kills, f.moments, f.unreported_commits, f.max_step
    );
    f
}

fn crash_loop() {
    let f = crash_loop_with(env_or("RUN_RECOVERY_KILLS", 20));
    assert!(
        f.moments.len() >= 2,
        "kills landed at several moments: {:?}",
        f.moments
    );
}

fn crash_loop_full() {
    let f = crash_loop_with(env_or("RUN_RECOVERY_KILLS", 200));
    for moment in ["heartbeat", "checkpoint", "transaction"] {
        assert!(
            f.moments.contains_key(moment),
            "no kill during {moment}: {:?}",
            f.moments
        );
    }
}
