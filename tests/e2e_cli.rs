//! The run-recovery command line as a user meets it: check, recover,
//! install, the demo, and the errors for a missing file, a database without
//! run_recovery, an unknown id, bad arguments.

mod common;

use common::*;

/// r1 orphaned (last seen 2 minutes ago after step 4), r2 alive.
fn one_orphan(dir: &std::path::Path) -> String {
    let path = new_db(dir, "cli.db", "wal", 30_000);
    let conn = connect(&path);
    conn.execute_batch(
        "INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id)
         VALUES ('r2', 'alive', 'running', 'p');",
    )
    .unwrap();
    conn.query_row("SELECT run_checkpoint('r1', 4)", [], |_| Ok(()))
        .unwrap();
    conn.execute(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?1) WHERE accession_id = 'r1'",
        [run_recovery::now_ms() - 125_000],
    )
    .unwrap();
    path
}

#[test]
fn check_lists_orphans_as_a_table_and_says_so_in_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_orphan(dir.path());
    let out = cli(&["check", &path], "");
    assert_eq!(out.status.code(), Some(1), "orphans found: exit 1");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "NAME         ID  STATUS   LAST SEEN      STEP");
    assert_eq!(lines[1], "PCR plate 1  r1  running  2 minutes ago  4");
    assert!(lines[2].starts_with("1 orphaned run in"), "{text}");
    assert!(
        lines[2].contains("Decide with: run-recovery prompt"),
        "{text}"
    );

    // A threshold above the orphan's age: none, exit 0.
    let out = cli(&["check", &path, "--threshold", "600000"], "");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("No orphaned runs in"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("more than 600000 ms"));
}

#[test]
fn check_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_orphan(dir.path());
    let out = cli(&["check", &path, "--json"], "");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["run_id"], "r1");
    assert_eq!(arr[0]["name"], "PCR plate 1");
    assert_eq!(arr[0]["status"], "running");
    assert_eq!(arr[0]["checkpoint_step"], 4);
    assert_eq!(arr[0]["lease"], 1);
    assert_eq!(arr[0]["last_seen"], "2 minutes ago");
    assert!(arr[0]["age_ms"].as_i64().unwrap() >= 125_000);
    let out = cli(&["check", &path, "--json", "--threshold=600000"], "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn recover_acts_and_refuses_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_orphan(dir.path());
    let out = cli(&["recover", &path, "r1", "resume"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["action"], "resume");
    assert_eq!(v["lease"], 2);
    assert_eq!(v["checkpoint_step"], 4);

    let out = cli(&["recover", &path, "r2", "fail"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("run-recovery: recover_run: run 'r2' is still alive: last heartbeat"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["recover", &path, "nope", "fail"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "run-recovery: recover_run: no run with accession_id 'nope'"
    );
    let out = cli(&["recover", &path, "r1", "explode"], "");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "run-recovery: unknown action 'explode', expected resume, fail or dismiss"
    );
    assert_eq!(status(&connect(&path), "r2"), "running");
}

#[test]
fn clear_errors_for_missing_files_and_databases_without_run_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db").to_string_lossy().into_owned();
    for cmd in ["check", "prompt", "install"] {
        let out = cli(&[cmd, &missing], "");
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out).trim(),
            format!("run-recovery: no such database file: {missing}")
        );
    }
    assert!(
        !std::path::Path::new(&missing).exists(),
        "nothing was created"
    );

    let bare = dir.path().join("bare.db").to_string_lossy().into_owned();
    rusqlite::Connection::open(&bare)
        .unwrap()
        .execute_batch(SCHEMA)
        .unwrap();
    let out = cli(&["check", &bare], "");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "run-recovery: run_recovery is not installed in {bare}\n  install it with: run-recovery install {bare}\n  \
             (or in SQL: SELECT run_recovery_install();)\n"
        )
    );

    let text = dir.path().join("notes.txt").to_string_lossy().into_owned();
    std::fs::write(
        &text,
        "plain text, not a database, long enough to have a header......",
    )
    .unwrap();
    let out = cli(&["check", &text], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!("run-recovery: {text} is not a SQLite database")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn install_then_check() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db").to_string_lossy().into_owned();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let out = cli(
        &["install", &db, "--config", "{\"stale_after_ms\": 5000}"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"stale_after_ms\": 5000"));
    let out = cli(&["check", &db], "");
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("more than 5000 ms"));
    let out = cli(&["install", &db, "--config", "{\"tabel\": 1}"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("run-recovery: run_recovery_install: unknown config key 'tabel'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors() {
    for (args, msg) in [
        (vec!["frobnicate"], "unknown command 'frobnicate'"),
        (vec!["check"], "missing DB"),
        (vec!["recover", "x.db", "r1"], "missing ACTION"),
        (
            vec!["check", "x.db", "--threshold"],
            "--threshold needs a value",
        ),
        (
            vec!["check", "x.db", "--threshold", "soon"],
            "--threshold must be a whole number >= 0, found 'soon'",
        ),
        (
            vec!["check", "x.db", "--colour"],
            "unknown option '--colour'",
        ),
        (
            vec!["demo", "--kill-after", "9"],
            "--kill-after must be between 1 and --steps - 1",
        ),
        (
            vec!["demo", "--answer", "maybe"],
            "--answer must be r, f or d, found 'maybe'",
        ),
    ] {
        let out = cli(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(msg), "{args:?}: {}", stderr(&out));
    }
    let out = cli(&["--help"], "");
    assert_eq!(out.status.code(), Some(0));
    for cmd in [
        "check DB",
        "prompt DB",
        "recover DB ID ACTION",
        "install DB",
        "demo [DB]",
    ] {
        assert!(stdout(&out).contains(cmd), "help lists {cmd}");
    }
    let out = cli(&["sql"], "");
    assert!(stdout(&out).contains("CREATE TABLE IF NOT EXISTS run_recovery_settings"));
}

/// `run-recovery demo DB --answer ANSWER` with `steps` steps of `step_ms`,
/// killed after step `kill_after` (pulse 20 ms, threshold 300 ms).
fn demo(db: &str, answer: &str, steps: i64, step_ms: i64, kill_after: i64) -> std::process::Output {
    let (steps, step_ms, kill_after) = (
        steps.to_string(),
        step_ms.to_string(),
        kill_after.to_string(),
    );
    cli(
        &[
            "demo",
            db,
            "--answer",
            answer,
            "--steps",
            &steps,
            "--step-ms",
            &step_ms,
            "--interval",
            "20",
            "--threshold",
            "300",
            "--kill-after",
            &kill_after,
        ],
        "",
    )
}

#[test]
fn demo_without_a_terminal_resumes_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db").to_string_lossy().into_owned();
    let out = demo(&db, "r", 5, 60, 2);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for want in [
        "== 2. kill -9",
        "orphan found",
        "A protocol run was interrupted",
        "Resume, mark as failed, or dismiss? [r/f/d] resume (from --answer)",
        "the last committed checkpoint is step 2",
        "completed with all 5 steps done exactly once",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let conn = connect(&db);
    let id: String = conn
        .query_row("SELECT accession_id FROM protocol_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status(&conn, &id), "completed");
    assert_eq!(steps_done(&conn, &id), exactly_once(5));
    // The first worker did steps 1-2 with lease 1, the second 3-5 with lease 2.
    let leases: Vec<i64> = column(
        &conn,
        "SELECT lease FROM run_recovery_demo_steps ORDER BY step",
        [],
    );
    assert_eq!(leases, vec![1, 1, 2, 2, 2]);
    integrity_ok(&conn);

    // The demo never overwrites a database.
    let out = cli(&["demo", &db, "--answer", "r"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn demo_answer_fail_marks_the_run_failed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db").to_string_lossy().into_owned();
    let out = demo(&db, "f", 4, 40, 1);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let conn = connect(&db);
    let id: String = conn
        .query_row("SELECT accession_id FROM protocol_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status(&conn, &id), "failed");
    assert_eq!(meta_int(&conn, &id, "lease"), Some(2));
    assert_eq!(steps_done(&conn, &id), exactly_once(1));
}

#[test]
fn a_view_named_orphaned_runs_is_refused_never_read_as_the_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_orphan(dir.path());
    connect(&path)
        .execute_batch("CREATE VIEW orphaned_runs AS SELECT 'fake' AS run_id, 'x' AS name")
        .unwrap();
    for args in [vec!["check", &path], vec!["check", &path, "--json"]] {
        let out = cli(&args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing is listed");
        assert_eq!(
            stderr(&out).trim(),
            format!(
                "run-recovery: a view named orphaned_runs in {path} hides run_recovery's \
                 orphaned_runs, so no orphan could be read reliably; rename or drop that view"
            )
        );
    }
    connect(&path)
        .execute_batch("DROP VIEW orphaned_runs")
        .unwrap();
    let out = cli(&["check", &path], "");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("r1"),
        "{}",
        stderr(&out)
    );
}

/// A runs table whose id column has no declared type holds integer ids that
/// do not equal their text: `recover` and `prompt` find them all the same.
#[test]
fn integer_ids_in_an_untyped_id_column_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ints.db").to_string_lossy().into_owned();
    let conn = connect(&path);
    conn.execute_batch(
        "CREATE TABLE jobs (id, state TEXT, meta TEXT);
         INSERT INTO jobs VALUES (42, 'running', NULL), ('7', 'running', NULL), (8, 'running', NULL);",
    )
    .unwrap();
    install(
        &conn,
        r#"{"table":"jobs","id_column":"id","status_column":"state","metadata_column":"meta","name_column":null,"end_time_column":null,"updated_at_column":null}"#,
    );
    conn.execute_batch(
        "INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1');
         UPDATE jobs SET meta = json_set(meta, '$.lastHeartbeat', 1000);
         DELETE FROM run_recovery_settings WHERE key = 'allow_backdating';",
    )
    .unwrap();
    let out = cli(&["recover", &path, "42", "fail"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cli(&["recover", &path, "7", "dismiss"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cli(&["prompt", &path], "r\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let states: Vec<(String, i64)> = conn
        .prepare("SELECT state, meta ->> '$.lease' FROM jobs ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        states,
        vec![
            ("failed".into(), 2),
            ("running".into(), 1),
            ("running".into(), 2)
        ]
    );
    let out = cli(&["recover", &path, "43", "fail"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "run-recovery: recover_run: no run with id '43'"
    );
}

/// A name or status holding terminal escapes is shown escaped, never sent
/// to the terminal as it is; `--json` keeps the text exact.
#[test]
fn control_characters_in_names_and_statuses_are_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = one_orphan(dir.path());
    connect(&path)
        .execute(
            "UPDATE protocol_runs SET name = ?1 WHERE accession_id = 'r1'",
            ["PCR \u{1b}[2J\u{1b}[31mplate\r\n1"],
        )
        .unwrap();
    let out = cli(&["check", &path, "--json"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "PCR \u{1b}[2J\u{1b}[31mplate\r\n1");
    // check, then prompt (which dismisses it: the last look).
    for args in [vec!["check", &path], vec!["prompt", &path]] {
        let out = cli(&args, "d\n");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "{args:?}: {text:?}"
        );
        assert!(
            text.contains("PCR \\u{1b}[2J\\u{1b}[31mplate\\u{d}\\u{a}1"),
            "{args:?}: {text}"
        );
    }
}

/// Another connection holding the write lock: the CLI waits, then says the
/// database is locked (exit 1), and changes nothing.
#[test]
fn a_locked_database_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_db(dir.path(), "locked.db", "delete", 30_000);
    let holder = connect(&path);
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let out = cli(&["check", &path], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "run-recovery: database is locked: another connection has been writing to"
        ),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    holder.execute_batch("ROLLBACK").unwrap();
    let out = cli(&["check", &path], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
