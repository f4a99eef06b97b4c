//! In-process integration tests of the core (statically registered).
mod common;

use common::*;
use serde_json::json;

#[test]
fn install_returns_the_config_and_is_idempotent() {
    let conn = db();
    let cfg: String = one(&conn, "SELECT run_recovery_install()").unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["table"], "protocol_runs");
    assert_eq!(cfg["stale_after_ms"], 30000);
    let objects = |c: &rusqlite::Connection| -> Vec<(String, String)> {
        c.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE name LIKE 'run_recovery%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    };
    let first = objects(&conn);
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "run_recovery_act_checkpoint",
            "run_recovery_act_dismiss",
            "run_recovery_act_fail",
            "run_recovery_act_heartbeat",
            "run_recovery_act_resume",
            "run_recovery_act_unknown",
            "run_recovery_actions",
            "run_recovery_guard_check",
            "run_recovery_guard_check_do",
            "run_recovery_guard_repair",
            "run_recovery_guard_repair_do",
            "run_recovery_lease_guard",
            "run_recovery_orphans",
            "run_recovery_replace_guard",
            "run_recovery_replace_keep",
            "run_recovery_replaced",
            "run_recovery_runs",
            "run_recovery_settings",
            "run_recovery_stamp",
            "run_recovery_stamp_do",
            "run_recovery_stamp_insert",
            "run_recovery_stamp_live",
        ]
    );
    let again: String = one(&conn, "SELECT run_recovery_install()").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap(),
        cfg
    );
    assert_eq!(objects(&conn), first);
    // A config given once is kept by a later install without one.
    one::<String>(
        &conn,
        r#"SELECT run_recovery_install('{"stale_after_ms": 5000}')"#,
    )
    .unwrap();
    let kept: String = one(&conn, "SELECT run_recovery_install()").unwrap();
    assert!(kept.contains("\"stale_after_ms\":5000"), "{kept}");
    assert_eq!(
        one::<String>(&conn, "SELECT run_recovery_config()").unwrap(),
        kept
    );
}

#[test]
fn the_checked_in_sql_equals_what_install_generates() {
    let file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/install.sql")).unwrap();
    let generated =
        run_recovery::sqlgen::install_sql_file(&run_recovery::config::Config::default());
    assert!(
        file == generated,
        "sql/install.sql is stale: run `make sql`"
    );
    // And install really runs exactly those statements: applying the file to a
    // database without the extension gives the same schema as the function.
    let plain = rusqlite::Connection::open_in_memory().unwrap();
    plain.execute_batch(SCHEMA).unwrap();
    plain.execute_batch(&file).unwrap();
    let conn = installed();
    let schema = |c: &rusqlite::Connection| -> Vec<String> {
        column(
            c,
            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name",
            [],
        )
    };
    assert_eq!(schema(&plain), schema(&conn));
}

#[test]
fn uninstall_drops_objects_and_keeps_data() {
    let conn = installed();
    add_run(&conn, "a", "running", Some(r#"{"app":1}"#));
    let before = table_rows(&conn, "protocol_runs");
    let out: String = one(&conn, "SELECT run_recovery_uninstall()").unwrap();
    assert!(out.contains("\"uninstalled\":true"), "{out}");
    assert_eq!(table_rows(&conn, "protocol_runs"), before);
    let left: i64 = one(
        &conn,
        "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'run_recovery%'",
    )
    .unwrap();
    assert_eq!(left, 0);
    let e = one::<i64>(&conn, "SELECT run_heartbeat('a')").unwrap_err();
    assert!(
        e.contains("run_heartbeat: run_recovery is not installed"),
        "{e}"
    );
    let e = one::<String>(&conn, "SELECT run_recovery_uninstall()").unwrap_err();
    assert!(
        e.contains("run_recovery_uninstall: run_recovery is not installed"),
        "{e}"
    );
}

#[test]
fn every_function_says_when_not_installed() {
    let conn = db();
    add_run(&conn, "a", "running", None);
    for (f, sql) in [
        ("run_heartbeat", "SELECT run_heartbeat('a')"),
        ("run_checkpoint", "SELECT run_checkpoint('a', 1)"),
        ("recover_run", "SELECT recover_run('a', 'fail')"),
        ("run_recovery_config", "SELECT run_recovery_config()"),
        ("orphaned_runs", "SELECT count(*) FROM orphaned_runs"),
    ] {
        let e = conn
            .query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{f}: run_recovery is not installed")),
            "{sql}: {e}"
        );
        assert!(e.contains("run_recovery_install()"), "{e}");
    }
}

#[test]
fn install_refuses_missing_table_and_columns_and_changes_nothing() {
    let conn = db();
    for (config, msg) in [
        (r#"{"table":"nope"}"#, "no table 'nope'"),
        (
            r#"{"status_column":"state"}"#,
            "has no column 'state' (config key 'status_column')",
        ),
        (
            r#"{"name_column":"title"}"#,
            "has no column 'title' (config key 'name_column')",
        ),
        (r#"{"tabel":"x"}"#, "unknown config key 'tabel'"),
        (r#"{"live_statuses":[]}"#, "live_statuses"),
        ("[1]", "must be a JSON object"),
    ] {
        let e = conn
            .query_row("SELECT run_recovery_install(?1)", [config], |r| {
                r.get::<_, String>(0)
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("run_recovery_install: ") && e.contains(msg),
            "{config}: {e}"
        );
        let n: i64 = one(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'run_recovery%'",
        )
        .unwrap();
        assert_eq!(n, 0, "refused install left objects behind");
    }
}

#[test]
fn a_hostile_table_name_is_quoted_never_executed() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    run_recovery::register(&conn).unwrap();
    let hostile = r#"x"; DROP TABLE y; --"#;
    conn.execute_batch(&format!(
        "CREATE TABLE y(v); INSERT INTO y VALUES (1);
         CREATE TABLE \"{}\" (id TEXT PRIMARY KEY, status TEXT, meta TEXT);",
        hostile.replace('"', "\"\"")
    ))
    .unwrap();
    let config =
        json!({"table": hostile, "id_column": "id", "metadata_column": "meta"}).to_string();
    conn.query_row("SELECT run_recovery_install(?1)", [&config], |_| Ok(()))
        .unwrap();
    conn.execute(
        &format!(
            "INSERT INTO \"{}\" VALUES ('r', 'running', NULL)",
            hostile.replace('"', "\"\"")
        ),
        [],
    )
    .unwrap();
    let hb: i64 = one(&conn, "SELECT run_heartbeat('r')").unwrap();
    assert!(hb > 1_700_000_000_000);
    let y: i64 = one(&conn, "SELECT count(*) FROM y").unwrap();
    assert_eq!(y, 1, "table y must survive");
    // Refused when no such table exists, and nothing runs either.
    let e = conn
        .query_row(
            "SELECT run_recovery_install(?1)",
            [r#"{"table":"z\"; DROP TABLE y; --"}"#],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("no table"), "{e}");
    assert_eq!(one::<i64>(&conn, "SELECT count(*) FROM y").unwrap(), 1);
}

#[test]
fn transitions_into_live_statuses_stamp_a_heartbeat() {
    let conn = installed();
    let t0 = now_ms();
    add_run(&conn, "q", "queued", Some(r#"{"app":"x"}"#));
    assert_eq!(
        meta(&conn, "q"),
        json!({"app":"x"}),
        "queued is not live: no stamp"
    );
    conn.execute(
        "UPDATE protocol_runs SET status = 'PREPARING' WHERE accession_id = 'q'",
        [],
    )
    .unwrap();
    let m = meta(&conn, "q");
    assert!(m["lastHeartbeat"].as_i64().unwrap() >= t0 - 5, "{m}");
    assert_eq!(m["lease"], 1);
    assert_eq!(m["app"], "x");
    add_run(&conn, "n", "running", None);
    assert!(meta(&conn, "n")["lastHeartbeat"].as_i64().unwrap() >= t0 - 5);
    // From a NULL status, into the spelling the trigger tests last.
    add_run(&conn, "z", "completed", Some(r#"{"lastHeartbeat":1000}"#));
    conn.execute_batch(
        "UPDATE protocol_runs SET status = NULL WHERE accession_id = 'z';
         UPDATE protocol_runs SET status = 'Requires_intervention' WHERE accession_id = 'z';",
    )
    .unwrap();
    assert!(meta(&conn, "z")["lastHeartbeat"].as_i64().unwrap() >= t0 - 5);
    // Between two live statuses: no stamp (the executor's heartbeat stands).
    conn.execute_batch(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', 1000)
           WHERE accession_id = 'z';
         UPDATE protocol_runs SET status = 'PAUSED' WHERE accession_id = 'z';
         UPDATE protocol_runs SET status = 'running' WHERE accession_id = 'z';",
    )
    .unwrap();
    assert_eq!(meta(&conn, "z")["lastHeartbeat"], 1000);
    // Malformed metadata is never overwritten, and the app's write still succeeds.
    add_run(&conn, "bad", "queued", Some("{oops"));
    conn.execute(
        "UPDATE protocol_runs SET status = 'running' WHERE accession_id = 'bad'",
        [],
    )
    .unwrap();
    let raw: String = one(
        &conn,
        "SELECT properties_json FROM protocol_runs WHERE accession_id = 'bad'",
    )
    .unwrap();
    assert_eq!(raw, "{oops");
}

#[test]
fn install_stamps_live_runs_without_a_heartbeat_and_keeps_existing_ones() {
    let conn = db();
    add_run(&conn, "fresh", "running", None);
    add_run(&conn, "old", "RUNNING", Some(r#"{"lastHeartbeat": 5}"#));
    add_run(&conn, "done", "completed", None);
    let t0 = now_ms();
    one::<String>(&conn, "SELECT run_recovery_install()").unwrap();
    assert!(meta(&conn, "fresh")["lastHeartbeat"].as_i64().unwrap() >= t0 - 5);
    assert_eq!(
        meta(&conn, "old")["lastHeartbeat"],
        5,
        "a real heartbeat is kept"
    );
    assert_eq!(meta(&conn, "done"), serde_json::Value::Null);
}

#[test]
fn heartbeat_stamps_forward_only_and_refuses_bad_runs() {
    let conn = installed();
    add_run(&conn, "a", "running", Some(r#"{"app":1}"#));
    let t0 = now_ms();
    let hb: i64 = one(&conn, "SELECT run_heartbeat('a')").unwrap();
    assert!(hb >= t0);
    assert_eq!(meta(&conn, "a")["lastHeartbeat"], hb);
    // Ahead within stale_after_ms (another host's clock): kept.
    let future = now_ms() + 20_000;
    set_heartbeat(&conn, "a", future);
    assert_eq!(
        one::<i64>(&conn, "SELECT run_heartbeat('a')").unwrap(),
        future,
        "never backwards"
    );
    let cp: i64 = one(&conn, "SELECT run_checkpoint('a', 1, '{}')").unwrap();
    assert_eq!(cp, future, "a checkpoint keeps a heartbeat that is ahead");
    assert_eq!(meta(&conn, "a")["checkpointStep"], 1);
    // More than stale_after_ms ahead (a clock that was wrong): kept, the run
    // could not be found orphaned until then; the executor's stamp repairs it.
    let wrong = now_ms() + 1_000_000;
    set_heartbeat(&conn, "a", wrong);
    let cp: i64 = one(&conn, "SELECT run_checkpoint('a', 2, '{}')").unwrap();
    assert!(cp < future + 1_000 && cp >= t0, "repaired: {cp}");
    set_heartbeat(&conn, "a", wrong);
    let hb: i64 = one(&conn, "SELECT run_heartbeat('a')").unwrap();
    assert!(hb < future + 1_000 && hb >= t0, "repaired: {hb}");
    assert_eq!(meta(&conn, "a")["lastHeartbeat"], hb);
    add_run(&conn, "done", "completed", None);
    // Inserted as an array: no stamp, nothing for the guard to keep.
    add_run(&conn, "arr", "running", Some("[1,2]"));
    add_run(&conn, "bad", "queued", Some("{nope"));
    conn.execute(
        "UPDATE protocol_runs SET status = 'running' WHERE accession_id = 'bad'",
        [],
    )
    .unwrap();
    let before = snapshot(&conn);
    for (sql, msg) in [
        (
            "SELECT run_heartbeat('zz')",
            "run_heartbeat: no run with accession_id 'zz'",
        ),
        (
            "SELECT run_heartbeat(NULL)",
            "run_heartbeat: run id must be text or an integer, found NULL",
        ),
        ("SELECT run_heartbeat(x'0102')", "found a blob of 2 bytes"),
        (
            "SELECT run_heartbeat('done')",
            "run 'done' is not live, found status 'completed'",
        ),
        (
            "SELECT run_heartbeat('arr')",
            "metadata of run 'arr' is a JSON array, not an object",
        ),
        (
            "SELECT run_heartbeat('bad')",
            "metadata of run 'bad' is not valid JSON",
        ),
        (
            "SELECT run_heartbeat('a', 2)",
            "stale lease 2 for run 'a', found lease 1",
        ),
        (
            "SELECT run_heartbeat('a', 0)",
            "lease must be an integer >= 1, found 0",
        ),
        (
            "SELECT run_heartbeat('a', 'x')",
            "lease must be an integer >= 1, found 'x'",
        ),
    ] {
        let e = one::<i64>(&conn, sql).unwrap_err();
        assert!(e.contains(msg), "{sql}: {e}");
    }
    assert_eq!(
        snapshot(&conn),
        before,
        "refused heartbeats changed nothing"
    );
}

#[test]
fn checkpoint_records_step_state_and_heartbeat_in_one_write() {
    let conn = installed();
    add_run(&conn, "a", "running", Some(r#"{"app":1}"#));
    let hb: i64 = one(
        &conn,
        r#"SELECT run_checkpoint('a', 2, '{"plate": [1, 2]}', 1)"#,
    )
    .unwrap();
    let m = meta(&conn, "a");
    assert_eq!(m["checkpointStep"], 2);
    assert_eq!(m["checkpointState"], json!({"plate":[1,2]}));
    assert_eq!(m["lastHeartbeat"], hb);
    assert_eq!(m["app"], 1);
    one::<i64>(&conn, "SELECT run_checkpoint('a', 2)").unwrap();
    assert_eq!(
        meta(&conn, "a")["checkpointState"],
        serde_json::Value::Null,
        "no state: null"
    );
    one::<i64>(&conn, "SELECT run_checkpoint('a', 3, 7.5)").unwrap();
    assert_eq!(meta(&conn, "a")["checkpointState"], 7.5);
    let before = snapshot(&conn);
    for (sql, msg) in [
        (
            "SELECT run_checkpoint('a', 1)",
            "step 1 of run 'a' is behind its committed checkpoint, found checkpointStep 3",
        ),
        (
            "SELECT run_checkpoint('a', -1)",
            "run_checkpoint: step must be an integer >= 0, found -1",
        ),
        (
            "SELECT run_checkpoint('a', 2.5)",
            "step must be an integer >= 0, found 2.5",
        ),
        ("SELECT run_checkpoint('a', '4')", "found '4'"),
        (
            "SELECT run_checkpoint('a', 4, 'plate 3')",
            "state must be JSON text (wrap a plain string in json_quote()), found 'plate 3'",
        ),
        (
            "SELECT run_checkpoint('a', 4, x'00')",
            "state must be JSON text, a number or NULL",
        ),
        ("SELECT run_checkpoint('a', 4, NULL, 9)", "stale lease 9"),
        (
            "SELECT run_checkpoint('nope', 4)",
            "run_checkpoint: no run with accession_id 'nope'",
        ),
    ] {
        let e = one::<i64>(&conn, sql).unwrap_err();
        assert!(e.contains(msg), "{sql}: {e}");
    }
    assert_eq!(snapshot(&conn), before);
    one::<i64>(
        &conn,
        "SELECT run_checkpoint('a', 4, json_quote('plate 3'))",
    )
    .unwrap();
    assert_eq!(meta(&conn, "a")["checkpointState"], "plate 3");
}

#[test]
fn orphaned_runs_lists_stale_live_runs_oldest_first() {
    let conn = installed();
    let now = now_ms();
    add_run(&conn, "young", "running", None);
    add_run(&conn, "old", "RUNNING", Some(r#"{"app":1}"#));
    add_run(&conn, "older", "Paused", None);
    add_run(&conn, "done", "completed", Some(r#"{"lastHeartbeat": 1}"#));
    add_run(&conn, "waiting", "queued", Some(r#"{"lastHeartbeat": 1}"#));
    set_heartbeat(&conn, "old", now - 60_000);
    set_heartbeat(&conn, "older", now - 90_000);
    one::<i64>(&conn, r#"SELECT run_checkpoint('older', 5, '{"k":1}')"#).unwrap();
    set_heartbeat(&conn, "older", now - 90_000);
    type Row = (String, String, i64, Option<i64>, Option<String>, i64);
    let rows: Vec<Row> = conn
        .prepare("SELECT run_id, status, age_ms, checkpoint_step, checkpoint_state, lease FROM orphaned_runs(30000, ?1)")
        .unwrap()
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "older".into(),
                "Paused".into(),
                90_000,
                Some(5),
                Some(r#"{"k":1}"#.into()),
                1
            ),
            ("old".into(), "RUNNING".into(), 60_000, None, None, 1),
        ]
    );
    // Default threshold (30 s) and wall clock; the view agrees.
    let ids = |sql: &str| -> Vec<String> { column(&conn, sql, []) };
    assert_eq!(
        ids("SELECT run_id FROM orphaned_runs"),
        vec!["older", "old"]
    );
    assert_eq!(
        ids("SELECT run_id FROM run_recovery_orphans ORDER BY age_ms DESC, run_id"),
        vec!["older", "old"]
    );
    assert_eq!(
        ids("SELECT run_id FROM orphaned_runs(70000)"),
        vec!["older"]
    );
    // Hidden columns report what was used.
    let (t, n, i): (i64, i64, i64) = conn
        .query_row(
            "SELECT threshold_ms, now_ms, include_dismissed FROM orphaned_runs(1000, ?1)",
            [now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((t, n, i), (1000, now, 0));
    // NULL input: no rows. Bad input: a clear error.
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM orphaned_runs(NULL)").unwrap(),
        0
    );
    for (sql, msg) in [
        (
            "SELECT count(*) FROM orphaned_runs(-1)",
            "orphaned_runs: threshold_ms must be an integer >= 0, found -1",
        ),
        (
            "SELECT count(*) FROM orphaned_runs(1.5)",
            "threshold_ms must be an integer >= 0, found 1.5",
        ),
        ("SELECT count(*) FROM orphaned_runs('soon')", "found 'soon'"),
        (
            "SELECT count(*) FROM orphaned_runs(1, -5)",
            "now_ms must be an integer >= 0, found -5",
        ),
        (
            "SELECT count(*) FROM orphaned_runs WHERE include_dismissed = 2",
            "include_dismissed must be 0 or 1, found 2",
        ),
    ] {
        let e = one::<i64>(&conn, sql).unwrap_err();
        assert!(e.contains(msg), "{sql}: {e}");
    }
}

#[test]
fn recover_resume_hands_over_the_checkpoint_and_fences_the_old_executor() {
    let conn = installed();
    add_run(&conn, "a", "running", Some(r#"{"app":"keep"}"#));
    one::<i64>(&conn, r#"SELECT run_checkpoint('a', 3, '{"tip": 4}', 1)"#).unwrap();
    set_heartbeat(&conn, "a", now_ms() - 60_000);
    let out: String = one(&conn, "SELECT recover_run('a', 'resume')").unwrap();
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["action"], "resume");
    assert_eq!(out["lease"], 2);
    assert_eq!(out["resumes"], 1);
    assert_eq!(out["checkpoint_step"], 3);
    assert_eq!(out["checkpoint_state"], json!({"tip":4}));
    assert_eq!(status(&conn, "a"), "running");
    let m = meta(&conn, "a");
    assert_eq!(m["app"], "keep");
    assert_eq!(m["recoveryLog"].as_array().unwrap().len(), 1);
    assert_eq!(m["recoveryLog"][0]["leaseBefore"], 1);
    // The old executor is refused, the new one carries on.
    let e = one::<i64>(&conn, "SELECT run_heartbeat('a', 1)").unwrap_err();
    assert!(
        e.contains("stale lease 1 for run 'a', found lease 2"),
        "{e}"
    );
    let e = one::<i64>(&conn, "SELECT run_checkpoint('a', 4, NULL, 1)").unwrap_err();
    assert!(e.contains("stale lease 1"), "{e}");
    one::<i64>(&conn, "SELECT run_checkpoint('a', 4, NULL, 2)").unwrap();
    // The new executor's checkpoint is a sign of life: no recovery now.
    let e = one::<String>(&conn, "SELECT recover_run('a', 'resume')").unwrap_err();
    assert!(e.contains("run 'a' is still alive: last heartbeat"), "{e}");
}

#[test]
fn recover_fail_writes_failed_in_the_rows_case_with_end_time() {
    let conn = installed();
    for (id, st) in [("l", "running"), ("u", "RUNNING"), ("c", "Paused")] {
        add_run(&conn, id, st, None);
        set_heartbeat(&conn, id, 1);
    }
    for (id, expect) in [("l", "failed"), ("u", "FAILED"), ("c", "Failed")] {
        let out: String = conn
            .query_row("SELECT recover_run(?1, 'fail')", [id], |r| r.get(0))
            .unwrap();
        assert!(out.contains(&format!("\"status\":\"{expect}\"")), "{out}");
        assert_eq!(status(&conn, id), expect);
        assert_eq!(meta(&conn, id)["lease"], 2);
    }
    let end: String = one(
        &conn,
        "SELECT end_time FROM protocol_runs WHERE accession_id = 'u'",
    )
    .unwrap();
    assert!(end.ends_with('Z') && end.contains('T'), "{end}");
    let e = one::<String>(&conn, "SELECT recover_run('u', 'fail')").unwrap_err();
    assert!(
        e.contains("already recovered by another client (fail"),
        "{e}"
    );
    let e = one::<i64>(&conn, "SELECT run_heartbeat('u', 1)").unwrap_err();
    assert!(e.contains("not live, found status 'FAILED'"), "{e}");
}

#[test]
fn recover_refusals_name_the_reason_and_change_nothing() {
    let conn = installed();
    add_run(&conn, "alive", "running", None);
    add_run(&conn, "done", "completed", None);
    add_run(&conn, "tired", "running", Some(r#"{"resumes": 3}"#));
    set_heartbeat(&conn, "tired", 1);
    add_run(&conn, "arr", "running", Some("[]"));
    let before = snapshot(&conn);
    for (sql, msg) in [
        ("SELECT recover_run('alive', 'fail')", "recover_run: run 'alive' is still alive: last heartbeat"),
        ("SELECT recover_run('done', 'fail')", "run 'done' is not live, found status 'completed'"),
        ("SELECT recover_run('tired', 'resume')", "already resumed 3 times, found max_resumes 3; mark it as failed instead: SELECT recover_run('tired', 'fail')"),
        ("SELECT recover_run('nope', 'fail')", "recover_run: no run with accession_id 'nope'"),
        ("SELECT recover_run('alive', 'restart')", "recover_run: unknown action 'restart', expected one of 'resume', 'fail', 'dismiss'"),
        ("SELECT recover_run('alive', NULL)", "unknown action NULL"),
        ("SELECT recover_run('alive', 'fail', -3)", "threshold_ms must be an integer >= 0, found -3"),
        ("SELECT recover_run('arr', 'fail', 0)", "metadata of run 'arr' is a JSON array"),
        ("SELECT recover_run(NULL, 'fail')", "run id must be text or an integer, found NULL"),
    ] {
        let e = one::<String>(&conn, sql).unwrap_err();
        assert!(e.contains(msg), "{sql}: {e}");
    }
    assert_eq!(snapshot(&conn), before);
}

#[test]
fn dismiss_hides_an_orphan_until_it_heartbeats_again() {
    let conn = installed();
    add_run(&conn, "a", "running", None);
    set_heartbeat(&conn, "a", 1000);
    one::<String>(&conn, "SELECT recover_run('a', 'dismiss')").unwrap();
    assert_eq!(status(&conn, "a"), "running");
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM orphaned_runs").unwrap(),
        0
    );
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM run_recovery_orphans").unwrap(),
        0
    );
    let d: i64 = one(
        &conn,
        "SELECT dismissed FROM orphaned_runs WHERE include_dismissed = 1",
    )
    .unwrap();
    assert_eq!(d, 1);
    let e = one::<String>(&conn, "SELECT recover_run('a', 'dismiss')").unwrap_err();
    assert!(e.contains("already dismissed"), "{e}");
    set_heartbeat(&conn, "a", 2000);
    assert_eq!(
        one::<i64>(&conn, "SELECT count(*) FROM orphaned_runs").unwrap(),
        1,
        "back after a heartbeat"
    );
}

#[test]
fn plain_sql_writes_are_fenced_and_merged_back() {
    let conn = installed();
    add_run(&conn, "a", "running", Some(r#"{"app":1,"other":"x"}"#));
    one::<i64>(&conn, r#"SELECT run_checkpoint('a', 2, '{"s":1}')"#).unwrap();
    let stale_copy = meta(&conn, "a").to_string();
    set_heartbeat(&conn, "a", 1);
    one::<String>(&conn, "SELECT recover_run('a', 'resume')").unwrap();
    // A zombie writes back what it read before the recovery: refused.
    let e = conn
        .execute(
            "UPDATE protocol_runs SET properties_json = ?1 WHERE accession_id = 'a'",
            [&stale_copy],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run_recovery_lease_guard: stale write refused"),
        "{e}"
    );
    // An app write that drops every recovery key gets them back.
    let before = meta(&conn, "a");
    conn.execute(
        r#"UPDATE protocol_runs SET properties_json = '{"app":2}' WHERE accession_id = 'a'"#,
        [],
    )
    .unwrap();
    let after = meta(&conn, "a");
    assert_eq!(after["app"], 2);
    for k in [
        "lastHeartbeat",
        "lease",
        "resumes",
        "checkpointStep",
        "checkpointState",
        "recoveryLog",
    ] {
        assert_eq!(after[k], before[k], "{k} not merged back");
    }
    // A write with an older checkpoint does not move it back (a plain write may
    // backdate the heartbeat: that is how tests and admins make an orphan).
    let mut older = after.clone();
    older["checkpointStep"] = json!(1);
    older["checkpointState"] = json!("old");
    older["lastHeartbeat"] = json!(5);
    older["recoveryLog"] = json!([]);
    conn.execute(
        "UPDATE protocol_runs SET properties_json = ?1 WHERE accession_id = 'a'",
        [older.to_string()],
    )
    .unwrap();
    let now = meta(&conn, "a");
    assert_eq!(now["checkpointStep"], 2);
    assert_eq!(now["checkpointState"], json!({"s":1}));
    assert_eq!(now["lastHeartbeat"], 5);
    assert_eq!(
        now["recoveryLog"], before["recoveryLog"],
        "the log never shrinks"
    );
    // NULL metadata: the recovery keys come back into an empty object.
    conn.execute(
        "UPDATE protocol_runs SET properties_json = NULL WHERE accession_id = 'a'",
        [],
    )
    .unwrap();
    assert_eq!(meta(&conn, "a")["lease"], 2);
}

#[test]
fn a_rolled_back_transaction_leaves_nothing_behind() {
    let conn = installed();
    add_run(&conn, "a", "running", None);
    let before = snapshot(&conn);
    conn.execute_batch("BEGIN").unwrap();
    one::<i64>(&conn, "SELECT run_checkpoint('a', 1, '{}')").unwrap();
    set_heartbeat(&conn, "a", 1);
    one::<String>(&conn, "SELECT recover_run('a', 'fail', 0)").unwrap();
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(snapshot(&conn), before);
    conn.execute_batch("BEGIN").unwrap();
    one::<String>(&conn, "SELECT run_recovery_uninstall()").unwrap();
    conn.execute_batch("ROLLBACK").unwrap();
    assert!(
        one::<String>(&conn, "SELECT run_recovery_config()").is_ok(),
        "uninstall rolled back"
    );
}

#[test]
fn a_custom_table_with_integer_ids_works() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    run_recovery::register(&conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE jobs(id INTEGER PRIMARY KEY, state TEXT, info TEXT);
         CREATE INDEX jobs_state ON jobs(state);
         INSERT INTO jobs VALUES (7, 'ACTIVE', '{\"who\":\"me\"}'), (8, 'DONE', NULL);",
    )
    .unwrap();
    let cfg: String = one(
        &conn,
        r#"SELECT run_recovery_install('{"table":"jobs","id_column":"id","status_column":"state","metadata_column":"info","live_statuses":["active"],"stale_after_ms":1000}')"#,
    )
    .unwrap();
    assert!(
        cfg.contains("\"name_column\":null"),
        "absent optional column: {cfg}"
    );
    assert!(one::<i64>(&conn, "SELECT run_heartbeat(7)").unwrap() > 0);
    let e = one::<i64>(&conn, "SELECT run_heartbeat(8)").unwrap_err();
    assert!(
        e.contains("run '8' is not live, found status 'DONE'"),
        "{e}"
    );
    let e = one::<i64>(&conn, "SELECT run_heartbeat(9)").unwrap_err();
    assert!(e.contains("no run with id '9'"), "{e}");
    allow_backdating(&conn);
    conn.execute(
        "UPDATE jobs SET info = json_set(info, '$.lastHeartbeat', 1) WHERE id = 7",
        [],
    )
    .unwrap();
    assert_eq!(
        one::<i64>(&conn, "SELECT run_id FROM orphaned_runs").unwrap(),
        7
    );
    let out: String = one(&conn, "SELECT recover_run(7, 'fail')").unwrap();
    assert!(out.contains("\"status\":\"FAILED\""), "{out}");
    let info: String = one(&conn, "SELECT info FROM jobs WHERE id = 7").unwrap();
    assert!(info.contains("\"who\":\"me\""), "{info}");
}

#[test]
fn racing_resumes_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        run_recovery::register(&conn).unwrap();
        one::<String>(
            &conn,
            r#"SELECT run_recovery_install('{"max_resumes": 1000}')"#,
        )
        .unwrap();
        add_run(&conn, "a", "running", None);
    }
    for round in 0..20 {
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            set_heartbeat(&conn, "a", 1);
        }
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let conn = rusqlite::Connection::open(&path).unwrap();
                    conn.busy_timeout(std::time::Duration::from_secs(10))
                        .unwrap();
                    run_recovery::register(&conn).unwrap();
                    barrier.wait();
                    one::<String>(&conn, "SELECT recover_run('a', 'resume')")
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                e.contains("already recovered by another client"),
                "round {round}: {e}"
            );
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(meta(&conn, "a")["lease"], round + 2);
        assert_eq!(
            meta(&conn, "a")["recoveryLog"].as_array().unwrap().len(),
            round as usize + 1
        );
    }
}

/// One config reader, one error policy: every function says "database is
/// locked" when it cannot read the settings for a lock, and "not installed"
/// only when they are missing.
#[test]
fn a_locked_database_is_locked_not_uninstalled_for_every_function() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let conn = connect(&path);
    conn.execute_batch(SCHEMA).unwrap();
    install(&conn, "{}");
    add_run(&conn, "r1", "running", None);
    conn.busy_timeout(std::time::Duration::ZERO).unwrap();
    // A rollback journal: an EXCLUSIVE writer keeps every reader out.
    let blocker = open_plain(&path);
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for (sql, func) in [
        ("SELECT run_recovery_config()", "run_recovery_config"),
        ("SELECT run_recovery_uninstall()", "run_recovery_uninstall"),
        ("SELECT run_heartbeat('r1')", "run_heartbeat"),
        ("SELECT run_checkpoint('r1', 1)", "run_checkpoint"),
        ("SELECT recover_run('r1', 'fail', 0)", "recover_run"),
    ] {
        let e = conn
            .query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .unwrap_err();
        assert_eq!(err_text(&e), format!("{func}: database is locked"), "{sql}");
    }
    // A failed install (it cannot take the lock) leaves the install and the
    // connection as they were.
    let e = conn
        .query_row("SELECT run_recovery_install()", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap_err();
    assert_eq!(err_text(&e), "run_recovery_install: database is locked");
    blocker.execute_batch("ROLLBACK").unwrap();
    assert!(one::<i64>(&conn, "SELECT run_heartbeat('r1')").is_ok());
    one::<String>(&conn, "SELECT run_recovery_install()").unwrap();
    assert!(one::<i64>(&conn, "SELECT run_heartbeat('r1')").is_ok());
    one::<String>(&conn, "SELECT run_recovery_uninstall()").unwrap();
    for func in ["run_recovery_config", "run_recovery_uninstall"] {
        let e = one::<String>(&conn, &format!("SELECT {func}()")).unwrap_err();
        assert!(
            e.starts_with(&format!("{func}: run_recovery is not installed")),
            "{e}"
        );
    }
}
