//! Fuzzing with arbitrary SQL values: every argument of every function gets
//! NULL, integers (extremes included), reals (NaN, ±inf, -0.0, extremes),
//! text (JSON-ish, invalid UTF-8, huge), blobs — and the run's row gets
//! arbitrary metadata and status. Whatever happens:
//! * the host never crashes or aborts (this test process is the host);
//! * every failure is an error whose message starts with the function's name;
//! * a failing call changes nothing (snapshot of every table and the schema
//!   before and after).
//!
//! Cases: `PROPTEST_CASES` (default 256; `make test-stress` runs 20,000).

mod common;

use proptest::prelude::*;
use rusqlite::types::Value;
use rusqlite::Connection;

use common::*;

const ID: &str = "fz-1";

/// One SQL argument: a value to bind, or (for invalid UTF-8) a blob cast to text.
#[derive(Debug, Clone)]
enum Arg {
    Bind(Value),
    BadText(Vec<u8>),
}

impl Arg {
    fn sql(&self, i: usize) -> String {
        match self {
            Arg::Bind(_) => format!("?{i}"),
            Arg::BadText(_) => format!("CAST(?{i} AS TEXT)"),
        }
    }
    fn value(&self) -> Value {
        match self {
            Arg::Bind(v) => v.clone(),
            Arg::BadText(b) => Value::Blob(b.clone()),
        }
    }
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(i64::MIN + 1),
        Just(i64::MAX - 1),
        Just(0),
        Just(-1),
        Just(1),
        Just(2),
        Just(1_700_000_000_000),
        any::<i64>(),
    ]
}

fn real() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(1.5),
        Just(1e19),
        any::<f64>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(ID.to_string()),
        Just("resume".to_string()),
        Just("FAIL".to_string()),
        Just("dismiss".to_string()),
        Just("{}".to_string()),
        Just("null".to_string()),
        Just(r#"{"stale_after_ms": 1, "max_resumes": 0}"#.to_string()),
        Just(r#"{"table": "x\"; DROP TABLE protocol_runs; --"}"#.to_string()),
        Just(r#"{"lease": 9223372036854775807}"#.to_string()),
        Just("[1,2,3]".to_string()),
        Just("{\"a\":".to_string()),
        Just("é\u{0}nul".to_string()),
        ".{0,40}",
        (1usize..4).prop_map(|n| "{".repeat(n * 100_000)),
        (1usize..4).prop_map(|n| "x'".repeat(n * 300_000)),
    ]
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        2 => Just(Arg::Bind(Value::Null)),
        4 => int().prop_map(|i| Arg::Bind(Value::Integer(i))),
        3 => real().prop_map(|r| Arg::Bind(Value::Real(r))),
        5 => text().prop_map(|t| Arg::Bind(Value::Text(t))),
        1 => prop_oneof![
            Just(vec![0xff, 0xfe, 0x00, 0x80]),
            Just(b"{\"lease\":\xff}".to_vec()),
            Just(vec![0xc3]),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
        .prop_map(Arg::BadText),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Arg::Bind(Value::Blob(b))),
    ]
}

/// A JSON value for a recovery key: wrong types and extremes.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        int().prop_map(|i| i.to_string()),
        Just("9223372036854775808".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("1e300".to_string()),
        Just("-1e300".to_string()),
        Just("1.5".to_string()),
        Just("\"12abc\"".to_string()),
        Just("\"\"".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[{\"at\": \"x\"}]".to_string()),
    ]
}

/// The run's metadata column: arbitrary text, objects with hostile recovery keys, anything.
fn metadata() -> impl Strategy<Value = Arg> {
    let key = prop_oneof![
        Just("lastHeartbeat"),
        Just("lease"),
        Just("resumes"),
        Just("checkpointStep"),
        Just("checkpointState"),
        Just("dismissedHeartbeat"),
        Just("recoveryLog"),
        Just("app"),
    ];
    let object = proptest::collection::vec((key, json_value()), 0..6).prop_map(|kv| {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        Arg::Bind(Value::Text(format!("{{{}}}", body.join(","))))
    });
    prop_oneof![4 => object, 2 => arg()]
}

fn status() -> impl Strategy<Value = Arg> {
    prop_oneof![
        4 => prop_oneof![Just("running"), Just("RUNNING"), Just("Paused"), Just("failed"), Just("queued"), Just("rUnNiNg")]
            .prop_map(|s| Arg::Bind(Value::Text(s.to_string()))),
        1 => arg(),
    ]
}

/// (function, SQL template arity): every function, every arity.
const CALLS: [(&str, usize); 16] = [
    ("run_heartbeat", 1),
    ("run_heartbeat", 2),
    ("run_recovery_heartbeat_text", 3),
    ("run_checkpoint", 2),
    ("run_checkpoint", 3),
    ("run_checkpoint", 4),
    ("recover_run", 2),
    ("recover_run", 3),
    ("run_recovery_install", 0),
    ("run_recovery_install", 1),
    ("run_recovery_uninstall", 0),
    ("run_recovery_config", 0),
    ("run_recovery_version", 0),
    ("run_recovery_debug", 0),
    ("orphaned_runs", 0),
    ("orphaned_runs", 3),
];

fn setup(meta: &Arg, status: &Arg, aged: bool) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    run_recovery::register(&conn).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.query_row("SELECT run_recovery_install()", [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap();
    add_run(&conn, ID, "running", None);
    if aged {
        age_heartbeat(&conn, ID, 3_600_000);
    }
    // Hostile row contents, written with the triggers off (nothing is normalised).
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        .unwrap();
    conn.execute(
        &format!(
            "UPDATE protocol_runs SET properties_json = {}, status = {} WHERE accession_id = ?1",
            meta.sql(2),
            status.sql(3)
        ),
        rusqlite::params![ID, meta.value(), status.value()],
    )
    .unwrap();
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
        .unwrap();
    conn
}

fn call(conn: &Connection, func: &str, args: &[Arg]) -> rusqlite::Result<()> {
    let placeholders: Vec<String> = args.iter().enumerate().map(|(i, a)| a.sql(i + 1)).collect();
    let sql = if func == "orphaned_runs" {
        format!("SELECT * FROM orphaned_runs({})", placeholders.join(", "))
    } else {
        format!("SELECT {func}({})", placeholders.join(", "))
    };
    let values: Vec<Value> = args.iter().map(Arg::value).collect();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    while let Some(r) = rows.next()? {
        for i in 0..r.as_ref().column_count() {
            let _: Value = r.get(i)?;
        }
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.chars().take(300).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_values_never_crash_and_failures_change_nothing(
        which in 0..CALLS.len(),
        args in proptest::collection::vec(arg(), 4),
        valid_id in any::<bool>(),
        meta in metadata(),
        st in status(),
        aged in any::<bool>(),
    ) {
        let (func, n) = CALLS[which];
        let conn = setup(&meta, &st, aged);
        let mut args = args[..n].to_vec();
        if valid_id && n > 0 && func != "run_recovery_install" && func != "orphaned_runs" {
            args[0] = Arg::Bind(Value::Text(ID.to_string()));
        }
        let before = snapshot(&conn);
        if let Err(e) = call(&conn, func, &args) {
            let msg = err_text(&e);
            prop_assert!(
                msg.starts_with(&format!("{func}: ")),
                "{func}({args:?}) on metadata {meta:?}: the error does not name the function: {}",
                first_line(&msg)
            );
            prop_assert!(!msg.contains("panic"), "{}", first_line(&msg));
            prop_assert!(before == snapshot(&conn), "{func}: a failing call changed the database");
        }
        // The connection is still usable afterwards.
        let v: String = conn.query_row("SELECT run_recovery_version()", [], |r| r.get(0)).unwrap();
        prop_assert!(v.starts_with('v'));
    }
}

/// Regression seeds for what the fuzzer found, spelled out.
#[test]
fn a_lease_at_i64_max_is_refused_with_an_error_naming_recover_run() {
    let meta = Arg::Bind(Value::Text(format!(
        r#"{{"lastHeartbeat":1,"lease":{}}}"#,
        i64::MAX
    )));
    let st = Arg::Bind(Value::Text("running".into()));
    let conn = setup(&meta, &st, false);
    let before = snapshot(&conn);
    for action in ["resume", "fail"] {
        let e = call(
            &conn,
            "recover_run",
            &[
                Arg::Bind(Value::Text(ID.into())),
                Arg::Bind(Value::Text(action.into())),
            ],
        )
        .expect_err("a lease cannot be bumped past i64::MAX");
        let msg = err_text(&e);
        assert!(msg.starts_with("recover_run: "), "{msg}");
        assert_eq!(snapshot(&conn), before);
    }
}

/// Found by the fuzzer (20,000 cases, fifth session): with a key twice,
/// recover_run read the last value (serde_json's way) where SQLite, and so
/// the lease guard, reads the first; its write was refused by the guard with
/// the guard's message. It now reads the first, as SQLite does.
#[test]
fn a_key_given_twice_is_read_as_sqlite_reads_it() {
    for (meta, lease_after) in [
        (r#"{"lease":true,"lease":-1e300}"#, 2),
        (r#"{"lease":3,"lease":1}"#, 4),
        (r#"{"lease":1,"lease":7,"resumes":2,"resumes":0}"#, 2),
    ] {
        let conn = setup(
            &Arg::Bind(Value::Text(meta.into())),
            &Arg::Bind(Value::Text("running".into())),
            false,
        );
        let out: String = conn
            .query_row("SELECT recover_run(?1, 'resume')", [ID], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{meta}: {}", err_text(&e)));
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["lease"], lease_after, "{meta}");
        assert_eq!(
            one::<i64>(
                &conn,
                "SELECT properties_json ->> '$.lease' FROM protocol_runs"
            ),
            Ok(lease_after),
            "{meta}"
        );
        // The executor that holds the new lease can go on.
        let hb: rusqlite::Result<i64> = conn.query_row(
            "SELECT run_heartbeat(?1, ?2)",
            rusqlite::params![ID, lease_after],
            |r| r.get(0),
        );
        assert!(hb.is_ok(), "{meta}: {hb:?}");
    }
}

#[test]
fn an_argument_with_a_nul_byte_gets_an_error_naming_the_function() {
    let conn = setup(
        &Arg::Bind(Value::Null),
        &Arg::Bind(Value::Text("running".into())),
        false,
    );
    for (func, args) in [
        ("run_recovery_install", vec![Arg::BadText(vec![0])]),
        ("run_heartbeat", vec![Arg::Bind(Value::Text("a\0b".into()))]),
        (
            "recover_run",
            vec![
                Arg::Bind(Value::Text(ID.into())),
                Arg::Bind(Value::Text("res\0ume".into())),
            ],
        ),
    ] {
        let e = call(&conn, func, &args).unwrap_err();
        let msg = err_text(&e);
        assert!(msg.starts_with(&format!("{func}: ")), "{func}: {msg}");
    }
}

/// What `orphaned_runs` lists, `recover_run` can act on: a heartbeat at the
/// bottom of the integer range is the oldest heartbeat there is.
#[test]
fn a_heartbeat_at_i64_min_is_an_orphan_that_can_be_recovered() {
    let meta = Arg::Bind(Value::Text(format!(r#"{{"lastHeartbeat":{}}}"#, i64::MIN)));
    let conn = setup(&meta, &Arg::Bind(Value::Text("running".into())), false);
    let listed: Vec<String> = column(&conn, "SELECT run_id FROM orphaned_runs", []);
    assert_eq!(listed, vec![ID.to_string()]);
    let r = call(
        &conn,
        "recover_run",
        &[
            Arg::Bind(Value::Text(ID.into())),
            Arg::Bind(Value::Text("fail".into())),
        ],
    );
    assert!(
        r.is_ok(),
        "orphaned_runs lists it, recover_run refuses: {}",
        err_text(&r.unwrap_err())
    );
}
