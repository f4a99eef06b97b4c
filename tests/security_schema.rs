//! Hostile databases and hostile configuration.
//! * A database file whose schema (views, triggers, CHECK constraints,
//!   generated columns) calls the writing functions is refused: they are
//!   DIRECTONLY, so opening an untrusted file and reading from it cannot
//!   recover, fail, stamp or uninstall anything — even with
//!   `PRAGMA trusted_schema = ON`.
//! * Identifiers and statuses in the install config are always quoted: a
//!   table named `x"; DROP TABLE y; --` works and `y` survives.
//! * A read-only database gives a clear error that names the function.

mod common;

use rusqlite::{params, Connection};

use common::*;

const ORPHAN: &str = "r1";

/// A database with one orphaned run, and the hostile schema objects (as an
/// attacker would ship them in a database file).
fn hostile_db(dir: &std::path::Path, with_ddl_expressions: bool) -> std::path::PathBuf {
    let (path, conn) = fresh_db(dir, "{}");
    add_run(&conn, ORPHAN, "running", Some(r#"{"operator":"ada"}"#));
    age_heartbeat(&conn, ORPHAN, 120_000);
    conn.execute_batch(
        "CREATE VIEW fine_orphans AS SELECT run_id FROM orphaned_runs;
         CREATE VIEW fine_version AS SELECT run_recovery_version() AS v;",
    )
    .unwrap();
    drop(conn);
    // The attacker's tool: plain SQLite, with look-alike functions so that
    // CHECK constraints and generated columns can name ours.
    let conn = open_plain(&path);
    for (name, n) in [("recover_run", 3), ("run_heartbeat", 1)] {
        conn.create_scalar_function(
            name,
            n,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |_| Ok(rusqlite::types::Value::Null),
        )
        .unwrap();
    }
    conn.execute_batch(
        r#"
CREATE VIEW evil_run_heartbeat AS SELECT run_heartbeat('r1') AS x;
CREATE VIEW evil_run_checkpoint AS SELECT run_checkpoint('r1', 99, '{"pwned":1}') AS x;
CREATE VIEW evil_recover_run AS SELECT recover_run('r1', 'fail', 0) AS x;
CREATE VIEW evil_run_recovery_install AS SELECT run_recovery_install('{"stale_after_ms": 1}') AS x;
CREATE VIEW evil_run_recovery_uninstall AS SELECT run_recovery_uninstall() AS x;
CREATE VIEW evil_run_heartbeat_every AS SELECT run_heartbeat_every('r1', 10) AS x;
CREATE VIEW evil_run_heartbeat_stop AS SELECT run_heartbeat_stop('r1') AS x;
CREATE TABLE audit_run_heartbeat (x);
CREATE TRIGGER evil_trigger_run_heartbeat AFTER INSERT ON audit_run_heartbeat
  BEGIN SELECT run_heartbeat('r1'); END;
CREATE TABLE audit_run_checkpoint (x);
CREATE TRIGGER evil_trigger_run_checkpoint AFTER INSERT ON audit_run_checkpoint
  BEGIN SELECT run_checkpoint('r1', 99); END;
CREATE TABLE audit_recover_run (x);
CREATE TRIGGER evil_trigger_recover_run AFTER INSERT ON audit_recover_run
  BEGIN SELECT recover_run('r1', 'resume', 0); END;
CREATE TABLE audit_run_recovery_install (x);
CREATE TRIGGER evil_trigger_run_recovery_install AFTER INSERT ON audit_run_recovery_install
  BEGIN SELECT run_recovery_install('{"max_resumes": 0}'); END;
CREATE TABLE audit_run_recovery_uninstall (x);
CREATE TRIGGER evil_trigger_run_recovery_uninstall AFTER INSERT ON audit_run_recovery_uninstall
  BEGIN SELECT run_recovery_uninstall(); END;
CREATE TABLE audit_run_heartbeat_every (x);
CREATE TRIGGER evil_trigger_run_heartbeat_every AFTER INSERT ON audit_run_heartbeat_every
  BEGIN SELECT run_heartbeat_every('r1', 10); END;
CREATE TABLE audit_run_heartbeat_stop (x);
CREATE TRIGGER evil_trigger_run_heartbeat_stop AFTER INSERT ON audit_run_heartbeat_stop
  BEGIN SELECT run_heartbeat_stop('r1'); END;
"#,
    )
    .unwrap();
    if with_ddl_expressions {
        conn.execute_batch(
            "CREATE TABLE evil_check (x CHECK (recover_run('r1', 'fail', 0) IS NOT NULL));
             CREATE TABLE evil_generated (x, y AS (run_heartbeat('r1')));",
        )
        .unwrap();
    }
    drop(conn);
    path
}

const WRITERS: [&str; 7] = [
    "run_heartbeat",
    "run_checkpoint",
    "recover_run",
    "run_recovery_install",
    "run_recovery_uninstall",
    "run_heartbeat_every",
    "run_heartbeat_stop",
];

fn expect_unsafe(conn: &Connection, sql: &str, func: &str) {
    expect_refused(conn, sql, func, &format!("unsafe use of {func}()"));
}

fn expect_refused(conn: &Connection, sql: &str, func: &str, needle: &str) {
    let before = snapshot(conn);
    let e = match conn.execute_batch(sql) {
        Ok(()) => panic!(
            "the schema called {func}: {sql}; r1 is now {} {}",
            status(conn, ORPHAN),
            meta(conn, ORPHAN)
        ),
        Err(e) => e,
    };
    let msg = err_text(&e);
    assert!(
        msg.contains(needle),
        "{sql}: expected SQLite's refusal of {func} ({needle}), got {msg}"
    );
    assert_eq!(
        snapshot(conn),
        before,
        "{sql}: the refused call changed something"
    );
}

#[test]
fn a_schema_cannot_call_the_writing_functions() {
    let dir = tempfile::tempdir().unwrap();
    let path = hostile_db(dir.path(), false);
    for trusted in ["OFF", "ON"] {
        for (order, conn) in [
            ("registered first", open(&path)),
            ("registered late", open_registered_late(&path)),
        ] {
            conn.pragma_update(None, "trusted_schema", trusted).unwrap();
            for f in WRITERS {
                expect_unsafe(&conn, &format!("SELECT * FROM evil_{f}"), f);
                expect_unsafe(&conn, &format!("INSERT INTO audit_{f} VALUES (1)"), f);
            }
            // What only reads stays usable from a view.
            let listed: String = conn
                .query_row("SELECT run_id FROM fine_orphans", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{order}, trusted_schema={trusted}: {e}"));
            assert_eq!(listed, ORPHAN);
            let v: String = conn
                .query_row("SELECT v FROM fine_version", [], |r| r.get(0))
                .unwrap();
            assert!(v.starts_with('v'));
        }
    }
    // The run is untouched, and a direct call (the user's own SQL) still works.
    let conn = open(&path);
    assert_eq!(status(&conn, ORPHAN), "running");
    let m = meta(&conn, ORPHAN);
    assert_eq!(m.get("lease").and_then(|l| l.as_i64()), Some(1));
    assert!(m.get("recoveryLog").is_none());
    let out: String = conn
        .query_row("SELECT recover_run('r1', 'fail')", [], |r| r.get(0))
        .unwrap();
    assert!(out.contains("\"failed\""), "{out}");
}

/// CHECK constraints and generated columns are resolved when SQLite reads the
/// schema. Registered before that, our DIRECTONLY functions make the schema
/// refuse to load ("unsafe use of recover_run()"): nothing runs.
#[test]
fn a_check_constraint_cannot_call_a_writer_when_registered_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = hostile_db(dir.path(), true);
    let conn = Connection::open(&path).unwrap();
    let e = run_recovery::register(&conn).expect_err("the hostile schema must not load");
    let msg = err_text(&e);
    assert!(
        msg.contains("unsafe use of recover_run()")
            || msg.contains("unsafe use of run_heartbeat()"),
        "{msg}"
    );
    let plain = open_plain(&path);
    let (st, text): (String, String) = plain
        .query_row(
            "SELECT status, properties_json FROM protocol_runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(st, "running");
    assert!(!text.contains("recoveryLog"), "{text}");
}

/// The same schema read BEFORE registration (an app that runs
/// `PRAGMA journal_mode = WAL`, then loads the extension): SQLite resolved the
/// CHECK while recover_run did not exist yet, and later calls whatever
/// function has that name — DIRECTONLY is never checked.
#[test]
fn a_check_constraint_cannot_call_a_writer_when_registered_late() {
    let dir = tempfile::tempdir().unwrap();
    let path = hostile_db(dir.path(), true);
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    // The extension is loaded now; either loading refuses the schema, or every
    // use of the hostile table is refused.
    if run_recovery::register(&conn).is_ok() {
        let r = conn.execute_batch("INSERT INTO evil_check VALUES (1)");
        let st = status(&conn, ORPHAN);
        assert!(
            r.is_err(),
            "a CHECK constraint called recover_run: r1 is now {st} {}",
            meta(&conn, ORPHAN)
        );
        assert_eq!(st, "running");
        let r = conn.execute_batch("INSERT INTO evil_generated (x) VALUES (1)");
        assert!(r.is_err(), "a generated column called run_heartbeat");
    }
}

const HOSTILE_TABLE: &str = r#"x"; DROP TABLE y; --"#;

fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[test]
fn hostile_identifiers_in_the_config_never_execute() {
    let id_col = r#"i"d'); DROP TABLE y; --"#;
    let status_col = "st'at\"us]";
    let meta_col = "me`ta; DROP TABLE y";
    let name_col = "na\"\"me";
    let end_col = "end'; DROP TABLE y; --";
    let live = "run'); drop table y; --";
    let conn = Connection::open_in_memory().unwrap();
    run_recovery::register(&conn).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE y (keep); INSERT INTO y VALUES ('still here');
         CREATE TABLE {} ({} TEXT PRIMARY KEY, {} TEXT, {} TEXT, {} TEXT, {} TEXT);
         CREATE INDEX ix_hostile ON {} ({});",
        q(HOSTILE_TABLE),
        q(id_col),
        q(status_col),
        q(meta_col),
        q(name_col),
        q(end_col),
        q(HOSTILE_TABLE),
        q(status_col)
    ))
    .unwrap();
    let y_ok = |when: &str| {
        let keep: String = conn
            .query_row("SELECT keep FROM y", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{when}: table y is gone: {e}"));
        assert_eq!(keep, "still here", "{when}");
    };
    let run_id = "'); DROP TABLE y; --";
    conn.execute(
        &format!(
            "INSERT INTO {} ({}, {}, {}) VALUES (?1, ?2, '{{\"app\":1}}')",
            q(HOSTILE_TABLE),
            q(id_col),
            q(status_col),
            q(meta_col)
        ),
        params![run_id, live],
    )
    .unwrap();
    let config = serde_json::json!({
        "table": HOSTILE_TABLE,
        "id_column": id_col,
        "status_column": status_col,
        "metadata_column": meta_col,
        "name_column": name_col,
        "end_time_column": end_col,
        "live_statuses": [live, "running"],
        "stale_after_ms": 1000,
    })
    .to_string();
    let cfg: String = conn
        .query_row("SELECT run_recovery_install(?1)", [&config], |r| r.get(0))
        .unwrap();
    assert!(
        cfg.contains("DROP TABLE y"),
        "the names are kept as given: {cfg}"
    );
    y_ok("after install");
    let read_meta = || -> serde_json::Value {
        let t: String = conn
            .query_row(
                &format!("SELECT {} FROM {}", q(meta_col), q(HOSTILE_TABLE)),
                [],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_str(&t).unwrap()
    };
    assert!(
        read_meta()["lastHeartbeat"].is_i64(),
        "install stamped the live run"
    );
    conn.query_row("SELECT run_heartbeat(?1, 1)", [run_id], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    conn.query_row(
        "SELECT run_checkpoint(?1, 2, '{\"w\":1}', 1)",
        [run_id],
        |r| r.get::<_, i64>(0),
    )
    .unwrap();
    y_ok("after heartbeat and checkpoint");
    // Time passes (triggers off, as in age_heartbeat, on the hostile names).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
        false,
    )
    .unwrap();
    conn.execute(
        &format!(
            "UPDATE {t} SET {m} = json_set({m}, '$.lastHeartbeat', 1)",
            t = q(HOSTILE_TABLE),
            m = q(meta_col)
        ),
        [],
    )
    .unwrap();
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
        true,
    )
    .unwrap();
    let listed: String = conn
        .query_row("SELECT run_id FROM orphaned_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(listed, run_id);
    let viewed: String = conn
        .query_row("SELECT run_id FROM run_recovery_orphans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(viewed, run_id);
    let out: String = conn
        .query_row("SELECT recover_run(?1, 'resume')", [run_id], |r| r.get(0))
        .unwrap();
    assert!(out.contains("\"lease\":2"), "{out}");
    // A stale write through the hostile-named column is still fenced by the trigger.
    let e = conn
        .execute(
            &format!(
                "UPDATE {} SET {} = '{{\"lease\":1}}'",
                q(HOSTILE_TABLE),
                q(meta_col)
            ),
            [],
        )
        .unwrap_err();
    assert!(err_text(&e).contains("stale write refused"), "{e}");
    conn.execute(
        &format!(
            "UPDATE {} SET {} = 'running'",
            q(HOSTILE_TABLE),
            q(status_col)
        ),
        [],
    )
    .unwrap();
    let age_out = conn.query_row("SELECT recover_run(?1, 'fail', 0)", [run_id], |r| {
        r.get::<_, String>(0)
    });
    if let Err(e) = &age_out {
        assert!(err_text(e).starts_with("recover_run: "), "{e}");
    }
    y_ok("after recover_run");
    let un: String = conn
        .query_row("SELECT run_recovery_uninstall()", [], |r| r.get(0))
        .unwrap();
    assert!(un.contains("uninstalled"));
    y_ok("after uninstall");
    // A hostile name of a table that does not exist: refused with the name quoted.
    for key in [
        "table",
        "id_column",
        "status_column",
        "metadata_column",
        "end_time_column",
    ] {
        let mut cfg: serde_json::Value = serde_json::from_str(&config).unwrap();
        cfg[key] = serde_json::json!("nope\"; DROP TABLE y; --");
        let cfg = cfg.to_string();
        let e = conn
            .query_row("SELECT run_recovery_install(?1)", [&cfg], |r| {
                r.get::<_, String>(0)
            })
            .unwrap_err();
        let msg = err_text(&e);
        assert!(msg.starts_with("run_recovery_install: "), "{msg}");
        assert!(msg.contains("'nope\"; DROP TABLE y; --'"), "{msg}");
        y_ok(&format!("after a refused install with a hostile {key}"));
    }
}

fn read_only_case(conn: &Connection, writable: &Connection, how: &str) {
    let before = snapshot(writable);
    for (func, sql) in [
        ("run_heartbeat", "SELECT run_heartbeat('r1')"),
        (
            "run_checkpoint",
            "SELECT run_checkpoint('r1', 5, '{\"w\":5}')",
        ),
        ("recover_run", "SELECT recover_run('r1', 'resume')"),
        ("recover_run", "SELECT recover_run('r1', 'fail')"),
        ("recover_run", "SELECT recover_run('r1', 'dismiss')"),
        (
            "run_recovery_install",
            "SELECT run_recovery_install('{\"stale_after_ms\": 5}')",
        ),
        ("run_recovery_uninstall", "SELECT run_recovery_uninstall()"),
    ] {
        let e = conn
            .query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
            .expect_err(&format!("{how}: {sql} wrote to a read-only database"));
        let msg = err_text(&e);
        assert!(msg.starts_with(&format!("{func}: ")), "{how}: {sql}: {msg}");
        assert!(
            msg.contains("readonly") || msg.contains("read-only") || msg.contains("query_only"),
            "{how}: {sql}: the error should say the database is read-only: {msg}"
        );
    }
    // Reading still works.
    let listed: String = conn
        .query_row("SELECT run_id FROM orphaned_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(listed, "r1");
    assert!(conn
        .query_row("SELECT run_recovery_config()", [], |r| r
            .get::<_, String>(0))
        .is_ok());
    assert_eq!(snapshot(writable), before, "{how}: nothing changed");
}

#[test]
fn a_read_only_database_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = fresh_db(dir.path(), "{}");
    add_run(&conn, "r1", "running", None);
    age_heartbeat(&conn, "r1", 120_000);
    let ro = open_read_only(&path);
    read_only_case(&ro, &conn, "SQLITE_OPEN_READ_ONLY");
    let qo = open(&path);
    qo.pragma_update(None, "query_only", true).unwrap();
    read_only_case(&qo, &conn, "PRAGMA query_only");
}
