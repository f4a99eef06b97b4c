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
        c.query_row("SELECT run_recovery_install()", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap();
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
    c.query_row("SELECT run_recovery_install()", [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap();
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
