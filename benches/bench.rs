//! Benchmarks for run_recovery (see BENCHMARKS.md for the figures).
//!
//! `make bench` runs `cargo bench --bench bench` (release profile, statically
//! linked SQLite): heartbeat cost, orphan detection at scale, load/install
//! cost (in-process, and through Debian's /usr/bin/python3 loading
//! dist/run_recovery.so). `make bench-concurrency` runs the multi-process
//! heartbeat test (`cargo bench --bench bench -- concurrency`).
//!
//! Speed is never asserted: every figure is a ratio against a baseline run
//! side by side in the same process, in interleaved rounds (the order rotates
//! each round), and the median of the per-round ratios is reported.
//!
//! Modes (first non-flag argument): `all` (default), `heartbeat`, `orphans`,
//! `load`, `concurrency`; `worker` and `checker` are the child processes of
//! `concurrency`; `callgrind` counts instructions per
//! operation of each contender (`profile WHAT` runs one in a loop for
//! callgrind) (see BENCHMARKS.md). Knobs (environment): `BENCH_ROUNDS` (default 21),
//! `BENCH_SIZES` (default `10000,100000,1000000`), `BENCH_CONC_SECS`
//! (default 30), `BENCH_OUT` (markdown copy of the tables, default
//! `target/bench-results.md`).

mod common;
mod concurrency;
mod scenarios;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("all");
    let result = match mode {
        "all" => scenarios::heartbeat()
            .and_then(|_| scenarios::orphans())
            .and_then(|_| scenarios::load()),
        "heartbeat" => scenarios::heartbeat(),
        "orphans" => scenarios::orphans(),
        "load" => scenarios::load(),
        "concurrency" => concurrency::coordinator(),
        "worker" => concurrency::worker(&args[1..]),
        "checker" => concurrency::checker(&args[1..]),
        "callgrind" => scenarios::callgrind(),
        "profile" => scenarios::profile(args.get(1).map(String::as_str).unwrap_or("")),
        other => Err(format!(
            "unknown mode '{other}', expected all, heartbeat, orphans, load or concurrency"
        )
        .into()),
    };
    if let Err(e) = result {
        eprintln!("bench {mode}: {e}");
        std::process::exit(1);
    }
}
