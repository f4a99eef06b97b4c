//! `run_recovery_actions` has one `INSTEAD OF` trigger per action (and one
//! refusing unknown actions). SQLite enters a view's triggers newest first
//! and an action ends with `RAISE(IGNORE)`, so install creates the
//! heartbeat's last: a heartbeat enters only its own trigger (and clears
//! only its registers). These tests pin that order, which is speed only,
//! and check that the other order gives the same results, which is what
//! makes it speed only.
mod common;

use std::cell::RefCell;

use common::*;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::Connection;
use serde_json::Value as Json;

thread_local! {
    static ENTERED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// SQLite traces `-- TRIGGER <name>` each time it enters a trigger program.
fn record(e: TraceEvent<'_>) {
    if let TraceEvent::Stmt(_, sql) = e {
        if let Some(name) = sql.strip_prefix("-- TRIGGER run_recovery_act_") {
            ENTERED.with(|v| v.borrow_mut().push(name.to_string()));
        }
    }
}

/// The action triggers `sql` enters, in order, and what it returned.
fn entered(conn: &Connection, sql: &str) -> (Vec<String>, Result<usize, String>) {
    ENTERED.with(|v| v.borrow_mut().clear());
    conn.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(record));
    let r = conn.execute(sql, []).map_err(|e| err_text(&e));
    conn.trace_v2(TraceEventCodes::empty(), None);
    (ENTERED.with(|v| v.borrow().clone()), r)
}

fn action(run_id: &str, action: &str) -> String {
    format!("INSERT INTO run_recovery_actions (run_id, action, lease, step, state) VALUES ('{run_id}', '{action}', 1, 7, '{{}}')")
}

fn db_with_runs() -> Connection {
    let conn = installed();
    add_run(&conn, "live", "running", Some(r#"{"operator":"ana"}"#));
    add_run(&conn, "stale", "running", Some(r#"{"operator":"bo"}"#));
    age_heartbeat(&conn, "stale", 3_600_000);
    conn
}

#[test]
fn each_action_enters_the_triggers_made_after_its_own_and_its_own() {
    let conn = db_with_runs();
    let cases: [(&str, &str, &[&str]); 6] = [
        ("live", "heartbeat", &["heartbeat"]),
        ("live", "Checkpoint", &["heartbeat", "checkpoint"]),
        (
            "stale",
            "dismiss",
            &["heartbeat", "checkpoint", "resume", "fail", "dismiss"],
        ),
        ("stale", "resume", &["heartbeat", "checkpoint", "resume"]),
        (
            "live",
            "fail",
            &["heartbeat", "checkpoint", "resume", "fail"],
        ),
        (
            "live",
            "explode",
            &[
                "heartbeat",
                "checkpoint",
                "resume",
                "fail",
                "dismiss",
                "unknown",
            ],
        ),
    ];
    for (id, act, want) in cases {
        let (got, r) = entered(&conn, &action(id, act));
        assert_eq!(got, want, "{act}: {r:?}");
        if act == "explode" {
            assert!(r.unwrap_err().contains("unknown action"));
        } else if act == "fail" {
            // The live run is alive: refused, after its own trigger only.
            assert!(r.unwrap_err().contains("fail: run is still alive"), "fail");
        } else {
            // Done: the row ended in RAISE(IGNORE), so SQLite counts no change.
            assert_eq!(r, Ok(0), "{act}");
        }
    }
    // A refusal stops at the refusing trigger too.
    let (got, r) = entered(&conn, &action("nope", "heartbeat"));
    assert_eq!(got, ["heartbeat"]);
    assert!(r.unwrap_err().contains("heartbeat: no such run"));
}

/// The install with its action triggers made in the opposite order: the
/// unknown action's first entered, the heartbeat's last.
fn reversed() -> Connection {
    let conn = db_with_runs();
    let made: Vec<(String, String)> = {
        let mut s = conn
            .prepare(
                "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' \
                 AND name LIKE 'run_recovery_act_%' ORDER BY rowid",
            )
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(made.len(), 6);
    for (name, _) in &made {
        conn.execute_batch(&format!("DROP TRIGGER {name}")).unwrap();
    }
    for (_, sql) in made.iter().rev() {
        conn.execute_batch(sql).unwrap();
    }
    let (got, _) = entered(&conn, &action("live", "heartbeat"));
    assert_eq!(
        got,
        [
            "unknown",
            "dismiss",
            "fail",
            "resume",
            "checkpoint",
            "heartbeat"
        ]
    );
    conn
}

/// A run's status and metadata with the clock's values blanked.
fn state(conn: &Connection, id: &str) -> (String, Json) {
    fn blank(v: &mut Json) {
        match v {
            Json::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if ["lastHeartbeat", "at", "dismissedHeartbeat"].contains(&k.as_str()) {
                        *x = Json::from("t");
                    } else {
                        blank(x);
                    }
                }
            }
            Json::Array(a) => a.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut m = meta(conn, id);
    blank(&mut m);
    (status(conn, id), m)
}

#[test]
fn the_triggers_in_the_other_order_give_the_same_results() {
    let (ours, theirs) = (db_with_runs(), reversed());
    let steps = [
        action("live", "heartbeat"),
        action("live", "checkpoint"),
        "INSERT INTO run_recovery_actions (run_id, action, lease, step) VALUES ('live', 'checkpoint', 1, 3)".into(),
        "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES ('live', 'heartbeat', 2)".into(),
        action("live", "resume"),
        action("stale", "dismiss"),
        action("stale", "dismiss"),
        action("stale", "resume"),
        action("stale", "heartbeat"),
        "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES ('stale', 'heartbeat', 2)".into(),
        action("nope", "fail"),
        action("live", "explode"),
        "INSERT INTO run_recovery_actions (run_id, action) VALUES ('live', NULL)".into(),
        // Several rows, several actions: each row ends at its own trigger.
        "INSERT INTO run_recovery_actions (run_id, action, lease, step) \
         SELECT 'live', 'heartbeat', 1, NULL UNION ALL SELECT 'live', 'checkpoint', 1, 9 \
         UNION ALL SELECT 'stale', 'heartbeat', 2, NULL"
            .into(),
        "age live".into(),
        action("live", "fail"),
        action("live", "heartbeat"),
    ];
    let run = |conn: &Connection, sql: &str| match sql.strip_prefix("age ") {
        Some(id) => {
            age_heartbeat(conn, id, 3_600_000);
            Ok(1)
        }
        None => conn.execute(sql, []).map_err(|e| err_text(&e)),
    };
    for sql in &steps {
        let (a, b) = (run(&ours, sql), run(&theirs, sql));
        assert_eq!(a, b, "{sql}");
        for id in ["live", "stale"] {
            assert_eq!(state(&ours, id), state(&theirs, id), "{id} after {sql}");
        }
    }
    // The steps did reach every outcome.
    assert_eq!(status(&ours, "live"), "failed");
    assert_eq!(meta_int(&ours, "live", "checkpointStep"), Some(9));
    assert_eq!(meta_int(&ours, "stale", "resumes"), Some(1));
}
