//! `run_heartbeat` sets the heartbeat in place when it can (src/beat.rs:
//! `run_recovery_heartbeat_text` in its first UPDATE) and otherwise writes
//! through its SQL statement. These tests show which path a heartbeat took
//! (the in-place one keeps the app's spacing; the SQL one rewrites the text
//! compactly), that refusals are the SQL path's own, and, on random metadata
//! (duplicate and escaped keys, odd leases, nesting, malformed text), that
//! `run_heartbeat` leaves the same JSON and the same verdict as the SQL
//! heartbeat UPDATE run directly on a twin database with the same `now`.
//!
//! Cases: `PROPTEST_CASES` (default 256; `make test-stress` runs 5,000).
mod common;

use common::*;
use proptest::prelude::*;
use rusqlite::{params, Connection};

const OLD: i64 = 1_700_000_000_000;

/// A running run `id` whose metadata is exactly `text` (written with the
/// triggers off, so nothing reformats it).
fn run_with(conn: &Connection, id: &str, text: &str) {
    add_run(conn, id, "running", Some("{}"));
    without_triggers(conn, |c| {
        c.execute(
            "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
            params![id, text],
        )
    })
    .unwrap();
}

fn raw(conn: &Connection, id: &str) -> String {
    conn.query_row(
        "SELECT properties_json FROM protocol_runs WHERE accession_id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

fn heartbeat(conn: &Connection, id: &str, lease: Option<i64>) -> Result<i64, String> {
    let r = match lease {
        Some(l) => conn.query_row("SELECT run_heartbeat(?1, ?2)", params![id, l], |r| r.get(0)),
        None => conn.query_row("SELECT run_heartbeat(?1)", [id], |r| r.get(0)),
    };
    r.map_err(|e| err_text(&e))
}

/// `text` with its last 13 digits (before the closing brace) set to `now`.
fn in_place(text: &str, now: i64) -> String {
    format!("{}{now}}}", &text[..text.len() - 14])
}

#[test]
fn a_heartbeat_in_the_usual_shape_is_set_in_place() {
    let conn = installed();
    let text = r#"{"operator": "Zoë", "plate": {"wells": [1, 2.5e-3, true, null]}, "note": "a \"quoted\" \u00e9", "lease":2,"lastHeartbeat":1700000000000}"#;
    run_with(&conn, "r", text);
    let now = heartbeat(&conn, "r", Some(2)).unwrap();
    // The app's spacing is kept: only the 13 digits changed. (The SQL
    // path writes the whole text again without the spaces.)
    assert_eq!(raw(&conn, "r"), in_place(text, now));
    let again = heartbeat(&conn, "r", None).unwrap();
    assert_eq!(raw(&conn, "r"), in_place(text, again));
    integrity_ok(&conn);
}

#[test]
fn any_other_shape_is_written_through_sql() {
    let conn = installed();
    // The heartbeat not last: the SQL path moves it last and writes compactly.
    run_with(
        &conn,
        "r",
        r#"{"lastHeartbeat": 1700000000000, "operator": "ana"}"#,
    );
    let now = heartbeat(&conn, "r", None).unwrap();
    assert_eq!(
        raw(&conn, "r"),
        format!(r#"{{"operator":"ana","lastHeartbeat":{now}}}"#)
    );
    // And from then on the heartbeat is set in place.
    let next = heartbeat(&conn, "r", None).unwrap();
    assert_eq!(
        raw(&conn, "r"),
        in_place(
            &format!(r#"{{"operator":"ana","lastHeartbeat":{now}}}"#),
            next
        )
    );
    // No metadata at all, and no heartbeat yet: through SQL.
    run_with(&conn, "n", r#"{"operator": "bo"}"#);
    let now = heartbeat(&conn, "n", Some(1)).unwrap();
    assert_eq!(
        raw(&conn, "n"),
        format!(r#"{{"operator":"bo","lastHeartbeat":{now}}}"#)
    );
}

#[test]
fn refusals_are_the_sql_paths_and_change_nothing() {
    let conn = installed();
    let text = r#"{"op": 1, "lease":3,"lastHeartbeat":1700000000000}"#;
    run_with(&conn, "r", text);
    let e = heartbeat(&conn, "r", Some(2)).unwrap_err();
    assert!(
        e.starts_with("run_heartbeat: stale lease 2 for run 'r', found lease 3"),
        "{e}"
    );
    assert_eq!(raw(&conn, "r"), text);
    // A lease spelled as text is read by the SQL path as SQLite's CAST
    // reads it ("3" is 3); the function leaves it to SQL.
    let text = r#"{"op": 1, "lease":"3","lastHeartbeat":1700000000000}"#;
    run_with(&conn, "t", text);
    let now = heartbeat(&conn, "t", Some(3)).unwrap();
    assert_eq!(
        raw(&conn, "t"),
        format!(r#"{{"op":1,"lease":"3","lastHeartbeat":{now}}}"#)
    );
    // A run that is not live: refused, unchanged.
    let text = r#"{"op": 1,"lastHeartbeat":1700000000000}"#;
    run_with(&conn, "c", text);
    conn.execute(
        "UPDATE protocol_runs SET status = 'completed' WHERE accession_id = 'c'",
        [],
    )
    .unwrap();
    let e = heartbeat(&conn, "c", None).unwrap_err();
    assert!(e.starts_with("run_heartbeat: run 'c' is not live"), "{e}");
    assert_eq!(raw(&conn, "c"), text);
    // A heartbeat ahead of the clock (another host's) is kept (never
    // backwards) and returned.
    let ahead = now_ms() + 10_000;
    let text = format!(r#"{{"op": 1,"lastHeartbeat":{ahead}}}"#);
    run_with(&conn, "a", &text);
    assert_eq!(heartbeat(&conn, "a", None), Ok(ahead));
    assert_eq!(meta_int(&conn, "a", "lastHeartbeat"), Some(ahead));
    // More than stale_after_ms ahead (a clock that was wrong): the
    // executor's heartbeat repairs it with its own clock.
    let wrong = now_ms() + 3_600_000;
    let text = format!(r#"{{"op": 1,"lastHeartbeat":{wrong}}}"#);
    run_with(&conn, "w", &text);
    let repaired = heartbeat(&conn, "w", None).unwrap();
    assert!(
        repaired < wrong && repaired >= wrong - 3_600_000,
        "{repaired}"
    );
    assert_eq!(meta_int(&conn, "w", "lastHeartbeat"), Some(repaired));
    // Malformed metadata ending in the heartbeat's shape: never overwritten.
    let text = r#"{"op": 1,,"lastHeartbeat":1700000000000}"#;
    run_with(&conn, "m", text);
    assert!(heartbeat(&conn, "m", None).is_err());
    assert_eq!(raw(&conn, "m"), text);
}

#[test]
fn the_internal_function_cannot_run_from_a_view_or_trigger() {
    let conn = installed();
    conn.execute_batch(
        "CREATE VIEW v AS SELECT run_recovery_heartbeat_text('{\"lastHeartbeat\":1700000000000}', 1800000000000, NULL) AS t",
    )
    .unwrap();
    let e = one::<String>(&conn, "SELECT t FROM v").unwrap_err();
    assert!(
        e.contains("unsafe use of run_recovery_heartbeat_text"),
        "{e}"
    );
}

/// One top-level member of generated metadata.
fn member() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("1".to_string()),
        Just("-0".to_string()),
        Just("1.5e3".to_string()),
        Just("\"plain\"".to_string()),
        Just("\"a \\\"q\\\" \\u00e9 é\"".to_string()),
        Just("[1, [2, {\"k\": null}], true]".to_string()),
        Just("{\"lastHeartbeat\": 5, \"lease\": 9}".to_string()),
        Just("false".to_string()),
    ];
    let key = prop_oneof![
        4 => Just("\"op\"".to_string()),
        4 => Just("\"plate\"".to_string()),
        1 => Just("\"Zoë\"".to_string()),
        1 => Just("\"l\\u0065ase\"".to_string()),
        1 => Just("\"lastHeartbeat\"".to_string()),
    ];
    let lease = prop_oneof![
        Just("1"),
        Just("2"),
        Just("\"2\""),
        Just("2.0"),
        Just("-1"),
        Just("99999999999999999999"),
        Just("null"),
    ];
    prop_oneof![
        8 => (key, value, 0..3usize).prop_map(|(k, v, sp)| format!("{k}:{}{v}", " ".repeat(sp))),
        2 => lease.prop_map(|l| format!("\"lease\":{l}")),
    ]
}

/// Metadata: mostly in the shape a heartbeat writes (the heartbeat last,
/// 13 digits), sometimes not, sometimes malformed.
fn metadata() -> impl Strategy<Value = String> {
    let tail = prop_oneof![
        8 => Just(format!("\"lastHeartbeat\":{OLD}")),
        1 => Just(format!("\"lastHeartbeat\": {OLD}")),
        1 => Just(format!("\"lastHeartbeat\":\"{OLD}\"")),
        1 => Just("\"lastHeartbeat\":170000000000".to_string()),
    ];
    // A trailing comma or a comment: JSON5, which SQLite >= 3.45 reads.
    let broken = prop_oneof![
        8 => Just(""),
        1 => Just(","),
        1 => Just("'"),
        1 => Just("/* c */"),
    ];
    (
        proptest::collection::vec(member(), 0..5),
        tail,
        broken,
        any::<bool>(),
    )
        .prop_map(|(members, tail, broken, spaced)| {
            let sep = if spaced { ", " } else { "," };
            let mut all = members;
            all.push(tail);
            format!("{{{}{broken}}}", all.join(sep))
        })
}

fn config_text(conn: &Connection) -> String {
    one(
        conn,
        "SELECT value FROM run_recovery_settings WHERE key = 'config'",
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn the_heartbeat_leaves_what_the_sql_heartbeat_leaves(
        text in metadata(),
        lease in prop_oneof![Just(None), Just(Some(1i64)), Just(Some(2i64))],
    ) {
        let a = installed();
        let b = installed();
        run_with(&a, "r", &text);
        run_with(&b, "r", &text);
        let got = heartbeat(&a, "r", lease);
        // The SQL heartbeat UPDATE, run directly with the same `now`.
        let cfg = run_recovery::config::Config::default();
        let sql = run_recovery::sqlgen::FunctionSql::new(&cfg);
        let now = got.clone().unwrap_or_else(|_| now_ms());
        let changed = b.execute(&sql.heartbeat, params![&"r", now, lease, config_text(&b)]);
        match (&got, &changed) {
            (Ok(_), Ok(1)) => {
                let (ta, tb) = (raw(&a, "r"), raw(&b, "r"));
                let json = |t: &str| one::<String>(&a, &format!("SELECT json('{}')", t.replace('\'', "''"))).unwrap();
                prop_assert_eq!(json(&ta), json(&tb), "metadata {}", text);
                // Either set in place, or the SQL path's text exactly.
                prop_assert!(ta == in_place(&text, now) || ta == tb, "{} -> {} / {}", text, ta, tb);
            }
            (Err(_), Ok(0)) | (Err(_), Err(_)) => {
                prop_assert_eq!(raw(&a, "r"), text.clone(), "a refusal changed the text");
            }
            other => prop_assert!(false, "{}: run_heartbeat {:?}, SQL UPDATE {:?}", text, other.0, other.1),
        }
    }
}

/// The generator above is not vacuous: most of its cases in the usual
/// shape are set in place, and some take each other path.
#[test]
fn the_generated_cases_take_both_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut in_place_n, mut sql_n, mut refused_n) = (0, 0, 0);
    let conn = installed();
    for i in 0..300 {
        let text = metadata().new_tree(&mut runner).unwrap().current();
        let id = format!("r{i}");
        run_with(&conn, &id, &text);
        match heartbeat(&conn, &id, None) {
            // (Spacing outside strings shows the in-place path: SQL drops it.)
            Ok(now)
                if raw(&conn, &id) == in_place(&text, now)
                    && (text.contains(", ") || text.contains(": ")) =>
            {
                in_place_n += 1
            }
            Ok(_) => sql_n += 1,
            Err(_) => refused_n += 1,
        }
    }
    assert!(in_place_n > 30, "in place {in_place_n}");
    assert!(sql_n > 30, "through SQL {sql_n}");
    assert!(refused_n > 5, "refused {refused_n}");
}

/// The first try declining (an error inside the nested UPDATE) rolls back
/// only that statement: the app's own transaction and its writes go on.
#[test]
fn a_declined_first_try_leaves_the_apps_transaction_alone() {
    let conn = installed();
    run_with(&conn, "r", r#"{"lastHeartbeat": 1700000000000, "op": 1}"#);
    conn.execute_batch("BEGIN").unwrap();
    add_run(&conn, "mine", "queued", Some("{}"));
    let now = heartbeat(&conn, "r", None).unwrap();
    conn.execute_batch("COMMIT").unwrap();
    assert_eq!(status(&conn, "mine"), "queued");
    assert_eq!(
        raw(&conn, "r"),
        format!(r#"{{"op":1,"lastHeartbeat":{now}}}"#)
    );
    // And a refusal inside the transaction fails only that call.
    conn.execute_batch("BEGIN").unwrap();
    add_run(&conn, "mine2", "queued", Some("{}"));
    assert!(heartbeat(&conn, "r", Some(7)).is_err());
    conn.execute_batch("COMMIT").unwrap();
    assert_eq!(status(&conn, "mine2"), "queued");
    integrity_ok(&conn);
}
