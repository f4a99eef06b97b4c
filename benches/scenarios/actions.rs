//! The pure-SQL actions (`INSERT INTO run_recovery_actions`) side by side
//! with the extension's functions and with the same work hand-written, on the
//! bundled SQLite (this process); `benches/py/actions_bench.py` does the same
//! on Debian's SQLite 3.40 (`/usr/bin/python3`), and `make bench` runs both.

use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection};

use crate::common::*;

const RUNS: u64 = 3000;
const BATCH: usize = 300;

/// A WAL file database with `RUNS` runs (a tenth live, ~600 B of app metadata
/// with the recovery keys after the app's), installed or not.
fn runs_db(path: &Path, installed: bool, config: &str) -> Res<(Connection, Vec<String>)> {
    remove_db(path);
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous=NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    let mut rng = Rng::new(7);
    let mut live = Vec::new();
    conn.execute_batch("BEGIN")?;
    {
        let mut stmt = conn.prepare_cached(insert_sql())?;
        let now = now_ms();
        for i in 0..RUNS {
            let id = accession(i);
            let is_live = i % 10 == 0;
            let status = if is_live {
                "RUNNING"
            } else {
                HISTORY[i as usize % HISTORY.len()]
            };
            let meta = app_metadata(
                &mut rng,
                &format!(
                    "\"lastHeartbeat\":{},\"lease\":1,\"checkpointStep\":3",
                    now - 1000
                ),
            );
            insert(
                &mut stmt,
                &RowSpec {
                    id: &id,
                    status,
                    meta: &meta,
                },
                i,
            )?;
            if is_live {
                live.push(id);
            }
        }
    }
    conn.execute_batch("COMMIT")?;
    if installed {
        run_recovery::register(&conn)?;
        conn.query_row("SELECT run_recovery_install(?1)", [config], |_| Ok(()))?;
    }
    Ok((conn, live))
}

/// Heartbeat: the action vs `run_heartbeat` vs the hand-written `json_set`
/// UPDATE (with and without run_recovery installed); resume: the action vs
/// `recover_run`.
pub fn actions() -> Res {
    let mut report = Report::new();
    let rounds = rounds();
    let dir = target_dir();
    let (plain, plain_ids) = runs_db(&dir.join("bench-actions-plain.db"), false, "{}")?;
    let (inst, ids) = runs_db(&dir.join("bench-actions-installed.db"), true, "{}")?;
    let hand = "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?2) \
WHERE accession_id = ?1";
    let mut variants: Vec<(String, Batch<'_>)> = Vec::new();
    let hand_on = |c: &'static str,
                   conn: &'static Connection,
                   ids: &'static [String]|
     -> (String, Batch<'static>) {
        let mut next = 0usize;
        (
            c.to_string(),
            Box::new(move || {
                let mut stmt = conn.prepare_cached(hand)?;
                let t = Instant::now();
                for _ in 0..BATCH {
                    next = (next + 1) % ids.len();
                    stmt.execute(params![ids[next], now_ms()])?;
                }
                Ok(t.elapsed().as_secs_f64())
            }),
        )
    };
    // The connections live for the whole benchmark.
    let plain: &'static Connection = Box::leak(Box::new(plain));
    let inst: &'static Connection = Box::leak(Box::new(inst));
    let plain_ids: &'static [String] = Box::leak(plain_ids.into_boxed_slice());
    let ids: &'static [String] = Box::leak(ids.into_boxed_slice());
    variants.push(hand_on(
        "hand-written json_set UPDATE, WITHOUT run_recovery (baseline)",
        plain,
        plain_ids,
    ));
    variants.push(hand_on(
        "hand-written json_set UPDATE, installed",
        inst,
        ids,
    ));
    let mut next = 0usize;
    variants.push((
        "SELECT run_heartbeat(?1, 1)".into(),
        Box::new(move || {
            let mut stmt = inst.prepare_cached("SELECT run_heartbeat(?1, 1)")?;
            let t = Instant::now();
            for _ in 0..BATCH {
                next = (next + 1) % ids.len();
                let _: i64 = stmt.query_row([&ids[next]], |r| r.get(0))?;
            }
            Ok(t.elapsed().as_secs_f64())
        }),
    ));
    let mut next = 0usize;
    variants.push((
        "INSERT INTO run_recovery_actions … 'heartbeat', lease 1".into(),
        Box::new(move || {
            let mut stmt = inst.prepare_cached(
                "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?1, 'heartbeat', 1)",
            )?;
            let t = Instant::now();
            for _ in 0..BATCH {
                next = (next + 1) % ids.len();
                stmt.execute([&ids[next]])?;
            }
            Ok(t.elapsed().as_secs_f64())
        }),
    ));
    let rows = compare(rounds, BATCH, &mut variants)?;
    drop(variants);
    report.table(
        &format!(
            "heartbeat through the actions, WAL file, synchronous=NORMAL: {RUNS} runs, {} live; {BATCH} calls per batch",
            ids.len()
        ),
        "per call",
        "hand-written without run_recovery",
        &rows,
    );
    let per = |name: &str| {
        rows.iter()
            .find(|m| m.name.starts_with(name))
            .map(|m| m.per_op)
    };
    if let (Some(a), Some(h)) = (
        per("INSERT INTO"),
        per("hand-written json_set UPDATE, installed"),
    ) {
        report.line(&format!(
            "action heartbeat / hand-written UPDATE on the installed database: {:.3} (target <= 1.3)",
            a / h
        ));
    }
    if let (Some(a), Some(f)) = (per("INSERT INTO"), per("SELECT run_heartbeat")) {
        report.line(&format!("action heartbeat / run_heartbeat: {:.3}", a / f));
    }

    // Resume: each operation backdates one orphan with a plain write and
    // resumes it, so both contenders pay the same backdate.
    let (res, res_ids) = runs_db(
        &dir.join("bench-actions-resume.db"),
        true,
        r#"{"max_resumes": 1000000000}"#,
    )?;
    let res: &'static Connection = Box::leak(Box::new(res));
    let half = res_ids.len() / 2;
    let (a_ids, f_ids) = res_ids.split_at(half);
    let a_ids: &'static [String] = Box::leak(a_ids.to_vec().into_boxed_slice());
    let f_ids: &'static [String] = Box::leak(f_ids.to_vec().into_boxed_slice());
    let backdate = "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', 1000) \
WHERE accession_id = ?1";
    let resume_with = |name: &str,
                       ids: &'static [String],
                       sql: &'static str,
                       query: bool|
     -> (String, Batch<'static>) {
        let mut next = 0usize;
        (
            name.to_string(),
            Box::new(move || {
                let mut back = res.prepare_cached(backdate)?;
                let mut stmt = res.prepare_cached(sql)?;
                let t = Instant::now();
                for _ in 0..BATCH / 3 {
                    next = (next + 1) % ids.len();
                    back.execute([&ids[next]])?;
                    if query {
                        let _: String = stmt.query_row([&ids[next]], |r| r.get(0))?;
                    } else {
                        stmt.execute([&ids[next]])?;
                    }
                }
                Ok(t.elapsed().as_secs_f64())
            }),
        )
    };
    let mut variants = vec![
        resume_with(
            "backdate + SELECT recover_run(?1, 'resume') (baseline)",
            f_ids,
            "SELECT recover_run(?1, 'resume')",
            true,
        ),
        resume_with(
            "backdate + INSERT INTO run_recovery_actions … 'resume'",
            a_ids,
            "INSERT INTO run_recovery_actions (run_id, action) VALUES (?1, 'resume')",
            false,
        ),
    ];
    let rows = compare(rounds, BATCH / 3, &mut variants)?;
    drop(variants);
    report.table(
        "resume through the actions (each op: backdate the orphan, then resume it), WAL file",
        "per op",
        "recover_run",
        &rows,
    );
    for p in ["plain", "installed", "resume"] {
        remove_db(&dir.join(format!("bench-actions-{p}.db")));
    }
    report.save("Actions (`cargo bench --bench bench -- actions`)")
}
