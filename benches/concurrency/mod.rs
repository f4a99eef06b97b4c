//! `make bench-concurrency`: 8 worker processes each heartbeat 8 runs at
//! 20 Hz for 30 s on one WAL database (busy_timeout 5 s, synchronous=NORMAL),
//! while a checker process polls `orphaned_runs` (default threshold) and the
//! `run_recovery_orphans` view every 100 ms. Every run stays live and
//! heartbeated throughout, so any orphan the checker sees is a false positive.
//!
//! The workers and the checker are this same binary (`bench worker …`,
//! `bench checker …`); each prints one JSON line that the coordinator reads.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;

use crate::common::*;

const WORKERS: usize = 8;
const RUNS_PER_WORKER: usize = 8;
const HZ: u64 = 20;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn secs() -> u64 {
    std::env::var("BENCH_CONC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &u64| s >= 1)
        .unwrap_or(30)
}

fn open(db: &str) -> Res<Connection> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA synchronous=NORMAL")?;
    run_recovery::register(&conn)?;
    Ok(conn)
}

/// An `Instant` for a Unix-epoch millisecond time.
fn instant_at(epoch_ms: i64) -> Instant {
    let now = Instant::now();
    let delta = epoch_ms - now_ms();
    if delta >= 0 {
        now + Duration::from_millis(delta as u64)
    } else {
        now.checked_sub(Duration::from_millis((-delta) as u64))
            .unwrap_or(now)
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

pub fn coordinator() -> Res {
    let secs = secs();
    let db = target_dir().join("bench-concurrency.db");
    remove_db(&db);
    {
        let conn = Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch("BEGIN")?;
        {
            let mut stmt = conn.prepare_cached(insert_sql())?;
            let mut rng = Rng::new(7);
            for i in 0..(WORKERS * RUNS_PER_WORKER + 2000) as u64 {
                let live = i < (WORKERS * RUNS_PER_WORKER) as u64;
                let status = if live {
                    LIVE[i as usize % LIVE.len()]
                } else {
                    HISTORY[i as usize % HISTORY.len()]
                };
                let extra = if live {
                    String::new()
                } else {
                    format!("\"lastHeartbeat\":{},\"lease\":1", now_ms() - 86_400_000)
                };
                let meta = app_metadata(&mut rng, &extra);
                insert(
                    &mut stmt,
                    &RowSpec {
                        id: &accession(i),
                        status,
                        meta: &meta,
                    },
                    i,
                )?;
            }
        }
        conn.execute_batch("COMMIT")?;
        run_recovery::register(&conn)?;
        conn.query_row("SELECT run_recovery_install()", [], |_| Ok(()))?;
    }
    let exe = std::env::current_exe()?;
    let db_s = db.display().to_string();
    let start = now_ms() + 1000;
    println!(
        "concurrency: {WORKERS} processes × {RUNS_PER_WORKER} runs × {HZ} Hz for {secs} s on {db_s} \
         (WAL, synchronous=NORMAL, busy_timeout {} ms); checker polls every 100 ms",
        BUSY_TIMEOUT.as_millis()
    );
    let spawn = |args: Vec<String>| {
        Command::new(&exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    let checker = spawn(vec![
        "checker".into(),
        db_s.clone(),
        start.to_string(),
        secs.to_string(),
    ])?;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(spawn(vec![
            "worker".into(),
            db_s.clone(),
            start.to_string(),
            secs.to_string(),
            w.to_string(),
        ])?);
    }
    let mut ok = 0u64;
    let mut errors = 0u64;
    let mut first_error = String::new();
    let mut lat: Vec<f64> = Vec::new();
    for child in workers {
        let out = child.wait_with_output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "worker output unreadable ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        ok += v["ok"].as_u64().unwrap_or(0);
        errors += v["errors"].as_u64().unwrap_or(0);
        if first_error.is_empty() {
            first_error = v["first_error"].as_str().unwrap_or("").to_string();
        }
        lat.extend(
            v["lat_us"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_f64()),
        );
    }
    let out = checker.wait_with_output()?;
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "checker output unreadable ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    lat.sort_by(|a, b| a.total_cmp(b));
    let expected = (WORKERS * RUNS_PER_WORKER) as u64 * HZ * secs;
    let mut report = Report::new();
    let ms = |us: f64| format!("{:.2} ms", us / 1000.0);
    report.line(&format!(
        "\n**concurrency: {WORKERS} processes × {RUNS_PER_WORKER} runs × {HZ} Hz × {secs} s, one WAL file, busy_timeout {} ms**\n",
        BUSY_TIMEOUT.as_millis()
    ));
    report.line("| figure | value | target |\n|---|---:|---|");
    report.line(&format!(
        "| heartbeats written | {ok} of {expected} | all |"
    ));
    report.line(&format!("| errors | {errors} | 0 |"));
    report.line(&format!(
        "| latency p50 | {} | |",
        ms(percentile(&lat, 0.50))
    ));
    report.line(&format!(
        "| latency p99 | {} | |",
        ms(percentile(&lat, 0.99))
    ));
    report.line(&format!(
        "| latency max | {} | |",
        ms(percentile(&lat, 1.0))
    ));
    report.line(&format!(
        "| checker polls (orphaned_runs + view) | {} | |",
        c["polls"]
    ));
    report.line(&format!(
        "| live runs reported as orphans | {} (orphaned_runs), {} (view) | 0 |",
        c["false_orphans"], c["false_view"]
    ));
    report.line(&format!(
        "| live runs listed by orphaned_runs(1000), a 1 s threshold, after the first 0.5 s (margin check) | {} | 0 |",
        c["at_1s"]
    ));
    report.line(&format!("| checker errors | {} | 0 |", c["errors"]));
    report.line(&format!(
        "| oldest heartbeat the checker saw on a live run (after the first 0.5 s) | {} ms | < 30000 (threshold) |",
        c["max_age_ms"]
    ));
    if !first_error.is_empty() {
        report.line(&format!("\nfirst worker error: {first_error}"));
    }
    if let Some(e) = c["first_error"].as_str().filter(|e| !e.is_empty()) {
        report.line(&format!("\nfirst checker error: {e}"));
    }
    report.save("Concurrency (`make bench-concurrency`)")?;
    remove_db(&db);
    let clean = errors == 0
        && c["errors"].as_u64() == Some(0)
        && c["false_orphans"].as_u64() == Some(0)
        && c["false_view"].as_u64() == Some(0)
        && ok == expected;
    if !clean {
        return Err("concurrency: errors, missing heartbeats or false orphans (see above)".into());
    }
    Ok(())
}

/// `worker DB START_MS SECS W`: heartbeats runs W*8 .. W*8+8 at 20 Hz.
pub fn worker(args: &[String]) -> Res {
    let [db, start, secs, w] = args else {
        return Err("usage: worker DB START_MS SECS W".into());
    };
    let (start, secs, w): (i64, u64, usize) = (start.parse()?, secs.parse()?, w.parse()?);
    let conn = open(db)?;
    let ids: Vec<String> = (w * RUNS_PER_WORKER..(w + 1) * RUNS_PER_WORKER)
        .map(|i| accession(i as u64))
        .collect();
    let mut stmt = conn.prepare("SELECT run_heartbeat(?1)")?;
    let period = Duration::from_millis(1000 / HZ);
    // Workers tick out of phase, as independent executors would.
    let base = instant_at(start) + period * w as u32 / WORKERS as u32;
    let mut lat = Vec::with_capacity((HZ * secs) as usize * ids.len());
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, String::new());
    for k in 0..(HZ * secs) as u32 {
        sleep_until(base + period * k);
        for id in &ids {
            let t = Instant::now();
            let r: rusqlite::Result<i64> = stmt.query_row([id], |r| r.get(0));
            lat.push(t.elapsed().as_micros() as u64);
            match r {
                Ok(_) => ok += 1,
                Err(e) => {
                    errors += 1;
                    if first_error.is_empty() {
                        first_error = e.to_string();
                    }
                }
            }
        }
    }
    println!(
        "{}",
        json!({"ok": ok, "errors": errors, "first_error": first_error, "lat_us": lat})
    );
    Ok(())
}

/// `checker DB START_MS SECS`: polls the orphans every 100 ms until the
/// workers are done; every run is live and heartbeated, so any row is a
/// false positive.
pub fn checker(args: &[String]) -> Res {
    let [db, start, secs] = args else {
        return Err("usage: checker DB START_MS SECS".into());
    };
    let (start, secs): (i64, u64) = (start.parse()?, secs.parse()?);
    let conn = open(db)?;
    let base = instant_at(start);
    let end = base + Duration::from_secs(secs);
    let live_age = format!(
        "SELECT max(?1 - CAST(json_extract(properties_json, '$.lastHeartbeat') AS INTEGER)) \
         FROM protocol_runs WHERE status IN ({})",
        live_status_list()
    );
    let (mut polls, mut false_orphans, mut false_view, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut max_age = 0i64;
    let mut at_1s = 0u64;
    let mut first_error = String::new();
    sleep_until(base);
    let mut k = 0u32;
    while Instant::now() < end {
        let poll = || -> Res<(u64, u64, u64, i64)> {
            let a: i64 = conn
                .prepare_cached("SELECT count(*) FROM orphaned_runs")?
                .query_row([], |r| r.get(0))?;
            let b: i64 = conn
                .prepare_cached("SELECT count(*) FROM run_recovery_orphans")?
                .query_row([], |r| r.get(0))?;
            let tight: i64 = conn
                .prepare_cached("SELECT count(*) FROM orphaned_runs(1000)")?
                .query_row([], |r| r.get(0))?;
            let age: i64 = conn
                .prepare_cached(&live_age)?
                .query_row([now_ms()], |r| r.get(0))?;
            Ok((a as u64, b as u64, tight as u64, age))
        };
        match poll() {
            Ok((a, b, tight, age)) => {
                false_orphans += a;
                false_view += b;
                // The first half second still sees the stamp install made
                // before the workers started.
                if k >= 5 {
                    at_1s += tight;
                    max_age = max_age.max(age);
                }
            }
            Err(e) => {
                errors += 1;
                if first_error.is_empty() {
                    first_error = e.to_string();
                }
            }
        }
        polls += 1;
        k += 1;
        sleep_until(base + Duration::from_millis(100) * k);
    }
    println!(
        "{}",
        json!({"polls": polls, "false_orphans": false_orphans, "false_view": false_view,
               "errors": errors, "first_error": first_error, "max_age_ms": max_age,
               "at_1s": at_1s})
    );
    Ok(())
}
