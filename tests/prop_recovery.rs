//! Property tests: random sequences of heartbeats, checkpoints, status
//! changes (plain SQL UPDATEs along the app's state machine, in any case),
//! app metadata writes (read-modify-write, with and without dropping the
//! recovery keys), zombie writes, time passing, and recoveries, on two runs.
//! After every step:
//! * `lease` never decreases, `checkpointStep` never decreases;
//! * a terminal run never becomes live through our functions;
//! * the app's own metadata keys are never lost;
//! * `orphaned_runs(t, now)` equals a model computed from the rows, and
//!   `orphaned_runs` (configured threshold, real time) equals the
//!   `run_recovery_orphans` view;
//! * every error of our functions names the function.
//!
//! Cases: `PROPTEST_CASES` (default 256 here; `make test-stress` runs 5,000).

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use rusqlite::{params, Connection};
use serde_json::{Map, Value as Json};

use common::*;

const RUNS: [&str; 2] = ["run-a", "RUN-B-5f0e"];
const STALE: i64 = 30_000;
const LIVE: [&str; 8] = run_recovery::config::DEFAULT_LIVE;
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

/// The status in one of the spellings apps use: lowercase, UPPERCASE,
/// Capitalized. (Any other spelling is not live: see
/// [`a_mixed_case_status_is_consistently_not_live`].)
fn in_case(s: &str, case: u8) -> String {
    in_any_case(s, case % 3)
}

#[derive(Debug, Clone, Copy)]
enum LeaseArg {
    None,
    Current,
    Stale,
    Future,
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
    ZombieWrite {
        run: usize,
    },
    Recover {
        run: usize,
        action: u8,
        threshold: Option<i64>,
    },
    TimePasses {
        run: usize,
        ms: i64,
    },
}

fn lease_arg() -> impl Strategy<Value = LeaseArg> {
    prop_oneof![
        3 => Just(LeaseArg::Current),
        1 => Just(LeaseArg::None),
        1 => Just(LeaseArg::Stale),
        1 => Just(LeaseArg::Future),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let run = 0..RUNS.len();
    prop_oneof![
        3 => (run.clone(), lease_arg()).prop_map(|(run, lease)| Op::Heartbeat { run, lease }),
        3 => (run.clone(), -2i64..4, lease_arg(), any::<u8>())
            .prop_map(|(run, delta, lease, state)| Op::Checkpoint { run, delta, lease, state }),
        3 => (run.clone(), 0usize..5, any::<u8>()).prop_map(|(run, pick, case)| Op::Status { run, pick, case }),
        3 => (run.clone(), 0u8..4, any::<i64>(), any::<bool>())
            .prop_map(|(run, key, value, drop_recovery)| Op::AppWrite { run, key, value, drop_recovery }),
        1 => run.clone().prop_map(|run| Op::ZombieWrite { run }),
        3 => (run.clone(), 0u8..3, prop_oneof![Just(None), Just(Some(0i64)), Just(Some(STALE))])
            .prop_map(|(run, action, threshold)| Op::Recover { run, action, threshold }),
        // Time passes for one run's executor: far from the threshold either way.
        2 => (run, prop_oneof![Just(2_000i64), Just(45_000), Just(200_000)])
            .prop_map(|(run, ms)| Op::TimePasses { run, ms }),
    ]
}

#[derive(Debug, Clone)]
struct Row {
    status: String,
    meta: Map<String, Json>,
}

fn int(v: Option<&Json>) -> Option<i64> {
    match v? {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

impl Row {
    fn lease(&self) -> i64 {
        int(self.meta.get("lease")).unwrap_or(1)
    }
    fn step(&self) -> i64 {
        int(self.meta.get("checkpointStep")).unwrap_or(-1)
    }
    fn hb(&self) -> i64 {
        int(self.meta.get("lastHeartbeat")).unwrap_or(0)
    }
    fn live(&self) -> bool {
        LIVE.contains(&self.status.to_lowercase().as_str())
    }
    fn dismissed(&self) -> bool {
        int(self.meta.get("dismissedHeartbeat")) == Some(self.hb())
    }
}

fn read(conn: &Connection, id: &str) -> Row {
    let (status, text): (String, Option<String>) = conn
        .query_row(
            "SELECT status, properties_json FROM protocol_runs WHERE accession_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let meta = match text.map(|t| serde_json::from_str::<Json>(&t).unwrap()) {
        Some(Json::Object(m)) => m,
        None => Map::new(),
        Some(other) => panic!("metadata became {other}"),
    };
    Row { status, meta }
}

fn ids(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Vec<String> {
    let mut v: Vec<String> = column(conn, sql, p);
    v.sort();
    v
}

struct Sim {
    conn: Connection,
    /// The app's keys each run must still hold.
    app: Vec<BTreeMap<String, Json>>,
    /// Metadata texts read before a recovery took the run away (for zombies).
    zombie_texts: Vec<Vec<String>>,
}

fn check_error(func: &str, e: &rusqlite::Error) {
    let msg = err_text(e);
    assert!(
        msg.starts_with(&format!("{func}: ")),
        "error does not name {func}: {msg}"
    );
}

impl Sim {
    fn new(initial: &[InitialRun]) -> Sim {
        let conn = Connection::open_in_memory().unwrap();
        run_recovery::register(&conn).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let mut app = Vec::new();
        for (i, (status, case, keys)) in initial.iter().enumerate() {
            let meta = keys.as_ref().map(|k| serde_json::to_string(k).unwrap());
            add_run(
                &conn,
                RUNS[i],
                &in_case(ALL[*status], *case),
                meta.as_deref(),
            );
            app.push(
                keys.clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, Json::from(v)))
                    .collect(),
            );
        }
        // Install after the runs exist: install stamps the live ones.
        conn.query_row(
            "SELECT run_recovery_install('{\"max_resumes\": 4}')",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
        Sim {
            conn,
            app,
            zombie_texts: vec![Vec::new(); RUNS.len()],
        }
    }

    fn lease_value(&self, run: usize, arg: LeaseArg) -> Option<i64> {
        let cur = read(&self.conn, RUNS[run]).lease();
        match arg {
            LeaseArg::None => None,
            LeaseArg::Current => Some(cur),
            LeaseArg::Stale => Some((cur - 1).max(1)),
            LeaseArg::Future => Some(cur + 1),
        }
    }

    fn apply(&mut self, op: &Op) {
        let c = &self.conn;
        match *op {
            Op::Heartbeat { run, lease } => {
                let lease = self.lease_value(run, lease);
                let r = match lease {
                    Some(l) => {
                        c.query_row("SELECT run_heartbeat(?1, ?2)", params![RUNS[run], l], |r| {
                            r.get::<_, i64>(0)
                        })
                    }
                    None => c.query_row("SELECT run_heartbeat(?1)", [RUNS[run]], |r| {
                        r.get::<_, i64>(0)
                    }),
                };
                if let Err(e) = r {
                    check_error("run_heartbeat", &e);
                }
            }
            Op::Checkpoint {
                run,
                delta,
                lease,
                state,
            } => {
                let lease = self.lease_value(run, lease);
                let step = (read(c, RUNS[run]).step() + delta).max(0);
                let r = c.query_row(
                    "SELECT run_checkpoint(?1, ?2, json_object('s', ?3), ?4)",
                    params![RUNS[run], step, state, lease],
                    |r| r.get::<_, i64>(0),
                );
                // A NULL lease argument is refused (lease must be an integer); use the 3-argument form.
                let r = match (r, lease) {
                    (Err(_), None) => c.query_row(
                        "SELECT run_checkpoint(?1, ?2, json_object('s', ?3))",
                        params![RUNS[run], step, state],
                        |r| r.get::<_, i64>(0),
                    ),
                    (r, _) => r,
                };
                if let Err(e) = r {
                    check_error("run_checkpoint", &e);
                }
            }
            Op::Status { run, pick, case } => {
                let cur = read(c, RUNS[run]).status.to_lowercase();
                let next = next_statuses(&cur);
                if !next.is_empty() {
                    let to = in_case(next[pick % next.len()], case);
                    c.execute(
                        "UPDATE protocol_runs SET status = ?2 WHERE accession_id = ?1",
                        [RUNS[run], &to],
                    )
                    .unwrap();
                }
            }
            Op::AppWrite {
                run,
                key,
                value,
                drop_recovery,
            } => {
                let mut m = read(c, RUNS[run]).meta;
                let key = format!("app{key}");
                m.insert(key.clone(), Json::from(value));
                if drop_recovery {
                    for k in RECOVERY_KEYS {
                        m.remove(k);
                    }
                }
                c.execute(
                    "UPDATE protocol_runs SET properties_json = ?2 WHERE accession_id = ?1",
                    params![RUNS[run], Json::Object(m).to_string()],
                )
                .expect("an app write with the current lease (or none) is accepted");
                self.app[run].insert(key, Json::from(value));
            }
            Op::ZombieWrite { run } => {
                let cur = read(c, RUNS[run]).lease();
                let Some(text) = self.zombie_texts[run].first().cloned() else {
                    return;
                };
                let old: Map<String, Json> = serde_json::from_str(&text).unwrap();
                let old_lease = int(old.get("lease")).unwrap_or(1);
                if old_lease >= cur {
                    return;
                }
                let before = snapshot(c);
                let e = c
                    .execute(
                        "UPDATE protocol_runs SET properties_json = json_set(?2, '$.app0', 'zombie') WHERE accession_id = ?1",
                        params![RUNS[run], text],
                    )
                    .expect_err("a write carrying an older lease is refused");
                assert!(err_text(&e).contains("stale write refused"), "{e}");
                assert_eq!(snapshot(c), before);
            }
            Op::Recover {
                run,
                action,
                threshold,
            } => {
                let action = ["resume", "fail", "dismiss"][action as usize];
                let before = read(c, RUNS[run]);
                let r = match threshold {
                    Some(t) => c.query_row(
                        "SELECT recover_run(?1, ?2, ?3)",
                        params![RUNS[run], action, t],
                        |r| r.get::<_, String>(0),
                    ),
                    None => c.query_row(
                        "SELECT recover_run(?1, ?2)",
                        params![RUNS[run], action],
                        |r| r.get::<_, String>(0),
                    ),
                };
                match r {
                    Ok(out) => {
                        let out: Json = serde_json::from_str(&out).unwrap();
                        assert!(
                            before.live(),
                            "recovered a run that was not live: {before:?}"
                        );
                        let after = read(c, RUNS[run]);
                        if action != "dismiss" {
                            assert_eq!(after.lease(), before.lease() + 1);
                            assert_eq!(out["lease"], after.lease());
                            self.zombie_texts[run].push(Json::Object(before.meta).to_string());
                        }
                        if action == "fail" {
                            assert_eq!(after.status.to_lowercase(), "failed");
                        } else {
                            assert_eq!(after.status, before.status);
                        }
                    }
                    Err(e) => check_error("recover_run", &e),
                }
            }
            Op::TimePasses { run, ms } => {
                if read(c, RUNS[run]).meta.contains_key("lastHeartbeat") {
                    age_heartbeat(c, RUNS[run], ms);
                }
            }
        }
    }

    fn check(&self, before: &[Row], op: &Op) {
        let c = &self.conn;
        let now = run_recovery::now_ms();
        let mut model = Vec::new();
        let mut model_all = Vec::new();
        let mut near_threshold = false;
        for (i, id) in RUNS.iter().enumerate() {
            let (b, a) = (&before[i], read(c, id));
            assert!(
                a.lease() >= b.lease(),
                "{id}: lease went down {} -> {} ({op:?})",
                b.lease(),
                a.lease()
            );
            assert!(
                a.step() >= b.step(),
                "{id}: checkpointStep went down {} -> {} ({op:?})",
                b.step(),
                a.step()
            );
            let ours = matches!(op, Op::Heartbeat { run, .. } | Op::Checkpoint { run, .. } | Op::Recover { run, .. } if *run == i);
            if ours && !b.live() {
                assert_eq!(
                    a.status, b.status,
                    "{id}: our function changed a status that was not live ({op:?})"
                );
            }
            for (k, v) in &self.app[i] {
                assert_eq!(a.meta.get(k), Some(v), "{id}: app key {k} lost ({op:?})");
            }
            if a.live() && a.hb() < now - STALE {
                model_all.push(id.to_string());
                if !a.dismissed() {
                    model.push(id.to_string());
                }
            }
            near_threshold |= a.live() && ((now - a.hb()) - STALE).abs() < 5_000;
        }
        model.sort();
        model_all.sort();
        let sql = "SELECT run_id FROM orphaned_runs(?1, ?2)";
        assert_eq!(
            ids(c, sql, &[&STALE, &now]),
            model,
            "orphaned_runs(t, now) vs model ({op:?})"
        );
        let sql = "SELECT run_id FROM orphaned_runs(?1, ?2, 1)";
        assert_eq!(
            ids(c, sql, &[&STALE, &now]),
            model_all,
            "include_dismissed ({op:?})"
        );
        if !near_threshold {
            let tvf = ids(c, "SELECT run_id FROM orphaned_runs", &[]);
            let view = ids(
                c,
                "SELECT run_id FROM run_recovery_orphans ORDER BY age_ms DESC, run_id",
                &[],
            );
            assert_eq!(tvf, view, "orphaned_runs vs run_recovery_orphans ({op:?})");
            assert_eq!(tvf, model);
        }
    }
}

/// A run's starting point: index into ALL, a spelling, the app's keys (or NULL metadata).
type InitialRun = (usize, u8, Option<BTreeMap<String, i64>>);

fn initial() -> impl Strategy<Value = Vec<InitialRun>> {
    proptest::collection::vec(
        (
            0..ALL.len(),
            any::<u8>(),
            proptest::option::of(proptest::collection::btree_map(
                "[a-z]{1,6}",
                any::<i64>(),
                0..4,
            )),
        ),
        RUNS.len(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn recovery_invariants_hold(init in initial(), ops in proptest::collection::vec(op(), 1..48)) {
        let mut sim = Sim::new(&init);
        for op in &ops {
            let before: Vec<Row> = RUNS.iter().map(|id| read(&sim.conn, id)).collect();
            sim.apply(op);
            sim.check(&before, op);
        }
    }
}

/// Live statuses are recognised in three spellings (lowercase, UPPERCASE,
/// Capitalized), the same ones the status index is probed with. A status in
/// any other mixture of cases is not live anywhere: not stamped, refused by
/// run_heartbeat with an error (so its executor knows at once), never listed
/// and never recovered, so no run can be live for one function and
/// invisible to orphan detection.
#[test]
fn a_mixed_case_status_is_consistently_not_live() {
    let conn = Connection::open_in_memory().unwrap();
    run_recovery::register(&conn).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let odd = in_any_case("running", 3);
    add_run(&conn, "m1", &odd, None);
    conn.query_row("SELECT run_recovery_install()", [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap();
    assert_eq!(meta(&conn, "m1"), serde_json::Value::Null, "not stamped");
    let e = conn
        .query_row("SELECT run_heartbeat('m1')", [], |r| r.get::<_, i64>(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("run 'm1' is not live, found status '{odd}'")),
        "{e}"
    );
    let e = conn
        .query_row("SELECT recover_run('m1', 'fail', 0)", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not live"), "{e}");
    assert!(ids(&conn, "SELECT run_id FROM orphaned_runs", &[]).is_empty());
    assert!(ids(&conn, "SELECT run_id FROM run_recovery_orphans", &[]).is_empty());
}
