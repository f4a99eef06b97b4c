//! Every error message run_recovery produces, in one place and one format:
//! `<function>: <problem>, found <value>` (or `<function>: <problem>` where
//! there is no single value), and `run_recovery internal error: …` for
//! broken invariants.

use rusqlite::types::ValueRef;
use rusqlite::Error;

/// An error raised by the SQL function (or table-valued function) `func`.
pub fn fail(func: &str, problem: impl std::fmt::Display) -> Error {
    Error::UserFunctionError(format!("{func}: {problem}").into())
}

/// The error of a function called on a database without install.
pub fn not_installed(func: &str) -> Error {
    fail(
        func,
        "run_recovery is not installed in this database; \
         run SELECT run_recovery_install(); first (or: run-recovery install DB)",
    )
}

/// Renders an SQL value for an error message: `'text'`, `42`, `NULL`, `a blob of 3 bytes`.
pub fn show(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => format!("{r:?}"),
        ValueRef::Text(t) => quote(&String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// `'text'` with embedded quotes doubled, cut to 80 characters.
pub fn quote(s: &str) -> String {
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
pub fn wrap(func: &str, e: Error) -> Error {
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

pub fn internal(problem: impl std::fmt::Display) -> Error {
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
        assert!(not_installed("recover_run")
            .to_string()
            .starts_with("recover_run: run_recovery is not installed"));
    }
}
