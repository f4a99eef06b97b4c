//! The real built library (dist/run_recovery.so), loaded with
//! sqlite3_load_extension into a host SQLite, as any client would.
//! `make test-rust` builds it first (`make loadable`).
mod common;

use std::path::PathBuf;

use common::*;
use rusqlite::{Connection, LoadExtensionGuard};

fn library() -> PathBuf {
    let ext = if cfg!(target_os = "macos") {
        "dylib"
    } else {
        "so"
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("dist/run_recovery.{ext}"));
    assert!(
        path.exists(),
        "{} is missing: run `make loadable` first",
        path.display()
    );
    path
}

fn load(conn: &Connection) {
    // SAFETY (test): loading our own library.
    unsafe {
        let _guard = LoadExtensionGuard::new(conn).unwrap();
        // No entry point given: SQLite derives sqlite3_runrecovery_init from the file name.
        conn.load_extension(library(), None::<&str>).unwrap();
    }
}

fn names(conn: &Connection, sql: &str) -> Vec<String> {
    let mut v: Vec<String> = column(conn, sql, []);
    v.sort();
    v.dedup();
    v
}

#[test]
fn loading_registers_exactly_the_documented_functions_and_module() {
    let conn = Connection::open_in_memory().unwrap();
    let fns = "SELECT name FROM pragma_function_list";
    let mods = "SELECT name FROM pragma_module_list";
    let (f0, m0) = (names(&conn, fns), names(&conn, mods));
    load(&conn);
    let added: Vec<String> = names(&conn, fns)
        .into_iter()
        .filter(|n| !f0.contains(n))
        .collect();
    let added_mods: Vec<String> = names(&conn, mods)
        .into_iter()
        .filter(|n| !m0.contains(n))
        .collect();
    let mut all = added.clone();
    all.extend(added_mods.clone());
    all.sort();
    let mut expected: Vec<String> = run_recovery::FUNCTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(added_mods, vec!["orphaned_runs"]);
}

#[test]
fn writers_are_directonly_and_readers_innocuous() {
    let conn = Connection::open_in_memory().unwrap();
    load(&conn);
    // pragma_function_list.flags: SQLITE_DIRECTONLY 0x80000, SQLITE_INNOCUOUS 0x200000.
    let flags = |name: &str| -> Vec<i64> {
        conn.prepare("SELECT flags FROM pragma_function_list WHERE name = ?1")
            .unwrap()
            .query_map([name], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    for w in [
        "run_heartbeat",
        "run_recovery_heartbeat_text",
        "run_recovery_schema_fresh",
        "run_checkpoint",
        "recover_run",
        "run_recovery_install",
        "run_recovery_uninstall",
    ] {
        let f = flags(w);
        assert!(
            !f.is_empty() && f.iter().all(|f| f & 0x80000 != 0),
            "{w}: {f:?}"
        );
    }
    for r in [
        "run_recovery_version",
        "run_recovery_debug",
        "run_recovery_config",
    ] {
        let f = flags(r);
        assert!(
            !f.is_empty() && f.iter().all(|f| f & 0x200000 != 0 && f & 0x80000 == 0),
            "{r}: {f:?}"
        );
    }
}

#[test]
fn a_view_or_trigger_in_the_file_cannot_call_the_writers() {
    let conn = Connection::open_in_memory().unwrap();
    load(&conn);
    conn.execute_batch(SCHEMA).unwrap();
    conn.query_row("SELECT run_recovery_install()", [], |_| Ok(()))
        .unwrap();
    add_run(&conn, "a", "running", None);
    conn.execute_batch("CREATE VIEW evil AS SELECT recover_run('a', 'fail', 0) AS x")
        .unwrap();
    let e = one::<String>(&conn, "SELECT x FROM evil").unwrap_err();
    assert!(e.contains("unsafe use of recover_run"), "{e}");
    assert_eq!(status(&conn, "a"), "running");
}

#[test]
fn the_scenario_runs_through_the_loaded_library_and_the_connection_closes_cleanly() {
    let conn = Connection::open_in_memory().unwrap();
    load(&conn);
    let debug: String = one(&conn, "SELECT run_recovery_debug()").unwrap();
    let debug: serde_json::Value = serde_json::from_str(&debug).unwrap();
    assert_eq!(debug["build"], "loadable");
    assert_eq!(debug["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        debug["sqlite"],
        rusqlite::version(),
        "reports the host's SQLite"
    );
    conn.execute_batch(SCHEMA).unwrap();
    one::<String>(&conn, "SELECT run_recovery_install()").unwrap();
    add_run(&conn, "a", "running", Some(r#"{"app":1}"#));
    add_run(&conn, "b", "running", None);
    one::<i64>(&conn, r#"SELECT run_checkpoint('a', 1, '{"x":1}', 1)"#).unwrap();
    set_heartbeat(&conn, "a", 1);
    set_heartbeat(&conn, "b", 1);
    assert_eq!(
        names(&conn, "SELECT run_id FROM orphaned_runs"),
        vec!["a", "b"]
    );
    let out: String = one(&conn, "SELECT recover_run('a', 'resume')").unwrap();
    assert!(
        out.contains("\"checkpoint_step\":1") && out.contains("\"lease\":2"),
        "{out}"
    );
    one::<String>(&conn, "SELECT recover_run('b', 'fail')").unwrap();
    let e = one::<i64>(&conn, "SELECT run_heartbeat('a', 1)").unwrap_err();
    assert!(e.contains("stale lease 1"), "{e}");
    // The statement cache is released when SQLite disconnects orphaned_runs,
    // so sqlite3_close (not _v2) succeeds: no unfinalized statements.
    conn.close().map_err(|(_, e)| e).unwrap();
}

#[test]
fn many_connections_load_use_and_close() {
    for _ in 0..50 {
        let conn = Connection::open_in_memory().unwrap();
        load(&conn);
        conn.execute_batch(SCHEMA).unwrap();
        one::<String>(&conn, "SELECT run_recovery_install()").unwrap();
        add_run(&conn, "a", "running", None);
        one::<i64>(&conn, "SELECT run_heartbeat('a')").unwrap();
        one::<i64>(&conn, "SELECT count(*) FROM orphaned_runs").unwrap();
        conn.close().map_err(|(_, e)| e).unwrap();
    }
}

/// Loading the library a second time into a connection (two modules of an
/// app that each load it) keeps the connection's state: its running pulses
/// go on, and run_heartbeat_stop still finds them.
#[test]
fn loading_twice_keeps_running_pulses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.db");
    let conn = Connection::open(&path).unwrap();
    load(&conn);
    conn.execute_batch(SCHEMA).unwrap();
    conn.query_row("SELECT run_recovery_install()", [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap();
    conn.execute_batch(
        "INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id)
         VALUES ('r1', 'one', 'running', 'p')",
    )
    .unwrap();
    conn.query_row("SELECT run_heartbeat_every('r1', 20)", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap();
    let stamps = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT coalesce(json_extract(run_recovery_debug(), '$.pulses.r1.stamps'), -1)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    load(&conn);
    let after_load = stamps(&conn);
    assert!(
        after_load >= 0,
        "the pulse is still known after the second load"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stamps(&conn) < after_load + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pulse stopped stamping"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stopped: i64 = conn
        .query_row("SELECT run_heartbeat_stop('r1')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stopped, 1);
}

/// A load that fails (here: the file is not a database, so the schema
/// cannot be read) is unloaded by SQLite: nothing of the library may stay
/// registered, or the next call or the close would run code that is gone.
/// The connection stays usable, and a load into a good database works.
#[test]
fn a_failed_load_leaves_the_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a_u8; 8192]).unwrap();
    let conn = Connection::open(&junk).unwrap();
    // SAFETY (test): loading our own library.
    let e = unsafe {
        let _guard = LoadExtensionGuard::new(&conn).unwrap();
        conn.load_extension(library(), None::<&str>).unwrap_err()
    };
    assert!(e.to_string().contains("file is not a database"), "{e}");
    for f in [
        "run_recovery_version()",
        "run_heartbeat('r')",
        "run_recovery_install()",
    ] {
        let e = conn
            .query_row(&format!("SELECT {f}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .unwrap_err();
        // Refused, never run: SQLite cannot read this file's schema, and the
        // function is not there to call.
        let e = e.to_string();
        assert!(
            e.contains("no such function") || e.contains("file is not a database"),
            "{f}: {e}"
        );
    }
    // Closing runs no destructor of the unloaded library (it did: SIGSEGV).
    drop(conn);
    let good = Connection::open(dir.path().join("good.db")).unwrap();
    load(&good);
    let v: String = good
        .query_row("SELECT run_recovery_version()", [], |r| r.get(0))
        .unwrap();
    assert!(v.starts_with('v'));
}
