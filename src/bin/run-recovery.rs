//! The `run-recovery` command line (see `run-recovery --help`).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sql") {
        print!(
            "{}",
            run_recovery::sqlgen::install_sql_file(&run_recovery::config::Config::default())
        );
        return;
    }
    eprintln!("run-recovery: the command line is coming (issue 3); for now: run-recovery sql");
    std::process::exit(2);
}
