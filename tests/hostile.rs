//! The hostile campaign (tests/hostile/cases.json) on the bundled SQLite
//! 3.53: each case with the extension's install, and with sql/install.sql
//! applied by a connection that has no extension. The same cases run on
//! 3.40.1 in tests/hostile/test_hostile.py; tests/hostile/README.md says
//! how a case reads.
mod common;

use common::SCHEMA;
use rusqlite::Connection;
use serde_json::Value;

const CASES: &str = include_str!("hostile/cases.json");
const SETUP: &str = include_str!("hostile/setup.sql");
const INSTALL: &str = include_str!("../sql/install.sql");
const M: &str = "(SELECT properties_json FROM protocol_runs WHERE accession_id = 'r')";
const B: &str = "(SELECT m FROM temp.hostile_before)";

/// `M` and `B` as whole words replaced by the run's metadata now and before.
fn expand(sql: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = sql.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let word = |j: usize| {
            chars
                .get(j)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        };
        let alone = !word(i.wrapping_sub(1)) && !word(i + 1);
        match c {
            'M' if alone => out.push_str(M),
            'B' if alone => out.push_str(B),
            _ => out.push(c),
        }
    }
    out
}

fn connect(functions: bool) -> Connection {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA).unwrap();
    if functions {
        run_recovery::register(&c).unwrap();
        text(&c, "SELECT run_recovery_install()");
    } else {
        c.execute_batch(INSTALL).unwrap();
    }
    c.execute_batch(SETUP).unwrap();
    c
}

fn run(c: &Connection, sql: &str) -> Result<(), String> {
    let mut st = c.prepare(&expand(sql)).map_err(|e| e.to_string())?;
    let mut rows = st.raw_query();
    while rows.next().map_err(|e| e.to_string())?.is_some() {}
    Ok(())
}

fn snapshot(c: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut st = c
        .prepare("SELECT * FROM protocol_runs ORDER BY accession_id")
        .unwrap();
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Plays one case; returns what went wrong, if anything.
fn play(spec: &Value, case: &Value, functions: bool) -> Result<(), String> {
    let id = case["id"].as_str().unwrap();
    let c = connect(functions);
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    for sql in strs(&case["pre"]) {
        run(&c, &sql).map_err(|e| format!("{id}: pre {sql}: {e}"))?;
    }
    let write = strs(&case["write"]);
    let (last, first) = write.split_last().unwrap();
    for sql in first {
        run(&c, sql).map_err(|e| format!("{id}: {sql}: {e}"))?;
    }
    c.execute_batch(
        "CREATE TEMP TABLE hostile_before AS SELECT properties_json AS m FROM protocol_runs WHERE accession_id = 'r'",
    )
    .unwrap();
    let before = snapshot(&c);
    let result = run(&c, last);
    let expect = case["expect"].as_str().unwrap();
    match (expect, &result) {
        ("ok", Err(e)) => return Err(format!("{id}: refused: {e}")),
        ("ok", Ok(())) | ("any", _) => {}
        (want, Ok(())) => return Err(format!("{id}: accepted, expected {want}")),
        (want, Err(e)) => {
            let text = want.strip_prefix("refused:").unwrap();
            if !e.contains(text) {
                return Err(format!("{id}: {e:?} does not contain {text:?}"));
            }
        }
    }
    if result.is_err() && snapshot(&c) != before {
        return Err(format!("{id}: a refused write changed the table"));
    }
    let mut checks = strs(&case["check"]);
    if case["keeps"].as_bool() != Some(false) {
        checks.extend(strs(&spec["keeps"]));
        if case["keeps_app"].as_bool() != Some(false) {
            checks.extend(strs(&spec["keeps_app"]));
        }
    }
    for chk in checks {
        let got: Option<i64> = c
            .query_row(&format!("SELECT {}", expand(&chk)), [], |r| r.get(0))
            .map_err(|e| format!("{id}: {chk}: {e}"))?;
        if got != Some(1) {
            let m: Option<String> = c
                .query_row(&format!("SELECT {M}"), [], |r| r.get(0))
                .unwrap();
            return Err(format!("{id}: {chk} is {got:?}; metadata now {m:?}"));
        }
    }
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    if ok != "ok" {
        return Err(format!("{id}: integrity_check {ok}"));
    }
    Ok(())
}

fn campaign(functions: bool) {
    let spec: Value = serde_json::from_str(CASES).unwrap();
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut played = 0;
    let failures: Vec<String> = cases
        .iter()
        .filter(|c| functions || c["needs"].as_str() != Some("functions"))
        .filter_map(|c| {
            played += 1;
            play(&spec, c, functions).err()
        })
        .collect();
    assert!(played >= 40, "{played} played");
    assert!(
        failures.is_empty(),
        "{} of {played} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_hostile_case_holds_with_the_extension() {
    campaign(true);
}

#[test]
fn every_hostile_case_holds_in_plain_sql() {
    campaign(false);
}

#[test]
fn a_broken_guarantee_is_caught() {
    // The campaign's own check: the same case against a guard that merges
    // nothing back (the lease guard dropped) must fail.
    let spec: Value = serde_json::from_str(CASES).unwrap();
    let case = spec["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "null-lease")
        .unwrap()
        .clone();
    let mut broken = case.clone();
    broken["pre"] = serde_json::json!(["DROP TRIGGER run_recovery_lease_guard"]);
    assert!(play(&spec, &case, false).is_ok());
    let e = play(&spec, &broken, false).unwrap_err();
    assert!(e.contains("$.lease"), "{e}");
}

#[test]
fn trusted_schema_off_keeps_every_write_working_on_this_sqlite() {
    // SQLite 3.53 lets triggers call JSON functions under trusted_schema=OFF
    // (3.40 does not: install refuses there, tests/hostile/test_hostile.py).
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA).unwrap();
    run_recovery::register(&c).unwrap();
    c.execute_batch("PRAGMA trusted_schema = OFF").unwrap();
    text(&c, "SELECT run_recovery_install()");
    c.execute_batch(SETUP).unwrap();
    c.execute_batch(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', NULL) WHERE accession_id = 'r'",
    )
    .unwrap();
    let lease: i64 = c
        .query_row(&format!("SELECT {M} ->> '$.lease'"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(lease, 2);
    let hb: i64 = c
        .query_row("SELECT run_heartbeat('r', 2)", [], |r| r.get(0))
        .unwrap();
    assert!(hb > 1_700_000_000_000);
}

/// The text `sql` returns (it must succeed).
fn text(c: &Connection, sql: &str) -> String {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The integer `sql` returns (it must succeed).
fn int(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn err_of(c: &Connection, sql: &str) -> String {
    match c.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0)) {
        Ok(v) => panic!("{sql}: expected a refusal, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Each of `sqls` is refused with `needle` in its message, and none of them
/// changed a row.
fn refused_alike(c: &Connection, sqls: &[&str], needle: &str) {
    let before = snapshot(c);
    for sql in sqls {
        let e = err_of(c, sql);
        assert!(e.contains(needle), "{sql}: {e}");
    }
    assert_eq!(snapshot(c), before);
}

fn lease_of(c: &Connection) -> i64 {
    c.query_row(&format!("SELECT {M} ->> '$.lease'"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_dropped_trigger_makes_every_function_refuse_until_install_runs_again() {
    let c = connect(true);
    // Warm: orphaned_runs connected keeps the stamp statements prepared
    // (see src/state.rs), and the config is cached.
    c.query_row("SELECT count(*) FROM orphaned_runs", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    for _ in 0..3 {
        int(&c, "SELECT run_heartbeat('r', 2)");
    }
    c.execute_batch("DROP TRIGGER run_recovery_lease_guard")
        .unwrap();
    let before = snapshot(&c);
    std::thread::sleep(std::time::Duration::from_millis(5));
    // The kept statement meets the changed schema: it writes nothing, and
    // this call says why.
    let e = err_of(&c, "SELECT run_heartbeat('r', 2)");
    assert_eq!(snapshot(&c), before);
    assert!(
        e.starts_with("run_heartbeat: ")
            && e.contains("missing: trigger run_recovery_lease_guard")
            && e.contains("run SELECT run_recovery_install() again"),
        "{e}"
    );
    // Not the first call only: every later one is refused, changing nothing.
    refused_alike(
        &c,
        &[
            "SELECT run_heartbeat('r', 2)",
            "SELECT run_checkpoint('r', 9, '{}', 2)",
            "SELECT recover_run('r', 'fail', 0)",
            "SELECT count(*) FROM orphaned_runs",
        ],
        "lease fence and merge-back are not in force",
    );
    assert_eq!(snapshot(&c), before);
    // The config still reads, and install puts the fence back.
    text(&c, "SELECT run_recovery_config()");
    text(&c, "SELECT run_recovery_install()");
    int(&c, "SELECT run_heartbeat('r', 2)");
    let e = c
        .execute_batch(
            "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 1) WHERE accession_id = 'r'",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("older lease"), "{e}");
}

/// SQLite's 12-step rebuild (what Alembic's `batch_alter_table` does): a new
/// table with one more column, the rows copied, the old table dropped (its
/// triggers go with it), the new one renamed.
fn rebuild(c: &Connection, legacy: bool) -> rusqlite::Result<()> {
    let pragma = if legacy { "ON" } else { "OFF" };
    let cols: String = c
        .prepare("SELECT group_concat(name, ', ') FROM pragma_table_info('protocol_runs')")?
        .query_row([], |r| r.get(0))?;
    let create: String = c.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = 'protocol_runs'",
        [],
        |r| r.get(0),
    )?;
    let create = create
        .replacen("protocol_runs", "_alembic_tmp_protocol_runs", 1)
        .replacen('(', "(\n  operator_note TEXT,", 1);
    c.execute_batch(&format!(
        "PRAGMA legacy_alter_table = {pragma};
         BEGIN;
         {create};
         INSERT INTO _alembic_tmp_protocol_runs ({cols}) SELECT {cols} FROM protocol_runs;
         DROP TABLE protocol_runs;
         ALTER TABLE _alembic_tmp_protocol_runs RENAME TO protocol_runs;
         COMMIT;"
    ))
}

#[test]
fn a_rebuilt_table_is_noticed_and_a_reinstall_restores_the_fence() {
    let c = connect(true);
    let rows_before = snapshot(&c);
    // legacy_alter_table OFF: the RENAME fails on the views and triggers
    // that name the table; rolled back, nothing is lost or changed.
    let e = rebuild(&c, false).unwrap_err().to_string();
    assert!(e.contains("no such table: main.protocol_runs"), "{e}");
    c.execute_batch("ROLLBACK").unwrap();
    assert_eq!(snapshot(&c), rows_before);
    int(&c, "SELECT run_heartbeat('r', 2)");
    // ON: the rebuild succeeds and the triggers are gone with the old table.
    rebuild(&c, true).unwrap();
    c.execute_batch("PRAGMA legacy_alter_table = OFF").unwrap();
    let e = err_of(&c, "SELECT run_heartbeat('r', 2)");
    assert!(
        e.contains("missing: trigger run_recovery_stamp_insert"),
        "{e}"
    );
    let e = err_of(&c, "SELECT recover_run('r', 'resume', 0)");
    assert!(e.contains("run SELECT run_recovery_install() again"), "{e}");
    // Reinstall: the fence is back and nothing was lost.
    text(&c, "SELECT run_recovery_install()");
    assert_eq!(lease_of(&c), 2);
    let e = c
        .execute_batch(
            "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 1) WHERE accession_id = 'r'",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("older lease"), "{e}");
    assert_eq!(lease_of(&c), 2);
}

#[test]
fn a_renamed_column_is_an_error_never_a_string_literal() {
    let c = connect(true);
    c.execute_batch("ALTER TABLE protocol_runs RENAME COLUMN properties_json TO meta")
        .unwrap();
    let e = err_of(&c, "SELECT run_heartbeat('r', 2)");
    assert!(
        e.contains("table 'protocol_runs' has no column 'properties_json' any more (config key 'metadata_column')"),
        "{e}"
    );
    let e = err_of(&c, "SELECT recover_run('r', 'fail', 0)");
    assert!(e.contains("no column 'properties_json'"), "{e}");
    // Install with the new name: everything works on the renamed column.
    c.query_row(
        r#"SELECT run_recovery_install('{"metadata_column":"meta"}')"#,
        [],
        |r| r.get::<_, String>(0),
    )
    .unwrap();
    int(&c, "SELECT run_heartbeat('r', 2)");
    let lease: i64 = c
        .query_row(
            "SELECT meta ->> '$.lease' FROM protocol_runs WHERE accession_id = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lease, 2);
}

#[test]
fn a_schema_change_that_keeps_the_install_whole_changes_no_answer() {
    let c = connect(true);
    let hb = |c: &Connection| -> i64 {
        c.query_row("SELECT run_heartbeat('r', 2)", [], |r| r.get(0))
            .unwrap()
    };
    c.query_row("SELECT count(*) FROM orphaned_runs", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    hb(&c);
    c.execute_batch(
        "CREATE INDEX ix_runs_name ON protocol_runs (name);
         CREATE TABLE app_notes (id INTEGER PRIMARY KEY, note TEXT);
         ALTER TABLE protocol_runs ADD COLUMN operator_note TEXT;",
    )
    .unwrap();
    for _ in 0..3 {
        assert!(hb(&c) > 1_700_000_000_000);
    }
    let n: i64 = c
        .query_row("SELECT run_checkpoint('r', 9, '{}', 2)", [], |r| r.get(0))
        .unwrap();
    assert!(n > 1_700_000_000_000);
}

/// A migration made by another connection (another process, the same file)
/// while this one keeps its statements prepared.
#[test]
fn a_trigger_dropped_by_another_connection_is_noticed_before_anything_is_written() {
    let dir = std::env::temp_dir().join(format!("rr-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.db");
    let _ = std::fs::remove_file(&path);
    let a = Connection::open(&path).unwrap();
    a.execute_batch(SCHEMA).unwrap();
    run_recovery::register(&a).unwrap();
    text(&a, "SELECT run_recovery_install()");
    a.execute_batch(SETUP).unwrap();
    a.query_row("SELECT count(*) FROM orphaned_runs", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    for _ in 0..3 {
        int(&a, "SELECT run_heartbeat('r', 2)");
        a.query_row("SELECT run_checkpoint('r', 5, '{}', 2)", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    }
    let b = Connection::open(&path).unwrap();
    b.execute_batch("DROP TRIGGER run_recovery_replace_guard")
        .unwrap();
    drop(b);
    std::thread::sleep(std::time::Duration::from_millis(5));
    refused_alike(
        &a,
        &[
            "SELECT run_checkpoint('r', 6, '{}', 2)",
            "SELECT run_heartbeat('r', 2)",
            "SELECT run_heartbeat('r', 2)",
        ],
        "missing: trigger run_recovery_replace_guard",
    );
    drop(a);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// TEMP objects named like the runs and settings tables (an app's scratch
/// copy): the extension's statements read and write main only.
#[test]
fn temp_tables_named_like_the_install_never_receive_the_extension_s_statements() {
    let c = connect(true);
    c.execute_batch(
        "CREATE TEMP TABLE protocol_runs (accession_id TEXT PRIMARY KEY, name, status, properties_json, end_time, updated_at);
         INSERT INTO temp.protocol_runs VALUES ('r', 'scratch', 'running', '{\"lease\":9,\"lastHeartbeat\":1}', NULL, NULL);
         CREATE TEMP TABLE run_recovery_settings (key, value);",
    )
    .unwrap();
    let temp_before: String = c
        .query_row("SELECT properties_json FROM temp.protocol_runs", [], |r| {
            r.get(0)
        })
        .unwrap();
    let main_lease = |c: &Connection| -> i64 {
        c.query_row(
            "SELECT properties_json ->> '$.lease' FROM main.protocol_runs WHERE accession_id = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    int(&c, "SELECT run_heartbeat('r', 2)");
    c.query_row("SELECT run_checkpoint('r', 7, '{}', 2)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    let e = err_of(&c, "SELECT run_heartbeat('r', 9)");
    assert!(e.contains("stale lease 9"), "{e}");
    let listed: i64 = c
        .query_row(
            "SELECT count(*) FROM orphaned_runs(0) WHERE run_id = 'r' AND lease = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(listed, 1);
    std::thread::sleep(std::time::Duration::from_millis(3));
    text(&c, "SELECT recover_run('r', 'resume', 0)");
    text(&c, "SELECT run_recovery_install()");
    assert_eq!(main_lease(&c), 3);
    let temp_after: String = c
        .query_row("SELECT properties_json FROM temp.protocol_runs", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(temp_after, temp_before);
    let temp_settings: i64 = c
        .query_row("SELECT count(*) FROM temp.run_recovery_settings", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(temp_settings, 0);
}
