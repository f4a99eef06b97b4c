//! Every error message run_recovery produces, in one place and one format:
//! `<function>: <problem>, found <value>` (or `<function>: <problem>` where
//! there is no single value), and `run_recovery internal error: …` for
//! broken invariants.
//!
//! The logic never builds message text: it returns a [`Refusal`] (or a
//! [`ConfigProblem`]), a value callers match on. Text is made here, once, at
//! the SQL boundary, by [`Failure::into_sql`] / [`Refusal::message`].

use std::fmt::Display;

use rusqlite::types::ValueRef;
use rusqlite::Error;

/// Why a function will not act on a run (or at all). Produced by the pure
/// logic ([`crate::metadata`], [`crate::config`]) and the functions' checks;
/// callers match variants; [`Refusal::message`] is the only place it becomes
/// text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// No `run_recovery_settings` row: install was never run (or undone).
    NotInstalled,
    /// No row with this id; `id_column` names the column searched.
    NoSuchRun { id_column: String },
    /// The run's status is not one of the live statuses.
    NotLive {
        status: String,
        live_statuses: Vec<String>,
    },
    /// The metadata is JSON, but not an object (`kind`: array, string, …).
    NotObject { kind: &'static str, text: String },
    /// The metadata is not valid JSON.
    NotJson { text: String },
    /// The lease given is not the lease the run holds.
    StaleLease { given: i64, found: i64 },
    /// A checkpoint behind the committed one.
    StepBehind { step: i64, found: i64 },
    /// The stamp's UPDATE changed nothing, yet every precondition holds:
    /// another writer changed the row in between.
    ChangedWhileStamped,
    /// recover_run on a run whose heartbeat is within the threshold
    /// (`age_ms` < 0: a heartbeat from a clock ahead of ours).
    StillAlive { age_ms: i64, threshold_ms: i64 },
    /// Another client recovered the run since its last sign of life.
    AlreadyRecovered {
        action: String,
        ago_ms: i64,
        lease: i64,
    },
    /// Dismissed at this heartbeat already.
    AlreadyDismissed { heartbeat: i64 },
    /// `max_resumes` reached.
    TooManyResumes { resumes: i64, max_resumes: i64 },
    /// The lease is i64::MAX.
    LeaseOverflow { lease: i64 },
    /// recover_run's compare-and-set lost every round.
    KeptChanging,
    /// recover_run met SQLITE_BUSY while its own statement holds a read
    /// snapshot (it also reads a table), so waiting cannot help.
    BusyInSnapshot,
    /// run_heartbeat_every with an interval that would let the run go stale.
    IntervalTooLong {
        interval_ms: i64,
        stale_after_ms: i64,
    },
    /// run_heartbeat_every on a database with no file (`None`: in-memory or
    /// temporary; `Some(path)`: a name that is no file on disk).
    NeedsFile { found: Option<String> },
    /// The pulse thread could not be started.
    NoThread { why: String },
    /// install: the configured table does not exist.
    NoTable { table: String },
    /// install: the table lacks a configured column.
    NoColumn {
        table: String,
        column: String,
        key: &'static str,
    },
    /// install: the connection has `PRAGMA trusted_schema=OFF` and this
    /// SQLite refuses JSON functions in triggers then (3.40 does), so the
    /// installed triggers could not run: `found` is SQLite's message.
    TrustedSchemaOff {
        sqlite_version: String,
        found: String,
    },
    /// What install made is no longer all there (a migration rebuilt the
    /// table, a trigger was dropped, a configured column renamed): the fence
    /// is not in force, so every function refuses until install runs again.
    InstallChanged {
        table: String,
        table_exists: bool,
        missing: Vec<String>,
        columns_gone: Vec<(&'static str, String)>,
    },
    /// The schema changed between every look at the installed objects and
    /// the write that followed it.
    SchemaKeptChanging { tries: u32 },
    /// A config text that cannot be applied.
    BadConfig(ConfigProblem),
    /// The config stored in the database cannot be read back (a broken invariant).
    StoredConfigUnreadable(ConfigProblem),
}

/// Why a config text is refused ([`crate::config::Config::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigProblem {
    NotJson {
        error: String,
        text: String,
    },
    NotObject {
        text: String,
    },
    UnknownKey {
        key: String,
        keys: &'static [&'static str],
    },
    BadName {
        key: String,
        found: String,
    },
    BadInt {
        key: String,
        min: i64,
        found: String,
    },
    BadStatuses {
        found: String,
    },
    TerminalStatus {
        status: String,
        found: String,
    },
    OnlyMain {
        found: String,
    },
}

impl Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ConfigProblem::*;
        match self {
            NotJson { error, text } => {
                write!(f, "config is not valid JSON ({error}), found {}", quote(text))
            }
            NotObject { text } => write!(f, "config must be a JSON object, found {}", quote(text)),
            UnknownKey { key, keys } => write!(
                f,
                "unknown config key {}, expected one of {}",
                quote(key),
                keys.join(", ")
            ),
            BadName { key, found } => write!(
                f,
                "config key '{key}' must be a non-empty name, found {found}"
            ),
            BadInt { key, min, found } => write!(
                f,
                "config key '{key}' must be an integer >= {min}, found {found}"
            ),
            BadStatuses { found } => write!(
                f,
                "config key 'live_statuses' must be a non-empty array of status names, found {found}"
            ),
            TerminalStatus { status, found } => write!(
                f,
                "config key 'live_statuses' cannot contain the terminal status '{status}', found {found}"
            ),
            OnlyMain { found } => write!(
                f,
                "only the 'main' schema is supported, found schema {found}"
            ),
        }
    }
}

impl Refusal {
    /// The text of this refusal by SQL function `func` on run `run_id`
    /// (ignored by the refusals that concern no run).
    pub(crate) fn message(&self, func: &str, run_id: &str) -> String {
        use Refusal::*;
        let run = quote(run_id);
        let problem = match self {
            NotInstalled => "run_recovery is not installed in this database; \
                 run SELECT run_recovery_install(); first (or: run-recovery install DB)"
                .to_string(),
            NoSuchRun { id_column } => format!("no run with {id_column} {run}"),
            NotLive {
                status,
                live_statuses,
            } => {
                let live = live_statuses.join(", ");
                let who = if func == "recover_run" {
                    format!("only runs in {live} can be orphaned")
                } else {
                    format!("only a run in {live} has an executor to stamp it")
                };
                format!("run {run} is not live, found status {}; {who}", quote(status))
            }
            NotObject { kind, text } => format!(
                "metadata of run {run} is a JSON {kind}, not an object; it is left as it is, found {}",
                quote(text)
            ),
            NotJson { text } => format!(
                "metadata of run {run} is not valid JSON; it is left as it is, found {}",
                quote(text)
            ),
            StaleLease { given, found } => format!(
                "stale lease {given} for run {run}, found lease {found}: the run was recovered by \
                 another client, this executor must stop"
            ),
            StepBehind { step, found } => format!(
                "step {step} of run {run} is behind its committed checkpoint, found checkpointStep {found}"
            ),
            ChangedWhileStamped => {
                format!("run {run} changed while it was being stamped; try again")
            }
            StillAlive {
                age_ms,
                threshold_ms,
            } => {
                let when = if *age_ms < 0 {
                    format!(
                        "last heartbeat {} ms in the future (another host's clock?)",
                        age_ms.unsigned_abs()
                    )
                } else {
                    format!("last heartbeat {age_ms} ms ago")
                };
                format!("run {run} is still alive: {when}, threshold {threshold_ms} ms")
            }
            AlreadyRecovered {
                action,
                ago_ms,
                lease,
            } => format!(
                "run {run} was already recovered by another client ({action}, {ago_ms} ms ago); \
                 it now holds lease {lease}"
            ),
            AlreadyDismissed { heartbeat } => format!(
                "run {run} was already dismissed at heartbeat {heartbeat}; it shows again once it heartbeats"
            ),
            TooManyResumes {
                resumes,
                max_resumes,
            } => format!(
                "run {run} was already resumed {resumes} times, found max_resumes {max_resumes}; \
                 mark it as failed instead: SELECT recover_run({run}, 'fail')"
            ),
            LeaseOverflow { lease } => format!(
                "run {run} cannot be recovered: its lease cannot be bumped, found lease {lease}"
            ),
            KeptChanging => {
                format!("run {run} kept changing while it was being recovered; try again")
            }
            BusyInSnapshot => format!(
                "run {run} is being changed by another client, and this statement reads from \
                 an older snapshot (it also reads a table, e.g. orphaned_runs), so it cannot \
                 write; the run was probably already recovered: call recover_run in a \
                 statement of its own to see its state"
            ),
            IntervalTooLong {
                interval_ms,
                stale_after_ms,
            } => format!(
                "interval_ms must be below stale_after_ms ({stale_after_ms}), or the run would look \
                 orphaned between two beats, found {interval_ms}"
            ),
            NeedsFile { found } => format!(
                "a pulse opens its own connection to the database file, so it needs a file \
                 on disk, found {}",
                match found {
                    Some(p) => format!("database {} (not a file on disk)", quote(p)),
                    None => "an in-memory or temporary database".to_string(),
                }
            ),
            NoThread { why } => format!("cannot start the pulse thread ({why})"),
            NoTable { table } => format!(
                "no table {} in the main database (config key 'table')",
                quote(table)
            ),
            NoColumn { table, column, key } => format!(
                "table {} has no column {} (config key '{key}')",
                quote(table),
                quote(column)
            ),
            TrustedSchemaOff { sqlite_version, found } => format!(
                "this connection has PRAGMA trusted_schema=OFF, and SQLite {sqlite_version} does \
                 not let triggers call JSON functions then ({found}); run_recovery's triggers \
                 need them, so every write to the runs table would fail: install and write with \
                 trusted_schema=ON, or use a SQLite that allows it (3.53 does; see \
                 docs/compatibility.md)"
            ),
            InstallChanged {
                table,
                table_exists,
                missing,
                columns_gone,
            } => {
                let mut what = Vec::new();
                if !table_exists {
                    what.push(format!("table {} is gone", quote(table)));
                } else {
                    for (key, col) in columns_gone {
                        what.push(format!(
                            "table {} has no column {} any more (config key '{key}')",
                            quote(table),
                            quote(col)
                        ));
                    }
                }
                if !missing.is_empty() {
                    what.push(format!("missing: {}", missing.join(", ")));
                }
                format!(
                    "the schema changed since run_recovery was installed ({}), so the lease \
                     fence and merge-back are not in force (a migration that rebuilt the table \
                     drops its triggers); run SELECT run_recovery_install() again (with the new \
                     column names in its config if they changed)",
                    what.join("; ")
                )
            }
            SchemaKeptChanging { tries } => format!(
                "the schema changed under each of {tries} tries (another connection is \
                 migrating the database); nothing was written, try again when it is done"
            ),
            BadConfig(p) => p.to_string(),
            StoredConfigUnreadable(p) => {
                return format!("run_recovery internal error: stored config is unreadable ({p})")
            }
        };
        format!("{func}: {problem}")
    }
}

/// What a function's work came to when it did not succeed: a refusal, or an
/// error SQLite raised while running run_recovery's own SQL (busy, I/O, …).
#[derive(Debug)]
pub(crate) enum Failure {
    Refused(Refusal),
    Sql(Error),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Sql(e)
    }
}

impl Failure {
    /// The SQL boundary: the error `func` raises for run `run_id`.
    pub(crate) fn into_sql(self, func: &str, run_id: &str) -> Error {
        match self {
            Failure::Refused(r) => Error::UserFunctionError(r.message(func, run_id).into()),
            Failure::Sql(e) => wrap(func, e),
        }
    }

    /// Whether SQLite answered SQLITE_BUSY or SQLITE_LOCKED (after the busy timeout).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Failure::Sql(e) if is_busy(e))
    }
}

/// Whether `e` is SQLITE_BUSY or SQLITE_LOCKED.
pub(crate) fn is_busy(e: &Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// An argument of SQL function `func` that is not what it must be:
/// `<func>: <expected>, found <value>`.
/// What an SQL function argument must be (the refusals of `args.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected<'a> {
    RunId,
    /// An integer argument named `name`, at least `min`.
    Int {
        name: &'a str,
        min: i64,
    },
    /// Checkpoint state given as text that is not UTF-8.
    StateText,
    /// Checkpoint state given as text that is not valid JSON.
    StateJson,
    /// Checkpoint state of another type (a blob, a non-finite real).
    StateValue,
    /// `orphaned_runs`' hidden `include_dismissed`.
    IncludeDismissed,
    /// The argument of `run_recovery_install`.
    ConfigText,
}

impl Display for Expected<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::RunId => f.write_str("run id must be text or an integer"),
            Expected::Int { name, min } => write!(f, "{name} must be an integer >= {min}"),
            Expected::StateText => f.write_str("state must be JSON text"),
            Expected::StateJson => {
                f.write_str("state must be JSON text (wrap a plain string in json_quote())")
            }
            Expected::StateValue => f.write_str("state must be JSON text, a number or NULL"),
            Expected::IncludeDismissed => f.write_str("include_dismissed must be 0 or 1"),
            Expected::ConfigText => f.write_str("config must be JSON text"),
        }
    }
}

pub(crate) fn bad_argument(func: &str, expected: Expected<'_>, found: ValueRef<'_>) -> Error {
    fail(func, format!("{expected}, found {}", show(found)))
}

/// An error raised by the SQL function (or table-valued function) `func`.
pub(crate) fn fail(func: &str, problem: impl Display) -> Error {
    Error::UserFunctionError(format!("{func}: {problem}").into())
}

/// Renders an SQL value for an error message: `'text'`, `42`, `NULL`, `a blob of 3 bytes`.
pub(crate) fn show(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => format!("{r:?}"),
        ValueRef::Text(t) => quote(&String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// `'text'` with embedded quotes doubled, cut to 80 characters.
pub(crate) fn quote(s: &str) -> String {
    // A NUL cannot travel in an SQLite error message: it would cut it short
    // (rusqlite then reports a bare code), so it is shown as U+FFFD.
    let mut cut: String = s
        .chars()
        .take(80)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect();
    if s.chars().nth(80).is_some() {
        cut.push('…');
    }
    format!("'{}'", cut.replace('\'', "''"))
}

/// Prefixes a SQLite error raised while running our own SQL with the function name,
/// keeping the error code when there is one.
pub(crate) fn wrap(func: &str, e: Error) -> Error {
    match e {
        Error::UserFunctionError(_) | Error::ModuleError(_) => e,
        Error::SqliteFailure(code, msg) => {
            let text = msg.unwrap_or_else(|| code.to_string());
            if text.starts_with(func) || text.starts_with("run_recovery") {
                Error::SqliteFailure(code, Some(text))
            } else {
                Error::SqliteFailure(code, Some(format!("{func}: {text}")))
            }
        }
        other => fail(func, other),
    }
}

/// Why `run_recovery_actions` (the pure-SQL command interface) refuses an
/// action. SQLite 3.40's `RAISE` takes only a literal, so each reason has one
/// fixed text, rendered per action as
/// `run_recovery_actions: <action>: <reason>` by [`ActionRefusal::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionRefusal {
    /// `run_id` is NULL, a real or a blob.
    BadRunId,
    /// `lease` is not an integer >= 1.
    BadLease,
    /// `step` (checkpoint) is missing, not an integer, or negative.
    BadStep,
    /// `state` (checkpoint) is not valid JSON text, a number or NULL.
    BadState,
    /// `threshold_ms` is not an integer >= 0.
    BadThreshold,
    NoSuchRun,
    NotObject,
    NotLive,
    StaleLease,
    StepBehind,
    StillAlive,
    AlreadyRecovered,
    AlreadyDismissed,
    TooManyResumes,
    LeaseOverflow,
}

/// The refusal of an action that is none of the five.
pub const ACTION_UNKNOWN: &str = "run_recovery_actions: unknown action: expected one of \
'heartbeat', 'checkpoint', 'resume', 'fail', 'dismiss'";

impl ActionRefusal {
    /// Every reason, in the order the actions check them.
    pub const ALL: [ActionRefusal; 15] = [
        ActionRefusal::BadRunId,
        ActionRefusal::BadLease,
        ActionRefusal::BadStep,
        ActionRefusal::BadState,
        ActionRefusal::BadThreshold,
        ActionRefusal::NoSuchRun,
        ActionRefusal::NotObject,
        ActionRefusal::NotLive,
        ActionRefusal::StaleLease,
        ActionRefusal::StepBehind,
        ActionRefusal::StillAlive,
        ActionRefusal::AlreadyRecovered,
        ActionRefusal::AlreadyDismissed,
        ActionRefusal::TooManyResumes,
        ActionRefusal::LeaseOverflow,
    ];

    pub fn reason(self) -> &'static str {
        use ActionRefusal::*;
        match self {
            BadRunId => "run_id must be text or an integer",
            BadLease => "lease must be an integer >= 1 (or NULL for no fencing)",
            BadStep => "step must be an integer >= 0 (missing or negative)",
            BadState => "state must be valid JSON text, a number or NULL (wrap a plain string in json_quote())",
            BadThreshold => "threshold_ms must be an integer >= 0 (or NULL for the installed stale_after_ms)",
            NoSuchRun => "no such run",
            NotObject => "metadata is not a JSON object; it is left as it is",
            NotLive => "run is not live: only a run in a live status has an executor",
            StaleLease => "stale lease: the run was recovered by another client, this executor must stop",
            StepBehind => "step is behind the committed checkpoint",
            StillAlive => "run is still alive: its last heartbeat is within the threshold (orphan actions need a stale heartbeat)",
            AlreadyRecovered => "run was already recovered by another client since its last heartbeat",
            AlreadyDismissed => "run was already dismissed at its last heartbeat; it shows again once it heartbeats",
            TooManyResumes => "too many resumes (max_resumes reached): mark it as failed instead (action 'fail')",
            LeaseOverflow => "the run's lease cannot be bumped",
        }
    }

    /// `run_recovery_actions: <action>: <reason>`.
    pub fn message(self, action: &str) -> String {
        format!("run_recovery_actions: {action}: {}", self.reason())
    }
}

pub(crate) fn internal(problem: impl std::fmt::Display) -> Error {
    Error::UserFunctionError(format!("run_recovery internal error: {problem}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_values_like_sql_literals() {
        assert_eq!(show(ValueRef::Null), "NULL");
        assert_eq!(show(ValueRef::Integer(42)), "42");
        assert_eq!(show(ValueRef::Real(1.5)), "1.5");
        assert_eq!(show(ValueRef::Text(b"it's")), "'it''s'");
        assert_eq!(show(ValueRef::Blob(&[1, 2, 3])), "a blob of 3 bytes");
        assert_eq!(show(ValueRef::Text(b"a\0b")), "'a\u{FFFD}b'");
        let long = "x".repeat(100);
        assert!(show(ValueRef::Text(long.as_bytes())).ends_with("…'"));
    }

    #[test]
    fn messages_name_the_function() {
        let e = fail("run_heartbeat", "no run with accession_id '42'");
        assert_eq!(
            e.to_string(),
            "run_heartbeat: no run with accession_id '42'"
        );
        assert!(Refusal::NotInstalled
            .message("recover_run", "r1")
            .starts_with("recover_run: run_recovery is not installed"));
        let r = Refusal::NoSuchRun {
            id_column: "accession_id".into(),
        };
        assert_eq!(
            Failure::from(r)
                .into_sql("run_heartbeat", "it's")
                .to_string(),
            "run_heartbeat: no run with accession_id 'it''s'"
        );
    }

    #[test]
    fn not_live_says_what_live_means_for_the_function() {
        let r = Refusal::NotLive {
            status: "completed".into(),
            live_statuses: vec!["running".into(), "paused".into()],
        };
        assert_eq!(
            r.message("recover_run", "r1"),
            "recover_run: run 'r1' is not live, found status 'completed'; \
             only runs in running, paused can be orphaned"
        );
        assert!(r
            .message("run_heartbeat", "r1")
            .ends_with("only a run in running, paused has an executor to stamp it"));
    }

    #[test]
    fn still_alive_from_a_clock_ahead_never_overflows() {
        let r = Refusal::StillAlive {
            age_ms: i64::MIN,
            threshold_ms: 5,
        };
        assert!(r
            .message("recover_run", "r")
            .contains("last heartbeat 9223372036854775808 ms in the future"));
    }

    #[test]
    fn sql_errors_keep_their_code_and_gain_the_function_name() {
        let busy = Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let f = Failure::from(busy);
        assert!(f.is_busy());
        let e = f.into_sql("run_recovery_config", "");
        assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );
        assert_eq!(e.to_string(), "run_recovery_config: database is locked");
    }
}
