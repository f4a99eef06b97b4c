//! Races: N processes call `recover_run(id, 'resume')` on one orphan at the
//! same moment, round after round. Every round exactly one wins; every loser
//! is told the run was already recovered; leases go up by exactly one per
//! round; `recoveryLog` holds exactly one record per win.
//!
//! `make test` runs [`race_resume_across_processes`] (6 processes x 60 rounds);
//! `make test-stress` runs [`race_resume_full`] (16 x 1,000). Override with
//! `RUN_RECOVERY_RACE_PROCS` / `RUN_RECOVERY_RACE_ROUNDS`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use common::*;

fn main() {
    const STRESS: Option<&str> =
        Some("stress: 16 processes x 1,000 rounds; run by `make test-stress`");
    // The direct call; the idiomatic form (every client recovers what
    // `orphaned_runs` lists); clients without the extension (the browser,
    // a dqlite node) through the pure-SQL actions. Each in `make test`
    // (6 x 60) and in `make test-stress` (16 x 1,000).
    let forms = [
        ("race", "race_resume_across_processes", "race_resume_full"),
        (
            "race-tvf",
            "race_resume_through_orphaned_runs",
            "race_resume_full_through_orphaned_runs",
        ),
        (
            "race-actions",
            "race_resume_through_actions",
            "race_resume_full_through_actions",
        ),
    ];
    let mut tests = Vec::new();
    for (mode, quick, full) in forms {
        tests.push(Test::new(quick, move || race_case(mode, 6, 60), None));
        tests.push(Test::new(full, move || race_case(mode, 16, 1000), STRESS));
    }
    run_tests(&tests, serve);
}

/// One race of `mode`: `RUN_RECOVERY_RACE_PROCS` processes x
/// `RUN_RECOVERY_RACE_ROUNDS` rounds (defaults: `procs` x `rounds`).
fn race_case(mode: &str, procs: u64, rounds: u64) {
    let procs = env_or("RUN_RECOVERY_RACE_PROCS", procs) as usize;
    let rounds = env_or("RUN_RECOVERY_RACE_ROUNDS", rounds);
    let f = race(mode, procs, rounds);
    report(mode, procs, rounds, &f);
}

/// Worker side: reads `go <round>` lines, races once per line, answers
/// `@@ <round> OK <lease>` or `@@ <round> ERR <message>`.
fn serve(mode: &str, args: &[String]) {
    // "race": SELECT recover_run(id, 'resume');
    // "race-tvf": SELECT recover_run(run_id, 'resume') FROM orphaned_runs.
    // "race-actions": no extension; INSERT INTO run_recovery_actions, then
    // the new lease from run_recovery_runs, in one transaction.
    let sql = match mode {
        "race" => "SELECT recover_run(?1, 'resume')",
        "race-tvf" => "SELECT recover_run(run_id, 'resume') FROM orphaned_runs WHERE run_id = ?1",
        "race-actions" => {
            "SELECT json_object('lease', lease) FROM run_recovery_runs WHERE run_id = ?1"
        }
        other => panic!("unknown worker mode {other}"),
    };
    let actions = mode == "race-actions";
    let conn = if actions {
        let c = open_plain(Path::new(&args[0]));
        c.pragma_update(None, "journal_mode", "wal").unwrap();
        c
    } else {
        open(Path::new(&args[0]))
    };
    let id = &args[1];
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let Some(round) = line.strip_prefix("go ") else {
            break;
        };
        let r = if actions {
            conn.execute_batch("BEGIN").unwrap();
            let r = conn
                .execute(
                    "INSERT INTO run_recovery_actions (run_id, action) VALUES (?1, 'resume')",
                    [id],
                )
                .and_then(|_| conn.query_row(sql, [id], |r| r.get::<_, String>(0)));
            conn.execute_batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" })
                .unwrap();
            r
        } else {
            conn.query_row(sql, [id], |r| r.get::<_, String>(0))
        };
        match r {
            Err(rusqlite::Error::QueryReturnedNoRows) => writeln!(out, "@@ {round} NONE").unwrap(),
            Ok(json) => {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                writeln!(out, "@@ {round} OK {}", v["lease"]).unwrap();
            }
            Err(e) => {
                let code = match &e {
                    rusqlite::Error::SqliteFailure(f, _) => format!(" [code {}]", f.extended_code),
                    _ => String::new(),
                };
                let msg = err_text(&e).replace('\n', " ");
                writeln!(out, "@@ {round} ERR {msg}{code}").unwrap()
            }
        }
        out.flush().unwrap();
    }
    std::process::exit(0);
}

struct Figures {
    wins_per_process: Vec<u64>,
    loser_errors: u64,
    /// Losers that saw no orphan any more (only with `orphaned_runs`).
    loser_empty: u64,
}

fn race(mode: &str, procs: usize, rounds: u64) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = fresh_db(dir.path(), r#"{"max_resumes": 1000000000}"#);
    let id = "4f1c2a9e8b7d4c3a9e1f0a2b3c4d5e6f";
    add_run(&conn, id, "RUNNING", Some(r#"{"app":"keep me"}"#));
    let mut children: Vec<_> = (0..procs)
        .map(|_| spawn_self(mode, &[path.to_string_lossy().into_owned(), id.to_string()]))
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    let mut writers: Vec<_> = children
        .iter_mut()
        .map(|c| c.stdin.take().unwrap())
        .collect();
    let reply = |r: &mut BufReader<std::process::ChildStdout>| -> String {
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "worker died");
            if let Some(rest) = line.trim_end().strip_prefix("@@") {
                return rest.trim().to_string();
            }
        }
    };
    for r in readers.iter_mut() {
        assert_eq!(reply(r), "ready");
    }
    let mut figures = Figures {
        wins_per_process: vec![0; procs],
        loser_errors: 0,
        loser_empty: 0,
    };
    let mut lease = 1i64;
    for round in 0..rounds {
        // Time passes: the last executor (or last round's winner) went quiet.
        age_heartbeat(&conn, id, 120_000);
        // Start each round with a different process, so none is always first.
        for k in 0..procs {
            let w = &mut writers[(k + round as usize) % procs];
            writeln!(w, "go {round}").unwrap();
            w.flush().unwrap();
        }
        let mut winners = Vec::new();
        for (p, r) in readers.iter_mut().enumerate() {
            let line = reply(r);
            let (got_round, rest) = line.split_once(' ').unwrap();
            assert_eq!(got_round, round.to_string());
            if rest == "NONE" {
                assert_eq!(mode, "race-tvf", "only orphaned_runs can come back empty");
                figures.loser_empty += 1;
            } else if let Some(l) = rest.strip_prefix("OK ") {
                winners.push((p, l.parse::<i64>().unwrap()));
            } else {
                let msg = rest.strip_prefix("ERR ").unwrap();
                // Through orphaned_runs the loser's statement holds an older
                // read snapshot: it cannot see the winner's write, and says so.
                let snapshot = mode == "race-tvf"
                    && msg.contains("reads from an older snapshot")
                    && msg.contains("probably already recovered");
                let action_lost = mode == "race-actions"
                    && msg.starts_with(
                        "run_recovery_actions: resume: run was already recovered by another client",
                    );
                assert!(
                    action_lost
                        || msg.starts_with("recover_run: ")
                            && (msg.contains("was already recovered by another client (resume")
                                || snapshot),
                    "round {round}: a loser was told something else: {msg}"
                );
                figures.loser_errors += 1;
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one winner expected, got {winners:?}"
        );
        let (p, won) = winners[0];
        assert_eq!(won, lease + 1, "round {round}: lease must go up by one");
        lease = won;
        figures.wins_per_process[p] += 1;
    }
    drop(writers);
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let m = meta(&conn, id);
    let log = m["recoveryLog"].as_array().unwrap();
    assert_eq!(
        log.len() as u64,
        rounds,
        "one log record per win, none lost"
    );
    for (i, rec) in log.iter().enumerate() {
        assert_eq!(rec["action"], "resume");
        assert_eq!(rec["leaseBefore"], i as i64 + 1, "record {i}");
        assert_eq!(rec["leaseAfter"], i as i64 + 2, "record {i}");
    }
    assert_eq!(m["lease"], rounds as i64 + 1);
    assert_eq!(m["resumes"], rounds as i64);
    assert_eq!(m["app"], "keep me");
    assert_eq!(status(&conn, id), "RUNNING");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(
        figures.loser_errors + figures.loser_empty,
        rounds * (procs as u64 - 1)
    );
    figures
}

fn report(mode: &str, procs: usize, rounds: u64, f: &Figures) {
    println!(
        "{mode}: {procs} processes x {rounds} rounds: {rounds} winners (one per round), {} losers told \
         'already recovered', {} losers found no orphan left, wins per process {:?}",
        f.loser_errors, f.loser_empty, f.wins_per_process
    );
}
