//! `run-recovery demo [DB]`: crash to resume, end to end, with real processes.
//!
//! 1. A fresh database with the host schema, run_recovery installed with a
//!    short threshold, and one run in `running`.
//! 2. A worker process (`run-recovery worker`) executes the protocol,
//!    checkpointing after each step and heartbeating with the pulse.
//! 3. It is killed with SIGKILL in the middle of a step.
//! 4. Orphan detection: polled until the run shows in `orphaned_runs`.
//! 5. The prompt; the answer comes from `--answer`, else from the terminal,
//!    else it is `r`.
//! 6. Resume: a new worker continues after the checkpoint with the new lease.
//! 7. Verification: completed, every step done exactly once,
//!    `PRAGMA integrity_check` ok.

use std::io::{BufRead, BufReader, IsTerminal};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use run_recovery::Action;
use rusqlite::{params, Connection};

use crate::cli::{self, Args, CliError};
use crate::worker::STEPS_TABLE_SQL;

pub struct Options {
    pub db: Option<String>,
    pub answer: Option<Action>,
    pub steps: i64,
    pub step_ms: i64,
    pub interval_ms: i64,
    pub threshold_ms: i64,
    pub kill_after: i64,
}

impl Options {
    pub fn from_args(a: &Args) -> Result<Options, CliError> {
        let answer = match a.value("answer") {
            Some(v) => Some(cli::parse_answer(v).ok_or_else(|| {
                CliError::usage(format!("--answer must be r, f or d, found '{v}'"))
            })?),
            None => None,
        };
        let o = Options {
            db: a.optional(0).map(str::to_string),
            answer,
            steps: a.int("steps")?.unwrap_or(8),
            step_ms: a.int("step-ms")?.unwrap_or(400),
            interval_ms: a.int("interval")?.unwrap_or(100),
            threshold_ms: a.int("threshold")?.unwrap_or(1000),
            kill_after: a.int("kill-after")?.unwrap_or(3),
        };
        if o.steps < 2 || o.kill_after < 1 || o.kill_after >= o.steps {
            return Err(CliError::usage(format!(
                "--kill-after must be between 1 and --steps - 1, found --kill-after {} --steps {}",
                o.kill_after, o.steps
            )));
        }
        if o.interval_ms < 10 || o.interval_ms >= o.threshold_ms {
            return Err(CliError::usage(format!(
                "--interval must be at least 10 and below --threshold, found --interval {} --threshold {}",
                o.interval_ms, o.threshold_ms
            )));
        }
        Ok(o)
    }
}

/// The host schema of the spec (sql/protocol_runs.sql).
const SCHEMA: &str = include_str!("../../../sql/protocol_runs.sql");

struct Clock(Instant);

impl Clock {
    fn stamp(&self) -> String {
        format!("[{:>5.2}s]", self.0.elapsed().as_secs_f64())
    }
}

fn header(clock: &Clock, title: &str) {
    println!("\n{} == {title}", clock.stamp());
}

/// A worker process whose stdout lines are echoed (indented) and forwarded.
struct Worker {
    child: Child,
    lines: Receiver<String>,
}

fn spawn_worker(o: &Options, db: &str, id: &str, lease: Option<i64>) -> Result<Worker, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::usage(format!("cannot find my own executable: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["worker", db, id])
        .args(["--steps", &o.steps.to_string()])
        .args(["--step-ms", &o.step_ms.to_string()])
        .args(["--interval", &o.interval_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(l) = lease {
        cmd.args(["--lease", &l.to_string()]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::usage(format!("cannot start the worker: {e}")))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| CliError::usage("worker has no stdout"))?;
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("          worker {pid} | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Worker { child, lines: rx })
}

impl Worker {
    /// Waits for a line equal to `want`; Err when the worker ended first.
    fn wait_for(&self, want: &str) -> Result<(), CliError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) if l == want => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(CliError::usage(format!(
                        "demo: the worker ended before '{want}'"
                    )))
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    return Err(CliError::usage(format!("demo: no '{want}' within 60 s")))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// A little jitter without a random-number crate: 0..1 from the clock.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

fn create(path: &str, o: &Options) -> Result<String, CliError> {
    if std::path::Path::new(path).exists() {
        return Err(CliError::usage(format!(
            "demo: {path} already exists; the demo creates a new database (remove it or pick another path)"
        )));
    }
    let conn = Connection::open(path)?;
    run_recovery::register(&conn)?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(STEPS_TABLE_SQL)?;
    let cfg = serde_json::json!({"stale_after_ms": o.threshold_ms}).to_string();
    conn.query_row("SELECT run_recovery_install(?1)", [cfg], |_| Ok(()))?;
    let id = format!(
        "{:016x}{:08x}{:08x}",
        run_recovery::now_ms(),
        std::process::id(),
        (jitter() * 1e6) as u32
    );
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, start_time, properties_json,
           top_level_protocol_definition_accession_id)
         VALUES (?1, ?2, 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?3, 'serial-dilution')",
        params![
            id,
            format!("serial dilution, {} steps", o.steps),
            r#"{"plate": "demo-96", "operator": "demo"}"#
        ],
    )?;
    Ok(id)
}

pub fn run(o: Options) -> Result<i32, CliError> {
    let clock = Clock(Instant::now());
    let db = match &o.db {
        Some(p) => p.clone(),
        None => std::env::temp_dir()
            .join(format!("run-recovery-demo-{}.db", std::process::id()))
            .to_string_lossy()
            .into_owned(),
    };
    header(&clock, "1. A protocol run starts");
    let id = create(&db, &o)?;
    println!(
        "          database {db} (WAL), run_recovery installed with stale_after_ms = {}",
        o.threshold_ms
    );
    println!(
        "          run {id}: {} steps of {} ms, checkpoint after each, pulse every {} ms",
        o.steps, o.step_ms, o.interval_ms
    );
    let worker = spawn_worker(&o, &db, &id, None)?;
    let first_pid = worker.child.id();

    worker.wait_for(&format!("step {}/{} done", o.kill_after, o.steps))?;
    let delay = (o.step_ms as f64 * (0.2 + 0.6 * jitter())) as u64;
    std::thread::sleep(Duration::from_millis(delay));
    let mut child = worker.child;
    child
        .kill()
        .map_err(|e| CliError::usage(format!("cannot kill the worker: {e}")))?;
    let killed_at = run_recovery::now_ms();
    let status = child.wait().map_err(|e| CliError::usage(e.to_string()))?;
    header(
        &clock,
        &format!(
            "2. kill -9 {first_pid}, {delay} ms into step {} ({status})",
            o.kill_after + 1
        ),
    );

    let conn = cli::open_installed(&db)?;
    header(
        &clock,
        &format!(
            "3. Waiting for the heartbeat to go stale (threshold {} ms, pulse {} ms)",
            o.threshold_ms, o.interval_ms
        ),
    );
    let poll = Duration::from_millis((o.interval_ms / 2).max(5).unsigned_abs());
    let mut last_print = Instant::now();
    let orphan = loop {
        let found = cli::orphans(&conn, None)?;
        if let Some(orphan) = found.into_iter().find(|x| x.run_id == id) {
            break orphan;
        }
        if last_print.elapsed() >= Duration::from_millis(250) {
            let age = run_recovery::now_ms() - killed_at;
            println!("          {age} ms since the kill: not an orphan yet");
            last_print = Instant::now();
        }
        if run_recovery::now_ms() - killed_at > 60_000 {
            return Err(CliError::usage(
                "demo: the orphan was not found within 60 s",
            ));
        }
        std::thread::sleep(poll);
    };
    let detected = run_recovery::now_ms() - killed_at;
    println!(
        "          orphan found {detected} ms after the kill (last heartbeat {} ms old)",
        orphan.age_ms
    );
    println!("          $ run-recovery check {db}");
    for line in cli::table(std::slice::from_ref(&orphan)).lines() {
        println!("          {line}");
    }
    let committed: i64 = conn.query_row(
        "SELECT count(*) FROM run_recovery_demo_steps WHERE run_id = ?1",
        [&id],
        |r| r.get(0),
    )?;

    header(&clock, &format!("4. $ run-recovery prompt {db}"));
    let stdin = std::io::stdin();
    let answer = match o.answer {
        Some(a) => {
            println!("{}", orphan.question());
            println!("{}{} (from --answer)", cli::CHOICES, a.name());
            a
        }
        None if stdin.is_terminal() => {
            let mut out = std::io::stdout();
            match cli::ask(&orphan, &mut stdin.lock(), &mut out, true)
                .map_err(|e| CliError::usage(e.to_string()))?
            {
                Some(a) => a,
                None => {
                    println!("No answer: nothing changed. The database is kept at {db}");
                    return Ok(1);
                }
            }
        }
        None => {
            println!("{}", orphan.question());
            println!(
                "{}r (no terminal: resuming; pass --answer to choose)",
                cli::CHOICES
            );
            Action::Resume
        }
    };
    let id_value = rusqlite::types::Value::Text(id.clone());
    let (words, outcome) = cli::apply(&conn, &id_value, answer, None).map_err(|e| CliError {
        msg: format!("demo: {}", e.msg),
        code: 1,
    })?;
    println!("{words}");
    if answer != Action::Resume {
        println!(
            "\nThe run was left {} ({}). Database kept at {db}",
            outcome["status"],
            answer.name()
        );
        return verify_integrity(&conn).map(|()| 0);
    }
    let lease = outcome["lease"].as_i64();
    let resumed_step = outcome["checkpoint_step"].as_i64().unwrap_or(0);
    if resumed_step != committed {
        return Err(CliError::refused(format!(
            "demo: resume returned checkpoint step {resumed_step}, but {committed} steps were committed"
        )));
    }
    println!(
        "          the last committed checkpoint is step {resumed_step}; {committed} step rows were committed before the kill"
    );

    header(&clock, "5. A new worker resumes from the checkpoint");
    let worker = spawn_worker(&o, &db, &id, lease)?;
    let second_pid = worker.child.id();
    worker.wait_for("completed")?;
    let mut child = worker.child;
    let status = child.wait().map_err(|e| CliError::usage(e.to_string()))?;
    if !status.success() {
        return Err(CliError::refused(format!(
            "demo: the resumed worker failed ({status})"
        )));
    }

    header(&clock, "6. Checking the result");
    let final_status: String = conn.query_row(
        "SELECT status FROM protocol_runs WHERE accession_id = ?1",
        [&id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT step, count(*), min(pid), min(lease), min(name) FROM run_recovery_demo_steps
         WHERE run_id = ?1 GROUP BY step ORDER BY step",
    )?;
    let rows: Vec<(i64, i64, i64, i64, String)> = stmt
        .query_map([&id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut ok = final_status.eq_ignore_ascii_case("completed");
    for (step, count, pid, lease, name) in &rows {
        let who = if *pid == i64::from(first_pid) {
            "first worker (killed)"
        } else if *pid == i64::from(second_pid) {
            "second worker"
        } else {
            "?"
        };
        println!("          step {step}: {name:<28} done {count}x by the {who}, lease {lease}");
        ok &= *count == 1;
    }
    let steps_ok =
        rows.len() as i64 == o.steps && rows.iter().enumerate().all(|(i, r)| r.0 == i as i64 + 1);
    ok &= steps_ok;
    verify_integrity(&conn)?;
    println!("          status: {final_status}; PRAGMA integrity_check: ok");
    if !ok {
        return Err(CliError::refused(
            "demo: verification FAILED: the run is not completed with every step exactly once",
        ));
    }
    println!(
        "\nDone in {:.1} s: killed after step {}, orphan found {detected} ms after the kill, resumed from step {resumed_step}, \
         completed with all {} steps done exactly once.\nDatabase kept at {db}",
        clock.0.elapsed().as_secs_f64(),
        o.kill_after,
        o.steps
    );
    Ok(0)
}

fn verify_integrity(conn: &Connection) -> Result<(), CliError> {
    let ic: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if ic != "ok" {
        return Err(CliError::refused(format!("demo: integrity_check: {ic}")));
    }
    Ok(())
}
