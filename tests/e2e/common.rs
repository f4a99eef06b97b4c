//! Helpers shared by the end-to-end tests (tests/e2e_*.rs): a database with
//! the host schema and run_recovery installed, real worker processes
//! (`run-recovery worker`), and what they left in the database.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub const BIN: &str = env!("CARGO_BIN_EXE_run-recovery");

pub const SCHEMA: &str = "CREATE TABLE protocol_runs (
  accession_id CHAR(32) NOT NULL PRIMARY KEY,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
  updated_at DATETIME, name VARCHAR, properties_json TEXT,
  start_time DATETIME, end_time DATETIME, data_directory_path VARCHAR,
  duration_ms INTEGER, status VARCHAR(21), input_parameters_json TEXT,
  resolved_assets_json TEXT, output_data_json TEXT, initial_state_json TEXT,
  final_state_json TEXT, created_by_user TEXT,
  top_level_protocol_definition_accession_id CHAR(32) NOT NULL,
  protocol_definition_accession_id CHAR(32), previous_accession_id CHAR(32));
CREATE INDEX ix_protocol_runs_status ON protocol_runs (status);";

/// A connection with run_recovery registered (statically linked).
pub fn connect(path: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    run_recovery::register(&conn).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// A new database at `dir/name` in `journal` mode, installed with
/// `stale_after_ms = threshold`, holding run `r1` in `running`.
pub fn new_db(dir: &std::path::Path, name: &str, journal: &str, threshold: i64) -> String {
    let path = dir.join(name).to_string_lossy().into_owned();
    let conn = connect(&path);
    conn.query_row(&format!("PRAGMA journal_mode = {journal}"), [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let cfg = format!("{{\"stale_after_ms\": {threshold}}}");
    conn.query_row("SELECT run_recovery_install(?1)", [cfg], |_| Ok(()))
        .unwrap();
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id)
         VALUES ('r1', 'PCR plate 1', 'running', 'p')",
        [],
    )
    .unwrap();
    path
}

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
    use std::io::Write;
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

/// An integer key of run `id`'s metadata.
pub fn meta_int(conn: &Connection, id: &str, key: &str) -> Option<i64> {
    conn.query_row(
        &format!("SELECT json_extract(properties_json, '$.{key}') FROM protocol_runs WHERE accession_id = ?1"),
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

// The run readers shared with the other integration tests.
#[path = "../common/mod.rs"]
mod base;
pub use base::status;

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

pub fn integrity_ok(conn: &Connection) {
    let ic: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok");
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
