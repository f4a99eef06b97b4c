//! Processes: the `run-recovery` binary (its commands and its demo worker),
//! and worker processes that are this test binary started again.
//!
//! A test that needs worker processes of its own is a `harness = false`
//! target whose `main` calls [`run_tests`]: started with
//! `RUN_RECOVERY_WORKER=<mode>` the binary serves that mode and exits,
//! otherwise it runs its tests. So a worker is never a test that passes
//! doing nothing.

use std::io::{BufRead, BufReader, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The command line, built by cargo for the integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_run-recovery");

/// A running worker process and the lines of its standard output.
pub struct Worker {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
}

pub fn spawn_worker(path: &str, id: &str, args: &[&str]) -> Worker {
    let mut child = Command::new(BIN)
        .args(["worker", path, id])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Worker {
        child,
        lines: rx,
        seen: Vec::new(),
    }
}

impl Worker {
    /// Waits (bounded, 30 s) for a line equal to `want`; false if the worker ended first.
    pub fn wait_for(&mut self, want: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => {
                    let hit = l == want;
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        panic!(
            "no line '{want}' from the worker within 30 s; saw {:?}",
            self.seen
        );
    }

    /// Waits for the process to end; its exit code and standard error.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let out = wait_output(self.child);
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `wait_with_output`, bounded: a hung child fails the test instead of hanging it.
pub fn wait_output(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child process did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Runs `run-recovery ARGS` to completion with `stdin` as its input.
pub fn cli(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    wait_output(child)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// (step, times done) for run `id`, in step order.
pub fn steps_done(conn: &Connection, id: &str) -> Vec<(i64, i64)> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'run_recovery_demo_steps'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if !exists {
        return Vec::new();
    }
    let mut stmt = conn
        .prepare("SELECT step, count(*) FROM run_recovery_demo_steps WHERE run_id = ?1 GROUP BY step ORDER BY step")
        .unwrap();
    let rows = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

/// Steps 1..=n, each done once.
pub fn exactly_once(n: i64) -> Vec<(i64, i64)> {
    (1..=n).map(|s| (s, 1)).collect()
}

pub fn is_orphan_at(conn: &Connection, id: &str, threshold: i64, now: i64) -> bool {
    conn.query_row(
        "SELECT count(*) FROM orphaned_runs(?1, ?2) WHERE run_id = ?3",
        rusqlite::params![threshold, now, id],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

/// Polls (bounded, 30 s) until run `id` shows in `orphaned_runs`; returns
/// the wall-clock time it was first seen there.
pub fn wait_orphan(conn: &Connection, id: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM orphaned_runs WHERE run_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        if n == 1 {
            return run_recovery::now_ms();
        }
        assert!(Instant::now() < deadline, "run {id} never became an orphan");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A test of a `harness = false` target; `ignored` says why it runs only
/// with `--ignored` (`make test-stress`).
pub struct Test {
    pub name: String,
    pub run: Box<dyn Fn()>,
    pub ignored: Option<&'static str>,
}

impl Test {
    pub fn new(name: &str, run: impl Fn() + 'static, ignored: Option<&'static str>) -> Test {
        Test {
            name: name.to_string(),
            run: Box::new(run),
            ignored,
        }
    }
}

/// The `main` of a target with workers: serves worker `mode` (`serve`
/// panics on a mode it does not know) when asked to,
/// else runs the tests libtest-style. Understands what `make` and cargo
/// pass: name filters, `--exact`, `--ignored`, `--include-ignored`; accepts
/// and ignores `--nocapture`, `--test-threads=N`, `-q`/`--quiet`; refuses
/// anything else, loudly.
pub fn run_tests(tests: &[Test], serve: fn(mode: &str, args: &[String])) {
    if let Ok(mode) = std::env::var("RUN_RECOVERY_WORKER") {
        let args = std::env::var("RUN_RECOVERY_WORKER_ARGS").unwrap_or_default();
        let args: Vec<String> = args.split('\t').map(str::to_string).collect();
        serve(&mode, &args);
        std::process::exit(0);
    }
    let (mut filters, mut exact, mut ignored, mut include_ignored) =
        (Vec::new(), false, false, false);
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--exact" => exact = true,
            "--ignored" => ignored = true,
            "--include-ignored" => include_ignored = true,
            "--nocapture" | "-q" | "--quiet" => {}
            s if s.starts_with("--test-threads") => {}
            s if s.starts_with('-') => {
                eprintln!("this test binary does not understand {s:?}");
                std::process::exit(2);
            }
            s => filters.push(s.to_string()),
        }
    }
    let chosen = |t: &Test| {
        let named = filters.is_empty()
            || filters.iter().any(|f| {
                if exact {
                    t.name == *f
                } else {
                    t.name.contains(f.as_str())
                }
            });
        let by_ignore = include_ignored || (ignored == t.ignored.is_some());
        named && by_ignore
    };
    let (mut passed, mut failed, mut skipped) = (Vec::new(), Vec::new(), 0);
    for t in tests {
        if !chosen(t) {
            skipped += 1;
            if let (Some(why), false) = (t.ignored, ignored || include_ignored) {
                println!("test {} ... ignored, {why}", t.name);
            }
            continue;
        }
        println!("test {} ...", t.name);
        match catch_unwind(AssertUnwindSafe(&t.run)) {
            Ok(()) => {
                println!("test {} ... ok", t.name);
                passed.push(&t.name);
            }
            Err(_) => {
                println!("test {} ... FAILED", t.name);
                failed.push(&t.name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {skipped} not run",
        if failed.is_empty() { "ok" } else { "FAILED" },
        passed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(101);
    }
}

/// Starts this test binary again as a worker serving `mode`; `args` reach
/// its `serve` (tab-separated through the environment).
pub fn spawn_self(mode: &str, args: &[String]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    Command::new(exe)
        .env("RUN_RECOVERY_WORKER", mode)
        .env("RUN_RECOVERY_WORKER_ARGS", args.join("\t"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}
