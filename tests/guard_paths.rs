//! Where the lease guard's `WHEN` ends for a write (`run_recovery_lease_guard`
//! in sql/install.sql): a heartbeat ends at the string test, before any JSON
//! function; an app write whose text does not end like a last heartbeat
//! leaves the string test at that tail, before comparing the two heads, and
//! goes on to the JSON test; one that ends like a heartbeat compares heads. Both are speed, not results (every write here is let through
//! unchanged), so they are read from SQLite's count of virtual-machine steps:
//! the same prepared `UPDATE` writes every text over the same stored
//! metadata, so its steps differ only by where the guard's `WHEN` stopped.
mod common;

use common::*;
use rusqlite::{params, Connection, StatementStatus};

const WRITE: &str = "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1";
const BEFORE: &str =
    r#"{"operator":"ana","lease":1,"checkpointStep":3,"lastHeartbeat":1700000000000}"#;
/// Only the heartbeat's digits changed (what every heartbeat writes).
const HEARTBEAT: &str =
    r#"{"operator":"ana","lease":1,"checkpointStep":3,"lastHeartbeat":1700000000001}"#;
/// An app key changed, compact JSON: the string test runs to its end (the
/// tail is a heartbeat's; the heads differ).
const COMPACT_EDIT: &str =
    r#"{"operator":"bob","lease":1,"checkpointStep":3,"lastHeartbeat":1700000000000}"#;
/// An app key added after the heartbeat, compact: the tail is not a
/// heartbeat's, though its colon is where a heartbeat's would be.
const OTHER_LAST: &str = r#"{"operator":"ana","lease":1,"checkpointStep":3,"lastHeartbeat":1700000000000,"zz":1700000000000}"#;
/// An app key changed, written as Python's `json.dumps` writes: a space
/// after every colon, so its tail is not a heartbeat's.
const SPACED_EDIT: &str =
    r#"{"operator": "bob", "lease": 1, "checkpointStep": 3, "lastHeartbeat": 1700000000000}"#;

/// The steps of writing `text` over `BEFORE` (stored with the triggers off,
/// so nothing reformats it), and the metadata the write left.
fn steps(conn: &Connection, text: &str) -> (i32, String) {
    without_triggers(conn, |c| c.execute(WRITE, params!["r", BEFORE])).unwrap();
    let mut st = conn.prepare_cached(WRITE).unwrap();
    st.reset_status(StatementStatus::VmStep);
    assert_eq!(st.execute(params!["r", text]).unwrap(), 1);
    let n = st.get_status(StatementStatus::VmStep);
    let left: String = conn
        .query_row(
            "SELECT properties_json FROM protocol_runs WHERE accession_id = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (n, left)
}

#[test]
fn a_heartbeat_ends_at_the_string_test_and_an_app_write_at_its_tail_or_head() {
    let conn = installed();
    add_run(&conn, "r", "running", Some("{}"));
    let (heartbeat, left) = steps(&conn, HEARTBEAT);
    assert_eq!(left, HEARTBEAT);
    let (compact, left) = steps(&conn, COMPACT_EDIT);
    assert_eq!(left, COMPACT_EDIT);
    let (spaced, left) = steps(&conn, SPACED_EDIT);
    assert_eq!(left, SPACED_EDIT);
    let (other_last, left) = steps(&conn, OTHER_LAST);
    assert_eq!(left, OTHER_LAST);
    // The heartbeat never reached the JSON test, which both app writes ran.
    assert!(
        heartbeat < spaced,
        "heartbeat {heartbeat} steps, spaced app write {spaced}"
    );
    // Both app writes whose tail is not a heartbeat's left the string test
    // before the heads, which the compact edit compared.
    assert!(
        spaced < compact && other_last < compact,
        "steps: spaced {spaced}, another key last {other_last}, compact {compact}"
    );
    // Steps are counted per statement: the same write again counts the same.
    assert_eq!(steps(&conn, SPACED_EDIT).0, spaced);
}
