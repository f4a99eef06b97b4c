//! Benchmarks: see mk/bench.mk (being written).
fn main() {
    eprintln!("benchmarks are being written; see BENCHMARKS.md");
    std::process::exit(1);
}
