//! Argument parsing, opening a database, and the check / prompt / recover /
//! install commands.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use run_recovery::config::Config;
use run_recovery::Action;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::json;

/// An error for the user: printed as `run-recovery: <msg>`, exit status `code`.
#[derive(Debug)]
pub struct CliError {
    pub msg: String,
    pub code: i32,
}

impl CliError {
    /// A usage error or a failure (exit status 2).
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: 2,
        }
    }

    /// A refusal by run_recovery itself (exit status 1).
    pub fn refused(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: 1,
        }
    }
}

impl From<rusqlite::Error> for CliError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                CliError::refused(format!(
                    "database is locked: another connection kept writing for more than {} s; \
                     try again when it is done",
                    BUSY_MS / 1000
                ))
            }
            _ => CliError::usage(e.to_string()),
        }
    }
}

/// `--name value` / `--name=value` options, boolean `--flags`, and positionals.
pub struct Args {
    pos: Vec<String>,
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    pub fn parse(argv: &[String], valued: &[&str], flags: &[&str]) -> Result<Args, CliError> {
        let mut out = Args {
            pos: Vec::new(),
            values: HashMap::new(),
            flags: Vec::new(),
        };
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let Some(opt) = a.strip_prefix("--") else {
                out.pos.push(a.clone());
                continue;
            };
            let (name, inline) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (opt, None),
            };
            if valued.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| CliError::usage(format!("--{name} needs a value")))?,
                };
                out.values.insert(name.to_string(), v);
            } else if flags.contains(&name) && inline.is_none() {
                out.flags.push(name.to_string());
            } else {
                return Err(CliError::usage(format!(
                    "unknown option '{a}'; try run-recovery --help"
                )));
            }
        }
        Ok(out)
    }

    pub fn positional(&self, i: usize, name: &str) -> Result<&str, CliError> {
        self.pos
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| CliError::usage(format!("missing {name}; try run-recovery --help")))
    }

    pub fn optional(&self, i: usize) -> Option<&str> {
        self.pos.get(i).map(String::as_str)
    }

    pub fn no_more(&self, n: usize) -> Result<(), CliError> {
        match self.pos.get(n) {
            Some(extra) => Err(CliError::usage(format!(
                "unexpected argument '{extra}'; try run-recovery --help"
            ))),
            None => Ok(()),
        }
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, CliError> {
        self.value(name)
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    CliError::usage(format!("--{name} must be a whole number >= 0, found '{v}'"))
                })
            })
            .transpose()
    }
}

/// Opens an existing database file with run_recovery registered on it.
/// How long the CLI waits for another connection's write lock.
const BUSY_MS: u64 = 5000;

/// The error for a database another connection keeps locked.
fn locked(path: &str) -> CliError {
    CliError::refused(format!(
        "database is locked: another connection has been writing to {path} for more than {} s; \
         try again when it is done",
        BUSY_MS / 1000
    ))
}

/// `text` with control characters shown as escapes (`\u{1b}`), so a run's
/// name or status cannot move the cursor or recolour the terminal.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn open(path: &str) -> Result<Connection, CliError> {
    if !Path::new(path).is_file() {
        return Err(CliError::usage(format!("no such database file: {path}")));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| CliError::usage(format!("cannot open {path}: {e}")))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_MS))?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                locked(path)
            }
            _ => CliError::usage(format!("{path} is not a SQLite database ({e})")),
        })?;
    run_recovery::register(&conn)?;
    Ok(conn)
}

/// Opens a database that must have run_recovery installed.
pub fn open_installed(path: &str) -> Result<Connection, CliError> {
    let conn = open(path)?;
    let installed: bool = conn.query_row(
        "SELECT count(*) > 0 FROM main.sqlite_schema WHERE type = 'table' AND name = 'run_recovery_settings'",
        [],
        |r| r.get(0),
    )?;
    if !installed {
        return Err(CliError::usage(format!(
            "run_recovery is not installed in {path}\n  install it with: run-recovery install {path}\n  \
             (or in SQL: SELECT run_recovery_install();)"
        )));
    }
    // A table or view of that name hides the table-valued function from
    // every query (SQLite looks for schema objects first): the CLI would
    // read the app's object and call its rows orphans.
    let hiding: Option<String> = conn
        .query_row(
            "SELECT type FROM main.sqlite_schema WHERE name = 'orphaned_runs' COLLATE NOCASE",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(kind) = hiding {
        return Err(CliError::refused(format!(
            "a {kind} named orphaned_runs in {path} hides run_recovery's orphaned_runs, so no \
             orphan could be read reliably; rename or drop that {kind}"
        )));
    }
    Ok(conn)
}

/// One row of `orphaned_runs`.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub run_id: String,
    /// The id as the column holds it (an integer stays an integer).
    pub id: Value,
    pub name: Option<String>,
    pub status: String,
    pub last_heartbeat: Option<i64>,
    pub age_ms: i64,
    pub checkpoint_step: Option<i64>,
    pub checkpoint_state: serde_json::Value,
    pub lease: i64,
    pub resumes: i64,
}

impl Orphan {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "last_heartbeat": self.last_heartbeat,
            "age_ms": self.age_ms,
            "last_seen": self.last_seen(),
            "checkpoint_step": self.checkpoint_step,
            "checkpoint_state": self.checkpoint_state,
            "lease": self.lease,
            "resumes": self.resumes,
        })
    }

    pub fn last_seen(&self) -> String {
        match self.last_heartbeat {
            Some(_) => ago(self.age_ms),
            None => "never".to_string(),
        }
    }

    pub fn step(&self) -> String {
        match self.checkpoint_step {
            Some(s) => s.to_string(),
            None => "-".to_string(),
        }
    }

    /// The question asked for this orphan (without the answer choices).
    pub fn question(&self) -> String {
        let name = match &self.name {
            Some(n) if !n.is_empty() => format!("\"{}\" ", shown(n)),
            _ => String::new(),
        };
        let reached = match self.checkpoint_step {
            Some(s) => format!("after step {s}"),
            None => "before its first checkpoint".to_string(),
        };
        format!(
            "A protocol run was interrupted: {name}(id {}, {}), last seen {}, {reached}.",
            shown(&self.run_id),
            shown(&self.status),
            self.last_seen()
        )
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(r) => Some(r.to_string()),
        Value::Text(t) => Some(t),
        Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// The orphans, oldest first, at `threshold` (or the configured one).
pub fn orphans(conn: &Connection, threshold: Option<i64>) -> Result<Vec<Orphan>, CliError> {
    let from = match threshold {
        Some(t) => format!("orphaned_runs({t})"),
        None => "orphaned_runs".to_string(),
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT run_id, name, status, last_heartbeat, age_ms, checkpoint_step, \
         checkpoint_state, lease, resumes FROM {from}"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            let state: Option<String> = text(r.get(6)?);
            let id: Value = r.get(0)?;
            Ok(Orphan {
                run_id: text(id.clone()).unwrap_or_default(),
                id,
                name: text(r.get(1)?),
                status: text(r.get(2)?).unwrap_or_default(),
                last_heartbeat: r.get(3)?,
                age_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                checkpoint_step: r.get(5)?,
                checkpoint_state: state
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(serde_json::Value::Null),
                lease: r.get::<_, Option<i64>>(7)?.unwrap_or(1),
                resumes: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The threshold in effect: the given one or the installed `stale_after_ms`.
pub fn effective_threshold(conn: &Connection, threshold: Option<i64>) -> Result<i64, CliError> {
    if let Some(t) = threshold {
        return Ok(t);
    }
    Ok(installed_config(conn)?.stale_after_ms)
}

/// The config run_recovery was installed with (`run_recovery_config()`).
pub fn installed_config(conn: &Connection) -> Result<Config, CliError> {
    let text: String = conn.query_row("SELECT run_recovery_config()", [], |r| r.get(0))?;
    Config::from_stored(&text)
        .map_err(|p| CliError::usage(format!("the installed config is unreadable: {p}")))
}

/// "850 ms ago", "4.2 seconds ago", "3 minutes ago", "2 hours ago", "5 days ago".
pub fn ago(ms: i64) -> String {
    if ms < 0 {
        // A heartbeat ahead of this clock: listed only when more than the
        // threshold ahead, i.e. written by a clock that was wrong.
        return format!(
            "{} in the future (written by a clock that was ahead)",
            span(ms.saturating_neg())
        );
    }
    format!("{} ago", span(ms))
}

/// "850 ms", "4.2 seconds", "3 minutes", "2 hours", "5 days".
fn span(ms: i64) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.1} seconds", ms as f64 / 1000.0)
    } else if ms < 120_000 {
        plural(ms / 1000, "second")
    } else if ms < 2 * 3_600_000 {
        plural(ms / 60_000, "minute")
    } else if ms < 2 * 86_400_000 {
        plural(ms / 3_600_000, "hour")
    } else {
        plural(ms / 86_400_000, "day")
    }
}

/// The orphans as an aligned table.
pub fn table(orphans: &[Orphan]) -> String {
    let header = ["NAME", "ID", "STATUS", "LAST SEEN", "STEP"];
    let rows: Vec<[String; 5]> = orphans
        .iter()
        .map(|o| {
            [
                o.name.as_deref().map_or_else(|| "-".into(), shown),
                shown(&o.run_id),
                shown(&o.status),
                o.last_seen(),
                o.step(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out
}

/// `check DB [--threshold MS] [--json]`: exit 0 none, 1 found.
pub fn check(db: &str, threshold: Option<i64>, as_json: bool) -> Result<i32, CliError> {
    let conn = open_installed(db)?;
    let found = orphans(&conn, threshold)?;
    if as_json {
        let arr: Vec<_> = found.iter().map(Orphan::to_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Array(arr))
                .unwrap_or_else(|_| "[]".into())
        );
    } else {
        let t = effective_threshold(&conn, threshold)?;
        if found.is_empty() {
            println!("No orphaned runs in {db} (no heartbeat for more than {t} ms).");
        } else {
            print!("{}", table(&found));
            println!(
                "{} orphaned run{} in {db} (no heartbeat for more than {t} ms). \
                 Decide with: run-recovery prompt {db}",
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            );
        }
    }
    Ok(if found.is_empty() { 0 } else { 1 })
}

/// The answer to the question: r/resume, f/fail, d/dismiss (any case).
pub fn parse_answer(s: &str) -> Option<Action> {
    match s.trim().to_ascii_lowercase().as_str() {
        "r" => Some(Action::Resume),
        "f" | "failed" => Some(Action::Fail),
        "d" => Some(Action::Dismiss),
        other => Action::parse(other),
    }
}

pub const CHOICES: &str = "Resume, mark as failed, or dismiss? [r/f/d] ";

/// Asks the question for `o` until a valid answer; `None` at end of input.
/// When the input is not a terminal the answer read is echoed, so the
/// transcript reads as if typed.
pub fn ask(
    o: &Orphan,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    tty: bool,
) -> std::io::Result<Option<Action>> {
    writeln!(out, "{}", o.question())?;
    loop {
        write!(out, "{CHOICES}")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Ok(None);
        }
        if !tty {
            writeln!(out, "{}", line.trim_end())?;
        }
        match parse_answer(&line) {
            Some(a) => return Ok(Some(a)),
            None => writeln!(
                out,
                "Please answer r (resume from the last checkpoint), f (mark as failed) or d (dismiss), found '{}'.",
                line.trim()
            )?,
        }
    }
}

/// Runs `recover_run` and describes the outcome in words.
pub fn apply(
    conn: &Connection,
    id_value: &Value,
    action: Action,
    threshold: Option<i64>,
) -> Result<(String, serde_json::Value), CliError> {
    let id = shown(&text(id_value.clone()).unwrap_or_default());
    let outcome: String = match threshold {
        Some(t) => conn.query_row(
            "SELECT recover_run(?1, ?2, ?3)",
            rusqlite::params![id_value, action.name(), t],
            |r| r.get(0),
        ),
        None => conn.query_row(
            "SELECT recover_run(?1, ?2)",
            rusqlite::params![id_value, action.name()],
            |r| r.get(0),
        ),
    }
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            CliError::from(e)
        }
        _ => CliError::refused(shown(&e.to_string())),
    })?;
    let v: serde_json::Value = serde_json::from_str(&outcome).unwrap_or_default();
    let words = match action {
        Action::Resume => format!(
            "Resumed run {id}: it now holds lease {} (resume {}); continue after step {} with state {}. \
             The new executor passes lease {} to run_checkpoint and run_heartbeat_every.",
            v["lease"],
            v["resumes"],
            match &v["checkpoint_step"] {
                serde_json::Value::Null => "0 (no checkpoint yet)".to_string(),
                s => s.to_string(),
            },
            v["checkpoint_state"],
            v["lease"]
        ),
        Action::Fail => format!(
            "Marked run {id} as {}; lease {} fences out its old executor.",
            v["status"].as_str().unwrap_or("failed"),
            v["lease"]
        ),
        Action::Dismiss => format!("Dismissed run {id}; it shows again if it ever heartbeats."),
    };
    Ok((words, v))
}

/// `prompt DB`: exit 0 when every orphan got an answer, 1 at end of input
/// or when a recovery was refused.
pub fn prompt(
    db: &str,
    threshold: Option<i64>,
    input: &mut dyn BufRead,
    tty: bool,
) -> Result<i32, CliError> {
    let conn = open_installed(db)?;
    let found = orphans(&conn, threshold)?;
    let mut out = std::io::stdout();
    if found.is_empty() {
        println!("No interrupted runs in {db}.");
        return Ok(0);
    }
    let mut code = 0;
    for (i, o) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let answer = ask(o, input, &mut out, tty).map_err(|e| CliError::usage(e.to_string()))?;
        let Some(action) = answer else {
            println!(
                "No answer (end of input): nothing changed for run {} and the {} after it.",
                shown(&o.run_id),
                found.len() - i - 1
            );
            return Ok(1);
        };
        match apply(&conn, &o.id, action, threshold) {
            Ok((words, _)) => println!("{words}"),
            Err(e) => {
                println!(
                    "Could not {} run {}: {}",
                    action.name(),
                    shown(&o.run_id),
                    e.msg
                );
                code = 1;
            }
        }
    }
    Ok(code)
}

/// The run id given on the command line, as the id column holds it: the
/// text as typed when a run has it, else the integer it spells when a run
/// has that (an id column of any declared type, or none, may hold integers
/// that do not match their text), else the text (recover_run then says
/// there is no such run).
fn run_id_of(conn: &Connection, given: &str) -> Result<Value, CliError> {
    let cfg = installed_config(conn)?;
    let sql = format!(
        "SELECT count(*) FROM main.{} WHERE {} = ?1",
        run_recovery::sqlgen::ident(&cfg.table),
        run_recovery::sqlgen::ident(&cfg.id_column)
    );
    let has = |v: &Value| -> Result<bool, CliError> {
        Ok(conn.query_row(&sql, [v], |r| r.get::<_, i64>(0))? > 0)
    };
    let text = Value::Text(given.to_string());
    if has(&text)? {
        return Ok(text);
    }
    if let Ok(i) = given.trim().parse::<i64>() {
        let int = Value::Integer(i);
        if has(&int)? {
            return Ok(int);
        }
    }
    Ok(text)
}

/// `recover DB ID ACTION`.
pub fn recover(db: &str, id: &str, action: &str, threshold: Option<i64>) -> Result<i32, CliError> {
    let conn = open_installed(db)?;
    let Some(action) = parse_answer(action) else {
        return Err(CliError::usage(format!(
            "unknown action '{action}', expected resume, fail or dismiss"
        )));
    };
    let id = run_id_of(&conn, id)?;
    let (_, outcome) = apply(&conn, &id, action, threshold)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&outcome).unwrap_or_default()
    );
    Ok(0)
}

/// `install DB [--config JSON]`.
pub fn install(db: &str, config: Option<&str>) -> Result<i32, CliError> {
    let conn = open(db)?;
    let cfg: String = match config {
        Some(c) => conn.query_row("SELECT run_recovery_install(?1)", [c], |r| r.get(0)),
        None => conn.query_row("SELECT run_recovery_install()", [], |r| r.get(0)),
    }
    .map_err(|e| CliError::usage(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap_or_default();
    println!("run_recovery is installed in {db} with:");
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or(cfg));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_in_words() {
        assert_eq!(ago(850), "850 ms ago");
        assert_eq!(ago(4200), "4.2 seconds ago");
        assert_eq!(ago(42_000), "42 seconds ago");
        assert_eq!(ago(180_000), "3 minutes ago");
        assert_eq!(ago(3 * 3_600_000), "3 hours ago");
        assert_eq!(ago(5 * 86_400_000), "5 days ago");
        assert_eq!(ago(0), "0 ms ago");
        assert_eq!(
            ago(-3 * 86_400_000),
            "3 days in the future (written by a clock that was ahead)"
        );
        assert_eq!(
            ago(i64::MIN),
            "106751991167 days in the future (written by a clock that was ahead)"
        );
    }

    #[test]
    fn answers() {
        assert_eq!(parse_answer("R\n"), Some(Action::Resume));
        assert_eq!(parse_answer(" fail "), Some(Action::Fail));
        assert_eq!(parse_answer("Failed"), Some(Action::Fail));
        assert_eq!(parse_answer("d"), Some(Action::Dismiss));
        assert_eq!(parse_answer("DISMISS"), Some(Action::Dismiss));
        assert_eq!(parse_answer("x"), None);
        assert_eq!(parse_answer(""), None);
    }

    #[test]
    fn options() {
        let argv: Vec<String> = ["db", "--threshold=5", "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse(&argv, &["threshold"], &["json"]).unwrap();
        assert_eq!(a.int("threshold").unwrap(), Some(5));
        assert!(a.flag("json"));
        assert_eq!(a.positional(0, "DB").unwrap(), "db");
        assert!(a.no_more(1).is_ok());
        let bad: Vec<String> = vec!["--nope".into()];
        assert!(Args::parse(&bad, &[], &[]).is_err());
        let neg: Vec<String> = vec!["--threshold".into(), "-1".into()];
        assert!(Args::parse(&neg, &["threshold"], &[])
            .unwrap()
            .int("threshold")
            .is_err());
    }
}
