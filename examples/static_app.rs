//! An app that links SQLite statically (rusqlite `bundled`) and registers
//! run_recovery on its own connection: no loadable library involved.
//!
//! cargo run --example static_app
use rusqlite::Connection;

fn main() -> rusqlite::Result<()> {
    let conn = Connection::open_in_memory()?;
    run_recovery::register(&conn)?;
    conn.execute_batch(
        "CREATE TABLE protocol_runs (accession_id TEXT PRIMARY KEY, name TEXT, status TEXT,
                                     properties_json TEXT, end_time TEXT, updated_at TEXT);
         CREATE INDEX ix_protocol_runs_status ON protocol_runs (status);",
    )?;
    conn.query_row("SELECT run_recovery_install()", [], |_| Ok(()))?;

    // A run starts: the installed trigger stamps its first heartbeat and lease 1.
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json)
         VALUES ('r1', 'PCR setup', 'running', '{\"operator\":\"ana\"}')",
        [],
    )?;
    let lease: i64 = conn.query_row(
        "SELECT properties_json ->> '$.lease' FROM protocol_runs WHERE accession_id = 'r1'",
        [],
        |r| r.get(0),
    )?;
    // The executor checkpoints each step, fenced with its lease.
    for step in 1..=3 {
        conn.query_row(
            "SELECT run_checkpoint('r1', ?1, json_object('done', ?1), ?2)",
            rusqlite::params![step, lease],
            |_| Ok(()),
        )?;
    }
    // It dies; a minute later (backdated here, which the settings allow on
    // purpose) another process finds it.
    conn.execute(
        "INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')",
        [],
    )?;
    conn.execute(
        "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat',
             (properties_json ->> '$.lastHeartbeat') - 60000)",
        [],
    )?;
    let (id, step): (String, i64) = conn.query_row(
        "SELECT run_id, checkpoint_step FROM orphaned_runs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    println!("orphan {id}, last checkpoint: step {step}");
    let outcome: String =
        conn.query_row("SELECT recover_run(?1, 'resume')", [&id], |r| r.get(0))?;
    println!("resumed: {outcome}");
    // The old executor is fenced out.
    let stale = conn.query_row("SELECT run_heartbeat('r1', ?1)", [lease], |r| {
        r.get::<_, i64>(0)
    });
    println!("old executor: {}", stale.unwrap_err());
    Ok(())
}
