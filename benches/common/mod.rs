//! Shared pieces of the benchmarks: the spec's schema, realistic rows,
//! cached databases under target/, side-by-side timing and the tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{params, Connection};

pub type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The host schema of the spec (sql/protocol_runs.sql).
pub const SCHEMA: &str = include_str!("../../sql/protocol_runs.sql");

/// The checked-in pure-SQL install (what a client without the extension applies).
pub const INSTALL_SQL: &str = include_str!("../../sql/install.sql");

/// Bumped when the generated rows change, so stale cached databases are not reused.
const DB_VERSION: u32 = 1;

/// xorshift64*: deterministic rows without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn now_ms() -> i64 {
    run_recovery::now_ms()
}

/// A UUID-like 32-hex accession id.
pub fn accession(i: u64) -> String {
    format!(
        "{:016x}{:016x}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        i ^ 0x5eed
    )
}

const FILLER: &str = "Serial dilution across columns 1-12, mix 3x at 50 uL, \
change tips between columns; reader at 600 nm after 10 min shake; \
operator checks the reservoir volumes before the transfer step; ";

/// Realistic app metadata: 300-800 bytes of the app's own keys, plus the
/// recovery keys given in `extra` (already JSON, without braces).
pub fn app_metadata(rng: &mut Rng, extra: &str) -> String {
    let mut s = String::with_capacity(900);
    let _ = write!(
        s,
        "{{\"protocolVersion\":\"2.{}.{}\",\"deck\":\"STARlet-{}\",\"operator\":\"user{}@lab.example\",\
\"liquidClass\":\"Water_HighVolume_Jet_Dispense\",\"temperatureC\":{}.{},\"plates\":[",
        rng.below(20),
        rng.below(10),
        rng.below(9),
        rng.below(500),
        18 + rng.below(20),
        rng.below(10)
    );
    for p in 0..(1 + rng.below(8)) {
        if p > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"PLT-{:08}\"", rng.below(100_000_000));
    }
    s.push_str("],\"tipRacks\":[");
    for p in 0..(1 + rng.below(4)) {
        if p > 0 {
            s.push(',');
        }
        let _ = write!(s, "{{\"slot\":{},\"type\":\"HT_L_1000uL\"}}", p + 1);
    }
    let notes = rng.below(FILLER.len() as u64 * 2) as usize;
    s.push_str("],\"notes\":\"");
    let mut left = notes;
    while left > 0 {
        let take = left.min(FILLER.len());
        s.push_str(&FILLER[..take]);
        left -= take;
    }
    s.push('"');
    if !extra.is_empty() {
        s.push(',');
        s.push_str(extra);
    }
    s.push('}');
    s
}

pub const LIVE: [&str; 5] = ["running", "RUNNING", "paused", "PAUSED", "preparing"];
pub const HISTORY: [&str; 5] = ["completed", "COMPLETED", "failed", "FAILED", "cancelled"];

/// The hand-written orphan query's status list: every spelling of every live
/// status, as the extension matches them (lowercase, UPPERCASE, Capitalized).
pub fn live_status_list() -> String {
    run_recovery::config::DEFAULT_LIVE
        .iter()
        .flat_map(|s| run_recovery::config::spellings(s))
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct RowSpec<'a> {
    pub id: &'a str,
    pub status: &'a str,
    pub meta: &'a str,
}

pub fn insert_sql() -> &'static str {
    "INSERT INTO protocol_runs (accession_id, created_at, updated_at, name, properties_json, start_time, \
end_time, data_directory_path, duration_ms, status, input_parameters_json, created_by_user, \
top_level_protocol_definition_accession_id, protocol_definition_accession_id) \
VALUES (?1, '2025-03-01 09:00:00', '2025-03-01 10:00:00', ?2, ?3, '2025-03-01T09:00:01Z', ?4, \
'/data/runs/' || ?1, 3600000, ?5, '{\"volume_ul\":50,\"replicates\":3}', 'scientist', ?6, ?6)"
}

pub fn insert(stmt: &mut rusqlite::CachedStatement<'_>, r: &RowSpec<'_>, i: u64) -> Res {
    let end: Option<&str> = if LIVE.contains(&r.status) {
        None
    } else {
        Some("2025-03-01T10:00:00Z")
    };
    stmt.execute(params![
        r.id,
        format!("ELISA plate run {i}"),
        r.meta,
        end,
        r.status,
        accession(i % 97 + 1_000_000_000),
    ])?;
    Ok(())
}

pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The history database of `n` runs, 100 of them live: 20 stale (heartbeat an
/// hour before the build, key `benchStale`), 40 that heartbeated at build
/// time, 40 that never did (install stamps them). Built once, installed, in
/// WAL mode, and cached as target/bench-runs-v<N>-<n>.db.
pub fn history_db(n: u64) -> Res<PathBuf> {
    let path = target_dir().join(format!("bench-runs-v{DB_VERSION}-{n}.db"));
    if path.exists() {
        return Ok(path);
    }
    let tmp = target_dir().join(format!("bench-runs-v{DB_VERSION}-{n}.db.tmp"));
    remove_db(&tmp);
    let t = Instant::now();
    {
        let conn = Connection::open(&tmp)?;
        conn.query_row("PRAGMA journal_mode=OFF", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=OFF; PRAGMA cache_size=-200000;")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch("BEGIN")?;
        {
            let mut stmt = conn.prepare_cached(insert_sql())?;
            let mut rng = Rng::new(n);
            let every = (n / 100).max(1);
            let build = now_ms();
            let mut live = 0u64;
            for i in 0..n {
                let id = accession(i);
                let (status, extra) = if i % every == 0 && live < 100 {
                    live += 1;
                    let status = LIVE[(live % LIVE.len() as u64) as usize];
                    let extra = match live % 5 {
                        0 => format!(
                            "\"lastHeartbeat\":{},\"lease\":1,\"benchStale\":true",
                            build - 3_600_000
                        ),
                        1 | 2 => {
                            format!("\"lastHeartbeat\":{build},\"lease\":1,\"checkpointStep\":4")
                        }
                        _ => String::new(),
                    };
                    (status, extra)
                } else {
                    let status = HISTORY[(rng.below(HISTORY.len() as u64)) as usize];
                    let hb = build - 86_400_000 - rng.below(86_400_000 * 365) as i64;
                    (status, format!("\"lastHeartbeat\":{hb},\"lease\":1"))
                };
                let meta = app_metadata(&mut rng, &extra);
                insert(
                    &mut stmt,
                    &RowSpec {
                        id: &id,
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
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    }
    std::fs::rename(&tmp, &path)?;
    eprintln!(
        "built {} ({n} runs) in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}

pub fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r: &usize| r >= 1)
        .unwrap_or(21)
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A contender: runs one batch and returns its wall time in seconds.
pub type Batch<'a> = Box<dyn FnMut() -> Res<f64> + 'a>;

/// One measured variant: median seconds per op, and its per-round ratio to
/// the baseline (median, min, max).
pub struct Measured {
    pub name: String,
    pub per_op: f64,
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
}

/// On-CPU time of the calling thread in seconds, from
/// /proc/thread-self/schedstat (Linux): unlike wall time, it does not count
/// the time this thread waited while other engineers' builds ran.
pub fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// What `compare` measures: wall time (the batch's own return value), or
/// with BENCH_CLOCK=cpu the on-CPU time of this thread (on the 2-core VM this
/// was written on, schedstat is quantized to 4 ms, so batches must be long).
#[derive(Clone, Copy, PartialEq)]
pub enum Clock {
    Cpu,
    Wall,
}

pub fn default_clock() -> Clock {
    if std::env::var("BENCH_CLOCK").as_deref() == Ok("cpu") && thread_cpu().is_some() {
        Clock::Cpu
    } else {
        Clock::Wall
    }
}

pub fn clock_name() -> &'static str {
    match default_clock() {
        Clock::Cpu => "thread CPU time",
        Clock::Wall => "wall time",
    }
}

/// Runs every variant `rounds` times, interleaved, rotating who goes first;
/// variant 0 is the baseline. `ops` is how many operations one batch does.
pub fn compare(
    rounds: usize,
    ops: usize,
    variants: &mut [(String, Batch<'_>)],
) -> Res<Vec<Measured>> {
    compare_with(default_clock(), rounds, ops, variants)
}

pub fn compare_with(
    clock: Clock,
    rounds: usize,
    ops: usize,
    variants: &mut [(String, Batch<'_>)],
) -> Res<Vec<Measured>> {
    let k = variants.len();
    // One untimed warm-up batch each (page cache, statement caches).
    for (_, f) in variants.iter_mut() {
        f()?;
    }
    let mut times = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for j in 0..k {
            let v = (r + j) % k;
            let c0 = thread_cpu();
            let wall = (variants[v].1)()?;
            let secs = match (clock, c0, thread_cpu()) {
                (Clock::Cpu, Some(a), Some(b)) => b - a,
                _ => wall,
            };
            times[v].push(secs / ops as f64);
        }
    }
    Ok((0..k)
        .map(|v| {
            let ratios: Vec<f64> = (0..rounds).map(|r| times[v][r] / times[0][r]).collect();
            Measured {
                name: variants[v].0.clone(),
                per_op: median(&times[v]),
                ratio: median(&ratios),
                ratio_min: ratios.iter().cloned().fold(f64::INFINITY, f64::min),
                ratio_max: ratios.iter().cloned().fold(0.0, f64::max),
            }
        })
        .collect())
}

pub fn fmt_time(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

/// Prints a table to stdout and appends it (markdown) to the results file.
pub struct Report {
    md: String,
}

impl Report {
    pub fn new() -> Self {
        Report { md: String::new() }
    }

    pub fn table(&mut self, title: &str, unit: &str, baseline: &str, rows: &[Measured]) {
        println!("\n== {title} ==");
        println!(
            "{:<52} {:>12}  {:>8}  {:>15}",
            "variant", unit, "ratio", "[min..max]"
        );
        let _ = writeln!(self.md, "\n**{title}**\n");
        let _ = writeln!(
            self.md,
            "| variant | {unit} (median) | ratio vs {baseline} (median) | ratio range |\n|---|---:|---:|---:|"
        );
        for m in rows {
            println!(
                "{:<52} {:>12}  {:>8.3}  [{:.2}..{:.2}]",
                m.name,
                fmt_time(m.per_op),
                m.ratio,
                m.ratio_min,
                m.ratio_max
            );
            let range = if m.ratio_min.is_nan() {
                "—".to_string()
            } else {
                format!("{:.2}–{:.2}", m.ratio_min, m.ratio_max)
            };
            let _ = writeln!(
                self.md,
                "| {} | {} | {:.3} | {range} |",
                m.name.replace('|', "\\|"),
                fmt_time(m.per_op),
                m.ratio,
            );
        }
    }

    pub fn line(&mut self, text: &str) {
        println!("{text}");
        let _ = writeln!(self.md, "{text}");
    }

    /// Appends the markdown to `BENCH_OUT` (default target/bench-results.md).
    pub fn save(&self, section: &str) -> Res {
        self.save_as(section, &format!("{} rounds; {}", rounds(), clock_name()))
    }

    pub fn save_as(&self, section: &str, method: &str) -> Res {
        let path = std::env::var_os("BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("bench-results.md"));
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = write!(
            text,
            "\n### {section} ({}, source {}; SQLite {}; {method})\n{}",
            run_recovery::install::VERSION,
            run_recovery::install::SOURCE,
            rusqlite::version(),
            self.md
        );
        std::fs::write(&path, text)?;
        Ok(())
    }
}

/// Times `f`, in seconds.
pub fn timed(f: impl FnOnce() -> Res) -> Res<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}
