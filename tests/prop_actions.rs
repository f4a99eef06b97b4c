//! Differential property test: the extension's functions and the pure-SQL
//! actions make the same decisions.
//!
//! The same random sequence of heartbeats, checkpoints, plain app writes,
//! status changes, clock jumps and recoveries is applied to two databases
//! that start equal: database F through `run_heartbeat`, `run_checkpoint` and
//! `recover_run`; database A, which never loads the extension (its install is
//! the generated SQL, applied by a plain connection), through
//! `INSERT INTO run_recovery_actions`. After every step the decisions
//! (accepted, or refused and why) and the rows (status, lease, resumes,
//! checkpoint, recovery log, the app's keys, in order) must be identical.
//! Only the clock readings differ (the two databases stamp a few
//! microseconds apart), so heartbeats are compared by age class, not value:
//! thresholds and clock jumps keep every age far from every threshold.
//!
//! Cases: `PROPTEST_CASES` (default 256; `make test-stress` runs 5,000).

mod common;

use proptest::prelude::*;
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection};
use serde_json::{Map, Value as Json};

use common::{
    add_run, allow_backdating, err_text, in_any_case, next_statuses, ALL_STATUSES, SCHEMA,
};
use run_recovery::config::Config;
use run_recovery::errors::{ActionRefusal, ACTION_UNKNOWN};

/// The third run is never inserted: every action on it is "no such run".
const RUNS: [&str; 3] = ["run-a", "RUN-B-5f0e", "ghost"];
const ALL: [&str; 13] = ALL_STATUSES;
const RECOVERY_KEYS: [&str; 7] = [
    "lastHeartbeat",
    "checkpointStep",
    "checkpointState",
    "lease",
    "resumes",
    "dismissedHeartbeat",
    "recoveryLog",
];
const CONFIG: &str = r#"{"max_resumes": 2}"#;

/// lowercase, UPPERCASE, Capitalized, or a mixture (never live).
fn in_case(s: &str, case: u8) -> String {
    in_any_case(s, [0, 0, 1, 1, 2, 2, 3][case as usize % 7])
}

#[derive(Debug, Clone, Copy)]
enum LeaseArg {
    None,
    Current,
    Stale,
    Future,
    Zero,
}

#[derive(Debug, Clone)]
enum Op {
    Heartbeat {
        run: usize,
        lease: LeaseArg,
    },
    Checkpoint {
        run: usize,
        delta: i64,
        lease: LeaseArg,
        state: u8,
    },
    Status {
        run: usize,
        pick: usize,
        case: u8,
    },
    AppWrite {
        run: usize,
        key: u8,
        value: i64,
        drop_recovery: bool,
    },
    Recover {
        run: usize,
        action: u8,
        threshold: Option<i64>,
    },
    /// What an ORM or a second process does to the row (issue 21): `kind`
    /// 0 sets recovery key `key` to JSON null, 1 REPLACEs the row without
    /// its recovery keys, 2 takes a copy of the metadata, 3 writes that copy
    /// back (a stale copy), 4 writes the metadata as JSON5 (a trailing
    /// comma). Applied alike to both sides, as plain SQL; both must accept
    /// or refuse alike, and every later decision must agree.
    Hostile {
        run: usize,
        kind: u8,
        key: u8,
    },
    /// The executor's last heartbeat moves `ms` into the past (negative: into
    /// the future, as another host's clock would put it).
    ClockJump {
        run: usize,
        ms: i64,
    },
}

fn lease_arg() -> impl Strategy<Value = LeaseArg> {
    prop_oneof![
        4 => Just(LeaseArg::Current),
        2 => Just(LeaseArg::None),
        1 => Just(LeaseArg::Stale),
        1 => Just(LeaseArg::Future),
        1 => Just(LeaseArg::Zero),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let run = prop_oneof![6 => 0usize..2, 1 => Just(2usize)];
    prop_oneof![
        3 => (run.clone(), lease_arg()).prop_map(|(run, lease)| Op::Heartbeat { run, lease }),
        3 => (run.clone(), -2i64..4, lease_arg(), any::<u8>())
            .prop_map(|(run, delta, lease, state)| Op::Checkpoint { run, delta, lease, state }),
        3 => (run.clone(), 0usize..5, any::<u8>()).prop_map(|(run, pick, case)| Op::Status { run, pick, case }),
        2 => (run.clone(), 0u8..4, any::<i64>(), any::<bool>())
            .prop_map(|(run, key, value, drop_recovery)| Op::AppWrite { run, key, value, drop_recovery }),
        4 => (run.clone(), 0u8..4, prop_oneof![3 => Just(None), 2 => Just(Some(5_000i64)), 1 => Just(Some(-1))])
            .prop_map(|(run, action, threshold)| Op::Recover { run, action, threshold }),
        3 => (run.clone(), 0u8..5, 0u8..7).prop_map(|(run, kind, key)| Op::Hostile { run, kind, key }),
        // Ages stay >= 2 s away from both thresholds used (5 s and 30 s).
        3 => (run, prop_oneof![Just(7_000i64), Just(45_000), Just(200_000), Just(-100_000)])
            .prop_map(|(run, ms)| Op::ClockJump { run, ms }),
    ]
}

/// A refusal, told apart the same way for both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused(ActionRefusal),
    Unknown,
}

/// Classifies an error of `run_heartbeat`, `run_checkpoint` or `recover_run`.
fn function_outcome(msg: &str) -> Outcome {
    use ActionRefusal::*;
    let table: [(&str, ActionRefusal); 13] = [
        ("run id must be", BadRunId),
        ("lease must be an integer", BadLease),
        ("step must be an integer", BadStep),
        ("state must be", BadState),
        ("threshold_ms must be", BadThreshold),
        ("no run with", NoSuchRun),
        ("not an object", NotObject),
        ("stale lease", StaleLease),
        ("behind its committed checkpoint", StepBehind),
        ("still alive", StillAlive),
        ("already recovered by another client", AlreadyRecovered),
        ("already dismissed", AlreadyDismissed),
        ("already resumed", TooManyResumes),
    ];
    if msg.contains("is not valid JSON") && msg.contains("metadata") {
        return Outcome::Refused(NotObject);
    }
    if msg.contains("is not live") {
        return Outcome::Refused(NotLive);
    }
    if msg.contains("lease cannot be bumped") {
        return Outcome::Refused(LeaseOverflow);
    }
    table
        .iter()
        .find(|(needle, _)| msg.contains(needle))
        .map(|(_, r)| Outcome::Refused(*r))
        .unwrap_or_else(|| panic!("unclassified function error: {msg}"))
}

fn action_outcome(action: &str, msg: &str) -> Outcome {
    if msg.contains(ACTION_UNKNOWN) {
        return Outcome::Unknown;
    }
    ActionRefusal::ALL
        .into_iter()
        .find(|r| msg.contains(&r.message(action)))
        .map(Outcome::Refused)
        .unwrap_or_else(|| panic!("unclassified action error: {msg}"))
}

struct Pair {
    f: Connection,
    a: Connection,
    /// A copy of each run's metadata on each side, taken by
    /// `Op::Hostile` (kind 2) and written back later (kind 3).
    saved: std::cell::RefCell<std::collections::HashMap<usize, Copies>>,
}

/// One run's metadata as taken on each side (functions, actions).
type Copies = (Option<String>, Option<String>);

fn read(conn: &Connection, id: &str) -> Option<(Option<String>, Option<String>, Option<String>)> {
    conn.query_row(
        "SELECT status, properties_json, end_time FROM protocol_runs WHERE accession_id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

fn int(v: Option<&Json>) -> Option<i64> {
    match v? {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

/// What must be equal in both databases: everything but clock readings.
/// Heartbeats become their age class; the dismissal becomes a flag.
fn normalized(conn: &Connection, id: &str) -> String {
    let Some((status, meta, end_time)) = read(conn, id) else {
        return "absent".into();
    };
    let now = run_recovery::now_ms();
    let meta = match meta.as_deref().map(serde_json::from_str::<Json>) {
        Some(Ok(Json::Object(mut m))) => {
            let hb = int(m.get("lastHeartbeat"));
            if let Some(v) = m.get_mut("lastHeartbeat") {
                let age = now - hb.unwrap_or(0);
                *v = Json::from(match age {
                    a if a < 0 => "future",
                    a if a <= 5_000 => "fresh",
                    a if a <= 30_000 => "recent",
                    _ => "stale",
                });
            }
            if let Some(v) = m.get_mut("dismissedHeartbeat") {
                *v = Json::from(int(Some(v)) == hb);
            }
            if let Some(Json::Array(log)) = m.get_mut("recoveryLog") {
                for rec in log {
                    if let Json::Object(r) = rec {
                        r.remove("at");
                        r.remove("lastHeartbeat");
                    }
                }
            }
            Json::Object(m).to_string()
        }
        _ => format!("raw {meta:?}"),
    };
    format!(
        "status={status:?} end_time_set={} meta={meta}",
        end_time.is_some()
    )
}

impl Pair {
    fn new(initial: &[Initial]) -> Pair {
        let f = Connection::open_in_memory().unwrap();
        run_recovery::register(&f).unwrap();
        let a = Connection::open_in_memory().unwrap();
        for conn in [&f, &a] {
            conn.execute_batch(SCHEMA).unwrap();
            for (i, (status, case, meta)) in initial.iter().enumerate() {
                let meta = match meta {
                    InitialMeta::Null => None,
                    InitialMeta::Keys(k) => Some(serde_json::to_string(k).unwrap()),
                    InitialMeta::Array => Some("[1,2]".to_string()),
                    InitialMeta::Malformed => Some("{oops".to_string()),
                };
                add_run(
                    conn,
                    RUNS[i],
                    &in_case(ALL[*status], *case),
                    meta.as_deref(),
                );
            }
        }
        f.query_row("SELECT run_recovery_install(?1)", [CONFIG], |r| {
            r.get::<_, String>(0)
        })
        .unwrap();
        // A never loads the extension: it gets the generated SQL, as sql/install.sql.
        let mut cfg = Config::default();
        cfg.apply_json(CONFIG).unwrap();
        a.execute_batch("SAVEPOINT i").unwrap();
        for stmt in run_recovery::sqlgen::install_script(&cfg) {
            a.execute_batch(&stmt).unwrap();
        }
        a.execute_batch("RELEASE i").unwrap();
        // ClockJump ages runs with plain writes, allowed on both sides.
        allow_backdating(&f);
        allow_backdating(&a);
        assert!(a
            .query_row("SELECT run_heartbeat('x')", [], |r| r.get::<_, i64>(0))
            .is_err());
        Pair {
            f,
            a,
            saved: Default::default(),
        }
    }

    fn lease(&self, run: usize, arg: LeaseArg) -> Option<i64> {
        let cur = read(&self.f, RUNS[run])
            .and_then(|(_, m, _)| m)
            .and_then(|m| serde_json::from_str::<Json>(&m).ok())
            .and_then(|m| int(m.get("lease")))
            .unwrap_or(1);
        match arg {
            LeaseArg::None => None,
            LeaseArg::Current => Some(cur),
            LeaseArg::Stale => Some(cur - 1),
            LeaseArg::Future => Some(cur + 1),
            LeaseArg::Zero => Some(0),
        }
    }

    /// Both sides of one op: (outcome through the functions, through the actions).
    fn apply(&self, op: &Op) -> Option<(Outcome, Outcome)> {
        let (f, a) = (&self.f, &self.a);
        let act = |action: &str, p: &[(&str, Sql)]| -> Outcome {
            let cols: Vec<&str> = p.iter().map(|(c, _)| *c).collect();
            let marks: Vec<String> = (1..=p.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO run_recovery_actions ({}) VALUES ({})",
                cols.join(", "),
                marks.join(", ")
            );
            let vals: Vec<&Sql> = p.iter().map(|(_, v)| v).collect();
            match a.execute(&sql, rusqlite::params_from_iter(vals)) {
                Ok(_) => Outcome::Accepted,
                Err(e) => action_outcome(action, &err_text(&e)),
            }
        };
        let call = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Outcome {
            match f.query_row(sql, p, |r| r.get::<_, Sql>(0)) {
                Ok(_) => Outcome::Accepted,
                Err(e) => function_outcome(&err_text(&e)),
            }
        };
        let id = || Sql::Text(RUNS[op_run(op)].to_string());
        let opt = |v: Option<i64>| v.map(Sql::Integer).unwrap_or(Sql::Null);
        Some(match *op {
            Op::Heartbeat { run, lease } => {
                let lease = self.lease(run, lease);
                let fo = match lease {
                    Some(l) => call("SELECT run_heartbeat(?1, ?2)", &[&RUNS[run], &l]),
                    None => call("SELECT run_heartbeat(?1)", &[&RUNS[run]]),
                };
                let ao = act(
                    "heartbeat",
                    &[
                        ("run_id", id()),
                        ("action", Sql::Text("heartbeat".into())),
                        ("lease", opt(lease)),
                    ],
                );
                (fo, ao)
            }
            Op::Checkpoint {
                run,
                delta,
                lease,
                state,
            } => {
                let lease = self.lease(run, lease);
                let cur = read(f, RUNS[run])
                    .and_then(|(_, m, _)| m)
                    .and_then(|m| serde_json::from_str::<Json>(&m).ok())
                    .and_then(|m| int(m.get("checkpointStep")))
                    .unwrap_or(-1);
                let step = cur + delta;
                let state = match state {
                    0..=199 => Sql::Text(format!("{{\"s\":{state}}}")),
                    200..=229 => Sql::Null,
                    230..=239 => Sql::Integer(state as i64),
                    _ => Sql::Text("plate 3".into()),
                };
                let fo = match lease {
                    Some(l) => call(
                        "SELECT run_checkpoint(?1, ?2, ?3, ?4)",
                        &[&RUNS[run], &step, &state, &l],
                    ),
                    None => call(
                        "SELECT run_checkpoint(?1, ?2, ?3)",
                        &[&RUNS[run], &step, &state],
                    ),
                };
                let ao = act(
                    "checkpoint",
                    &[
                        ("run_id", id()),
                        ("action", Sql::Text("checkpoint".into())),
                        ("step", Sql::Integer(step)),
                        ("state", state),
                        ("lease", opt(lease)),
                    ],
                );
                (fo, ao)
            }
            Op::Recover {
                run,
                action,
                threshold,
            } => {
                let action = ["resume", "fail", "dismiss", "RESUME"][action as usize];
                let fo = match threshold {
                    Some(t) => call("SELECT recover_run(?1, ?2, ?3)", &[&RUNS[run], &action, &t]),
                    None => call("SELECT recover_run(?1, ?2)", &[&RUNS[run], &action]),
                };
                let ao = act(
                    &action.to_lowercase(),
                    &[
                        ("run_id", id()),
                        ("action", Sql::Text(action.into())),
                        ("threshold_ms", opt(threshold)),
                    ],
                );
                (fo, ao)
            }
            // Plain SQL, applied alike to both: no decision to compare.
            Op::Status { run, pick, case } => {
                let (status, _, _) = read(f, RUNS[run])?;
                let next = next_statuses(&status?.to_lowercase());
                if !next.is_empty() {
                    let to = in_case(next[pick % next.len()], case);
                    for c in [f, a] {
                        c.execute(
                            "UPDATE protocol_runs SET status = ?2 WHERE accession_id = ?1",
                            [RUNS[run], &to],
                        )
                        .unwrap();
                    }
                }
                return None;
            }
            Op::AppWrite {
                run,
                key,
                value,
                drop_recovery,
            } => {
                for c in [f, a] {
                    let (_, meta, _) = read(c, RUNS[run])?;
                    let mut m = match meta.as_deref().map(serde_json::from_str::<Json>) {
                        Some(Ok(Json::Object(m))) => m,
                        _ => Map::new(),
                    };
                    m.insert(format!("app{key}"), Json::from(value));
                    if drop_recovery {
                        for k in RECOVERY_KEYS {
                            m.remove(k);
                        }
                    }
                    c.execute(
                        "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
                        params![RUNS[run], Json::Object(m).to_string()],
                    )
                    .expect("an app write without a lease, or with the current one, is accepted");
                }
                return None;
            }
            Op::Hostile { run, kind, key } => {
                let id = RUNS[run];
                let k = RECOVERY_KEYS[usize::from(key) % RECOVERY_KEYS.len()];
                let outcome = |r: rusqlite::Result<usize>| match r {
                    Ok(_) => Outcome::Accepted,
                    Err(_) => Outcome::Unknown,
                };
                let all_keys = RECOVERY_KEYS
                    .iter()
                    .map(|k| format!("'$.{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let write = |c: &Connection, copy: Option<&Option<String>>| -> Outcome {
                    outcome(match kind {
                        0 => c.execute(
                            &format!(
                                "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.{k}', json('null')) \
                                 WHERE accession_id = ?1 AND json_valid(properties_json)"
                            ),
                            [id],
                        ),
                        1 => c.execute(
                            &format!(
                                "REPLACE INTO protocol_runs (accession_id, name, status, properties_json, \
                                 top_level_protocol_definition_accession_id) \
                                 SELECT accession_id, name, status, CASE WHEN json_valid(properties_json) \
                                 THEN json_remove(properties_json, {all_keys}) ELSE properties_json END, \
                                 top_level_protocol_definition_accession_id FROM protocol_runs WHERE accession_id = ?1"
                            ),
                            [id],
                        ),
                        3 => match copy {
                            Some(meta) => c.execute(
                                "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
                                params![id, meta],
                            ),
                            None => Ok(0),
                        },
                        _ => c.execute(
                            "UPDATE protocol_runs SET properties_json = substr(properties_json, 1, length(properties_json) - 1) || ',}' \
                             WHERE accession_id = ?1 AND json_valid(properties_json) AND json_type(properties_json) = 'object' \
                             AND properties_json <> '{}'",
                            [id],
                        ),
                    })
                };
                if kind == 2 {
                    let (_, fm, _) = read(f, id).unwrap_or_default();
                    let (_, am, _) = read(a, id).unwrap_or_default();
                    self.saved.borrow_mut().insert(run, (fm, am));
                    return None;
                }
                let saved = self.saved.borrow().get(&run).cloned();
                let fo = write(f, saved.as_ref().map(|s| &s.0));
                let ao = write(a, saved.as_ref().map(|s| &s.1));
                (fo, ao)
            }
            Op::ClockJump { run, ms } => {
                for c in [f, a] {
                    c.execute(
                        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', \
                         CAST(json_extract(properties_json, '$.lastHeartbeat') AS INTEGER) - ?2) \
                         WHERE accession_id = ?1 AND json_valid(properties_json) \
                         AND json_type(properties_json, '$.lastHeartbeat') = 'integer'",
                        params![RUNS[run], ms],
                    )
                    .unwrap();
                }
                return None;
            }
        })
    }
}

fn op_run(op: &Op) -> usize {
    match *op {
        Op::Heartbeat { run, .. }
        | Op::Checkpoint { run, .. }
        | Op::Status { run, .. }
        | Op::AppWrite { run, .. }
        | Op::Recover { run, .. }
        | Op::Hostile { run, .. }
        | Op::ClockJump { run, .. } => run,
    }
}

#[derive(Debug, Clone)]
enum InitialMeta {
    Null,
    Keys(std::collections::BTreeMap<String, i64>),
    Array,
    Malformed,
}

type Initial = (usize, u8, InitialMeta);

fn initial() -> impl Strategy<Value = Vec<Initial>> {
    let meta = prop_oneof![
        2 => Just(InitialMeta::Null),
        6 => proptest::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..4).prop_map(InitialMeta::Keys),
        1 => Just(InitialMeta::Array),
        1 => Just(InitialMeta::Malformed),
    ];
    // Mostly live runs: that is where the decisions are.
    let status = prop_oneof![3 => Just(3usize), 1 => 0..ALL.len()];
    proptest::collection::vec((status, any::<u8>(), meta), 2)
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn functions_and_actions_decide_alike(init in initial(), ops in proptest::collection::vec(op(), 1..40)) {
        let pair = Pair::new(&init);
        for (i, op) in ops.iter().enumerate() {
            if let Some((fo, ao)) = pair.apply(op) {
                prop_assert_eq!(fo, ao, "step {} {:?}: functions vs actions", i, op);
                // A stamp in the same millisecond as a recovery counts as no
                // sign of life since it (both sides' rule); whether the next
                // op lands in that millisecond is up to the clock, so let it move on.
                if matches!(op, Op::Recover { .. }) && fo == Outcome::Accepted {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            for id in RUNS {
                prop_assert_eq!(
                    normalized(&pair.f, id),
                    normalized(&pair.a, id),
                    "step {} {:?}: run {} differs (left: functions, right: actions)", i, op, id
                );
            }
        }
    }
}

/// The test can fail: a database where the actions were installed with a
/// different max_resumes decides differently, and the comparison sees it.
#[test]
fn the_comparison_sees_a_different_decision() {
    let init = vec![
        (3usize, 0u8, InitialMeta::Null),
        (0usize, 0u8, InitialMeta::Null),
    ];
    let pair = Pair::new(&init);
    // Re-install A's actions with max_resumes 0: the first resume is refused there.
    let mut cfg = Config::default();
    cfg.apply_json(r#"{"max_resumes": 0}"#).unwrap();
    for stmt in run_recovery::sqlgen::install_script(&cfg) {
        pair.a.execute_batch(&stmt).unwrap();
    }
    pair.apply(&Op::ClockJump { run: 0, ms: 45_000 });
    let (fo, ao) = pair
        .apply(&Op::Recover {
            run: 0,
            action: 0,
            threshold: None,
        })
        .unwrap();
    assert_eq!(fo, Outcome::Accepted);
    assert_eq!(ao, Outcome::Refused(ActionRefusal::TooManyResumes));
    assert_ne!(normalized(&pair.f, RUNS[0]), normalized(&pair.a, RUNS[0]));
}
