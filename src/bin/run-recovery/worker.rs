//! `run-recovery worker DB ID` (hidden): the demo's executor process.
//!
//! It holds run ID with a pulse (`run_heartbeat_every`), continues after the
//! run's last checkpoint, and for each step writes the step's effect (a row
//! of `run_recovery_demo_steps`) and the checkpoint in ONE transaction, so a
//! step is either done and checkpointed, or neither: killed at any moment, no
//! step is lost or done twice. Every write is fenced with the lease; when the
//! run was recovered elsewhere the worker stops (exit status 3).
//!
//! Output, one line per event (tests and the demo read it):
//! `started pid=P lease=L from_step=S`, `step K/N done`, `completed`.

use std::io::Write;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::cli::{installed_config, open_installed, CliError};

pub struct Options {
    pub db: String,
    pub id: String,
    pub steps: i64,
    pub step_ms: i64,
    /// Time spent inside each step's transaction (tests use it to land kills there).
    pub tx_ms: i64,
    pub interval_ms: i64,
    /// The lease to hold (given after a resume); default: the run's current one.
    pub lease: Option<i64>,
}

/// The step log: one row per step execution; `UNIQUE` is deliberately absent,
/// so a step done twice would show as two rows.
pub const STEPS_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS run_recovery_demo_steps (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL,
  lease INTEGER NOT NULL, pid INTEGER NOT NULL, done_at_ms INTEGER NOT NULL)";

/// The demo protocol's steps (a serial dilution); longer protocols repeat them.
pub const PROTOCOL: [&str; 8] = [
    "pick up tips",
    "aspirate 100 uL buffer",
    "dispense into column 1",
    "transfer 50 uL to column 2",
    "transfer 50 uL to column 3",
    "mix 3 times",
    "read absorbance",
    "drop tips",
];

pub fn step_name(step: i64) -> String {
    let i = usize::try_from(step - 1).unwrap_or(0);
    match i / PROTOCOL.len() {
        0 => PROTOCOL[i].to_string(),
        round => format!("{} (round {})", PROTOCOL[i % PROTOCOL.len()], round + 1),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The error of a failed write: exit status 3 when this executor has lost
/// the run (it is gone, no longer live, or holds another lease than
/// `lease`), decided from the row as it is now, not from the error's text;
/// else a plain failure.
fn lost(conn: &Connection, id: &str, lease: Option<i64>, e: rusqlite::Error) -> CliError {
    match has_lost(conn, id, lease) {
        Ok(true) => CliError {
            msg: format!("worker: this executor lost the run, stopping: {e}"),
            code: 3,
        },
        Ok(false) => CliError::usage(format!("worker: {e}")),
        Err(why) => CliError::usage(format!(
            "worker: {e} (and the run cannot be read: {})",
            why.msg
        )),
    }
}

/// Whether run `id` is no longer this executor's: gone, not live, or (when
/// the executor holds `lease`) holding another lease.
fn has_lost(conn: &Connection, id: &str, lease: Option<i64>) -> Result<bool, CliError> {
    let cfg = installed_config(conn)?;
    let row: Option<(Option<String>, i64)> = conn
        .query_row(
            "SELECT status, coalesce(CAST(json_extract(properties_json, '$.lease') AS INTEGER), 1) \
             FROM protocol_runs WHERE accession_id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => true,
        Some((status, held)) => {
            !cfg.is_live(status.as_deref().unwrap_or("")) || lease.is_some_and(|l| l != held)
        }
    })
}

pub fn run(o: Options) -> Result<i32, CliError> {
    let conn = open_installed(&o.db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(STEPS_TABLE_SQL)?;
    let lease: i64 = match o.lease {
        Some(l) => conn.query_row(
            "SELECT run_heartbeat_every(?1, ?2, ?3)",
            params![o.id, o.interval_ms, l],
            |r| r.get(0),
        ),
        None => conn.query_row(
            "SELECT run_heartbeat_every(?1, ?2)",
            params![o.id, o.interval_ms],
            |r| r.get(0),
        ),
    }
    .map_err(|e| lost(&conn, &o.id, o.lease, e))?;
    let done: Option<i64> = conn
        .query_row(
            "SELECT json_extract(properties_json, '$.checkpointStep') FROM protocol_runs WHERE accession_id = ?1",
            [&o.id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let from = done.unwrap_or(0) + 1;
    say(&format!(
        "started pid={} lease={lease} from_step={from} pulse_every={}ms",
        std::process::id(),
        o.interval_ms
    ));
    let pid = i64::from(std::process::id());
    for step in from..=o.steps {
        let name = step_name(step);
        say(&format!("step {step}/{}: {name} ...", o.steps));
        std::thread::sleep(Duration::from_millis(o.step_ms.unsigned_abs()));
        do_step(&conn, &o, step, &name, lease, pid)
            .map_err(|e| lost(&conn, &o.id, Some(lease), e))?;
        say(&format!("step {step}/{} done", o.steps));
    }
    finish(&conn, &o.id, lease).map_err(|e| lost(&conn, &o.id, Some(lease), e))?;
    let _ = conn.query_row("SELECT run_heartbeat_stop(?1)", [&o.id], |_| Ok(()));
    say("completed");
    Ok(0)
}

/// The step's effect and its checkpoint, in one transaction.
fn do_step(
    conn: &Connection,
    o: &Options,
    step: i64,
    name: &str,
    lease: i64,
    pid: i64,
) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO run_recovery_demo_steps (run_id, step, name, lease, pid, done_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![o.id, step, name, lease, pid, run_recovery::now_ms()],
    )?;
    if o.tx_ms > 0 {
        std::thread::sleep(Duration::from_millis(o.tx_ms.unsigned_abs()));
    }
    let state = serde_json::json!({"done": step, "last": name}).to_string();
    tx.query_row(
        "SELECT run_checkpoint(?1, ?2, ?3, ?4)",
        params![o.id, step, state, lease],
        |_| Ok(()),
    )?;
    tx.commit()
}

/// Marks the run completed, fenced: only while this executor holds the lease.
fn finish(conn: &Connection, id: &str, lease: i64) -> rusqlite::Result<()> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.query_row("SELECT run_heartbeat(?1, ?2)", params![id, lease], |_| {
        Ok(())
    })?;
    tx.execute(
        "UPDATE protocol_runs SET status = CASE WHEN status = upper(status) THEN 'COMPLETED' ELSE 'completed' END,
           end_time = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE accession_id = ?1",
        [id],
    )?;
    tx.commit()
}
