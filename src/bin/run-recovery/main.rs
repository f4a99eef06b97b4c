//! The `run-recovery` command line (see `run-recovery --help` and docs/cli.md).
//!
//! Statically linked: it opens the database with the bundled SQLite and calls
//! `run_recovery::register` on it, so it needs no loadable library.

mod cli;
mod demo;
mod worker;

use cli::{Args, CliError};

const USAGE: &str = "\
run-recovery: find and recover protocol runs whose executor died

Usage:
  run-recovery check DB [--threshold MS] [--json]
      List orphaned runs. Exit status: 0 none, 1 some found, 2 error.
  run-recovery prompt DB [--threshold MS]
      Ask, for each orphan: Resume, mark as failed, or dismiss? [r/f/d]
      (answers from a terminal or piped on standard input).
  run-recovery recover DB ID ACTION [--threshold MS]
      ACTION is resume, fail or dismiss. Prints the outcome as JSON.
  run-recovery install DB [--config JSON]
      Install (or upgrade) run_recovery in DB; prints the effective config.
  run-recovery demo [DB] [--answer r|f|d] [--steps N] [--step-ms MS]
                    [--interval MS] [--threshold MS] [--kill-after STEP]
      A worker runs a protocol, is killed with SIGKILL mid-run, the orphan is
      found and resumed from its checkpoint to completion (see docs/cli.md).
  run-recovery help | --help | --version
";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("run-recovery: {}", e.msg);
            e.code
        }
    };
    std::process::exit(code);
}

fn run(argv: Vec<String>) -> Result<i32, CliError> {
    let Some((cmd, rest)) = argv.split_first() else {
        eprint!("{USAGE}");
        return Ok(2);
    };
    match cmd.as_str() {
        // Hidden: the default install script (used by `make sql`).
        "sql" => {
            print!(
                "{}",
                run_recovery::sqlgen::install_sql_file(&run_recovery::config::Config::default())
            );
            Ok(0)
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(0)
        }
        "--version" | "version" => {
            println!(
                "run-recovery {} (SQLite {})",
                run_recovery::install::VERSION,
                rusqlite::version()
            );
            Ok(0)
        }
        "check" => {
            let a = Args::parse(rest, &["threshold"], &["json"])?;
            let db = a.positional(0, "DB")?;
            a.no_more(1)?;
            cli::check(db, a.int("threshold")?, a.flag("json"))
        }
        "prompt" => {
            let a = Args::parse(rest, &["threshold"], &[])?;
            let db = a.positional(0, "DB")?;
            a.no_more(1)?;
            let stdin = std::io::stdin();
            let tty = std::io::IsTerminal::is_terminal(&stdin);
            cli::prompt(db, a.int("threshold")?, &mut stdin.lock(), tty)
        }
        "recover" => {
            let a = Args::parse(rest, &["threshold"], &[])?;
            let db = a.positional(0, "DB")?;
            let id = a.positional(1, "ID")?;
            let action = a.positional(2, "ACTION")?;
            a.no_more(3)?;
            cli::recover(db, id, action, a.int("threshold")?)
        }
        "install" => {
            let a = Args::parse(rest, &["config"], &[])?;
            let db = a.positional(0, "DB")?;
            a.no_more(1)?;
            cli::install(db, a.value("config"))
        }
        "demo" => {
            let a = Args::parse(
                rest,
                &[
                    "answer",
                    "steps",
                    "step-ms",
                    "interval",
                    "threshold",
                    "kill-after",
                ],
                &[],
            )?;
            a.no_more(1)?;
            demo::run(demo::Options::from_args(&a)?)
        }
        // Hidden: the demo's executor process (also driven by tests/e2e*).
        "worker" => {
            let a = Args::parse(
                rest,
                &["steps", "step-ms", "tx-ms", "interval", "lease"],
                &[],
            )?;
            let db = a.positional(0, "DB")?;
            let id = a.positional(1, "ID")?;
            a.no_more(2)?;
            worker::run(worker::Options {
                db: db.to_string(),
                id: id.to_string(),
                steps: a.int("steps")?.unwrap_or(8),
                step_ms: a.int("step-ms")?.unwrap_or(400),
                tx_ms: a.int("tx-ms")?.unwrap_or(0),
                interval_ms: a.int("interval")?.unwrap_or(100),
                lease: a.int("lease")?,
            })
        }
        other => Err(CliError::usage(format!(
            "unknown command '{other}'; try run-recovery --help"
        ))),
    }
}
