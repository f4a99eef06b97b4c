//! `run-recovery prompt` driven through piped input and through a real
//! terminal (tmux send-keys / capture-pane).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A database with two orphans: r1 (last seen 3 minutes ago, after step 2)
/// and r2 (2 minutes ago, no checkpoint), oldest first; r3 is alive.
fn two_orphans(dir: &std::path::Path) -> String {
    let path = new_db(dir, "prompt.db", "wal", 30_000);
    let conn = connect(&path);
    conn.execute_batch(
        "INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id)
         VALUES ('r2', 'ELISA', 'RUNNING', 'p'), ('r3', 'alive', 'running', 'p');",
    )
    .unwrap();
    conn.query_row(
        "SELECT run_checkpoint('r1', 2, '{\"well\": 7}')",
        [],
        |_| Ok(()),
    )
    .unwrap();
    let now = run_recovery::now_ms();
    for (id, ago) in [("r1", 180_000), ("r2", 120_000)] {
        conn.execute(
            "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?1) WHERE accession_id = ?2",
            rusqlite::params![now - ago, id],
        )
        .unwrap();
    }
    path
}

fn metadata(path: &str) -> Vec<(String, String, Option<String>)> {
    let conn = connect(path);
    let mut stmt = conn
        .prepare("SELECT accession_id, status, properties_json FROM protocol_runs ORDER BY 1")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    rows
}

#[test]
fn piped_answers_with_a_bad_one_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_orphans(dir.path());
    let out = cli(&["prompt", &path], "maybe\nr\nF\n");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains(
        "A protocol run was interrupted: \"PCR plate 1\" (id r1, running), last seen 3 minutes ago, after step 2.\n\
         Resume, mark as failed, or dismiss? [r/f/d] maybe\n\
         Please answer r (resume from the last checkpoint), f (mark as failed) or d (dismiss), found 'maybe'.\n\
         Resume, mark as failed, or dismiss? [r/f/d] r\n\
         Resumed run r1: it now holds lease 2 (resume 1); continue after step 2 with state {\"well\":7}."
    ), "{text}");
    assert!(text.contains(
        "A protocol run was interrupted: \"ELISA\" (id r2, RUNNING), last seen 2 minutes ago, before its first checkpoint.\n\
         Resume, mark as failed, or dismiss? [r/f/d] F\n\
         Marked run r2 as FAILED; lease 2 fences out its old executor."
    ), "{text}");
    assert!(!text.contains("r3"), "a live run is not asked about");
    let conn = connect(&path);
    assert_eq!(meta_int(&conn, "r1", "lease"), Some(2));
    assert_eq!(status(&conn, "r1"), "running");
    assert_eq!(status(&conn, "r2"), "FAILED");
    // Nothing left to ask.
    let again = cli(&["prompt", &path], "");
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).starts_with("No interrupted runs in"));
}

#[test]
fn end_of_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_orphans(dir.path());
    let before = metadata(&path);
    for input in ["", "maybe\n", "x\ny\n"] {
        let out = cli(&["prompt", &path], input);
        assert_eq!(out.status.code(), Some(1), "input {input:?}");
        assert!(
            stdout(&out).contains(
                "No answer (end of input): nothing changed for run r1 and the 1 after it."
            ),
            "{}",
            stdout(&out)
        );
        assert_eq!(
            metadata(&path),
            before,
            "input {input:?} changed the database"
        );
    }
}

#[test]
fn a_refused_recovery_is_reported_and_the_rest_still_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_orphans(dir.path());
    // r1 already resumed max_resumes times: resume is refused, the prompt goes on.
    connect(&path)
        .execute(
            "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.resumes', 3) WHERE accession_id = 'r1'",
            [],
        )
        .unwrap();
    let out = cli(&["prompt", &path], "r\nd\n");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Could not resume run r1: recover_run: run 'r1' was already resumed 3 times"),
        "{text}"
    );
    assert!(text.contains("Dismissed run r2"), "{text}");
}

/// tmux on its own server socket, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is needed for the terminal test (.ci/run installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", "t", "-S", "-100"])
    }

    /// Waits (bounded, 20 s) until the screen shows `want` `times` times.
    fn wait_for(&self, want: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.matches(want).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {want:?} x{times} on screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "t", keys, "Enter"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn prompt_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_orphans(dir.path());
    let tmux = Tmux {
        socket: format!("run-recovery-test-{}", std::process::id()),
    };
    let cmd = format!("'{BIN}' prompt '{path}'; echo EXIT=$?; sleep 60");
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "250",
        "-y",
        "50",
        &cmd,
    ]);
    tmux.wait_for("[r/f/d]", 1);
    tmux.keys("nope");
    let screen = tmux.wait_for("[r/f/d]", 2);
    assert!(
        screen.contains("Please answer r (resume from the last checkpoint)"),
        "{screen}"
    );
    tmux.keys("d");
    let screen = tmux.wait_for("[r/f/d]", 3);
    assert!(screen.contains("Dismissed run r1"), "{screen}");
    assert!(screen.contains("(id r2, RUNNING)"), "{screen}");
    tmux.keys("r");
    let screen = tmux.wait_for("EXIT=", 1);
    assert!(screen.contains("EXIT=0"), "{screen}");
    // In a terminal the answer is what the user typed, not echoed twice.
    assert_eq!(screen.matches("[r/f/d] d").count(), 1, "{screen}");
    assert!(
        screen.contains("Resumed run r2: it now holds lease 2"),
        "{screen}"
    );
    let conn = connect(&path);
    assert!(meta_int(&conn, "r1", "dismissedHeartbeat").is_some());
    assert_eq!(meta_int(&conn, "r2", "lease"), Some(2));
    assert_eq!(meta_int(&conn, "r2", "resumes"), Some(1));
}
