//! The pure-SQL command interface (pure logic: SQL text only).
//!
//! * `run_recovery_actions`: a view with no rows whose `INSTEAD OF INSERT`
//!   triggers perform one action per inserted row:
//!   `INSERT INTO run_recovery_actions (run_id, action, lease, step, state, threshold_ms)`.
//!   The decisions are those of `run_heartbeat`, `run_checkpoint` and
//!   `recover_run` (see [`crate::metadata::decide`]); the differential test
//!   `tests/prop_actions.rs` keeps the two equal.
//! * `run_recovery_runs`: one row per run with its recovery state, served by
//!   the primary key when filtered by `run_id`.
//!
//! Each action has a trigger of its own, `run_recovery_act_<action>`, `WHEN
//! lower(NEW.action) = '<action>'`, and `run_recovery_act_unknown` refuses
//! any other action. How one action runs (its trigger's body, in order):
//! 1. one `SELECT CASE … END` checks the arguments and RAISEs on the first bad one;
//! 2. one `UPDATE … WHERE id = NEW.run_id` whose `SET` is a `CASE` that
//!    RAISEs the first precondition the row fails (in the order the
//!    functions check them) and otherwise computes the new metadata;
//! 3. a `SELECT` that RAISEs "no such run" when `changes()` is 0 and
//!    otherwise `RAISE(IGNORE)`s: the action is done, and the row's other
//!    triggers are skipped (its write is kept; an `INSERT … SELECT` goes on
//!    with its next row).
//!
//! Why a trigger per action: SQLite gives a trigger program one frame of
//! registers for all its statements and clears it on every entry, and it
//! enters a trigger before testing its `WHEN`. One trigger for the five
//! actions cleared 513 registers (29 kB) for every heartbeat. SQLite fires a
//! view's `INSTEAD OF` triggers newest first, so they are created in the
//! reverse order of how often they run: a heartbeat enters only its own
//! trigger, and its `RAISE(IGNORE)` means no other is entered. That order
//! is speed only: each trigger acts only on its own action, so any order
//! gives the same result.
//!
//! A RAISE(ABORT) undoes the whole INSERT, so a refused action changes nothing.
//! Time is the database's clock: `NOW_MS` is the same value for every use
//! within one statement (SQLite fixes 'now' per statement).

use super::{
    checkpointed, ident, int_at, literal, live_test, names, run_fields, with_heartbeat_last,
    writable, Names, NOW_MS,
};
use crate::config::{in_case_of, spellings, Config, TERMINAL_STATUSES};
use crate::errors::{ActionRefusal, ACTION_UNKNOWN};
use crate::metadata::key::{
    CHECKPOINT_STEP, DISMISSED_HEARTBEAT_PATH, LAST_HEARTBEAT, LAST_HEARTBEAT_PATH, LEASE,
    LEASE_PATH, RECOVERY_LOG_PATH, RESUMES, RESUMES_PATH,
};

pub const ACTIONS_VIEW: &str = "run_recovery_actions";
pub const RUNS_VIEW: &str = "run_recovery_runs";
/// The five actions, in the order the trigger handles them.
pub const ACTIONS: [&str; 5] = ["heartbeat", "checkpoint", "resume", "fail", "dismiss"];

/// `RAISE(ABORT, 'run_recovery_actions: <action>: <reason>')`.
fn raise(action: &str, why: ActionRefusal) -> String {
    format!("RAISE(ABORT, {})", literal(&why.message(action)))
}

const ACTION: &str = "lower(NEW.action)";

/// The trigger refusing an action that is none of [`ACTIONS`] (NULL too).
const UNKNOWN_TRIGGER: &str = "run_recovery_act_unknown";

/// The trigger performing `action`.
fn action_trigger_name(action: &str) -> String {
    format!("run_recovery_act_{action}")
}

/// Every trigger on [`ACTIONS_VIEW`], by name.
pub fn trigger_names() -> Vec<String> {
    std::iter::once(UNKNOWN_TRIGGER.to_owned())
        .chain(ACTIONS.iter().map(|a| action_trigger_name(a)))
        .collect()
}

/// The `CREATE` statements of the two views and the triggers: the unknown
/// action's first, then the actions' from the rarest to the heartbeat, so
/// SQLite (newest first) enters the heartbeat's first (see the module doc).
pub fn create_statements(cfg: &Config) -> Vec<String> {
    let mut out = vec![
        format!(
            "CREATE VIEW {ACTIONS_VIEW} AS SELECT NULL AS run_id, NULL AS action, NULL AS lease, \
NULL AS step, NULL AS state, NULL AS threshold_ms WHERE 0"
        ),
        unknown_action_trigger(),
    ];
    let n = names(cfg);
    for action in ACTIONS.iter().rev() {
        out.push(action_trigger(cfg, &n, action));
    }
    out.push(runs_view(cfg));
    out
}

fn unknown_action_trigger() -> String {
    format!(
        "CREATE TRIGGER {UNKNOWN_TRIGGER} INSTEAD OF INSERT ON {ACTIONS_VIEW}\n\
WHEN NOT coalesce({ACTION} IN ({}), 0)\nBEGIN\n  SELECT RAISE(ABORT, {});\nEND",
        ACTIONS.map(literal).join(", "),
        literal(ACTION_UNKNOWN)
    )
}

fn action_trigger(cfg: &Config, n: &Names, action: &str) -> String {
    let update = match action {
        "heartbeat" | "checkpoint" => stamp_update(cfg, n, action),
        _ => recover_update(cfg, n, action),
    };
    format!(
        "CREATE TRIGGER {} INSTEAD OF INSERT ON {ACTIONS_VIEW}\nWHEN {ACTION} = '{action}'\nBEGIN\n{}\n{update}\n{}\nEND",
        action_trigger_name(action),
        argument_checks(action),
        no_such_run(action)
    )
}

/// After the action's UPDATE: no row changed means no such run; otherwise
/// the action is done and `RAISE(IGNORE)` skips the row's other triggers,
/// keeping what was written.
fn no_such_run(action: &str) -> String {
    format!(
        "  SELECT CASE WHEN changes() = 0 THEN {} ELSE RAISE(IGNORE) END;",
        raise(action, ActionRefusal::NoSuchRun)
    )
}

/// Step 1: `action`'s arguments, in the order the functions check theirs.
fn argument_checks(action: &str) -> String {
    let id_ok = "CASE typeof(NEW.run_id) WHEN 'text' THEN 1 WHEN 'integer' THEN 1 ELSE 0 END";
    let lease_ok = "(NEW.lease IS NULL OR (typeof(NEW.lease) = 'integer' AND NEW.lease >= 1))";
    let step_ok = "(typeof(NEW.step) = 'integer' AND NEW.step >= 0)";
    let state_ok = "CASE typeof(NEW.state) WHEN 'null' THEN 1 WHEN 'integer' THEN 1 \
WHEN 'real' THEN abs(NEW.state) < 9e999 WHEN 'text' THEN json_valid(NEW.state) ELSE 0 END";
    let threshold_ok =
        "(NEW.threshold_ms IS NULL OR (typeof(NEW.threshold_ms) = 'integer' AND NEW.threshold_ms >= 0))";
    use ActionRefusal::*;
    let list: &[(&str, ActionRefusal)] = match action {
        "heartbeat" => &[(id_ok, BadRunId), (lease_ok, BadLease)],
        "checkpoint" => &[
            (id_ok, BadRunId),
            (step_ok, BadStep),
            (state_ok, BadState),
            (lease_ok, BadLease),
        ],
        _ => &[(id_ok, BadRunId), (threshold_ok, BadThreshold)],
    };
    let whens: String = list
        .iter()
        .map(|(ok, why)| format!(" WHEN NOT {ok} THEN {}", raise(action, *why)))
        .collect();
    format!("  SELECT CASE{whens} END;")
}

/// Step 2 for heartbeat and checkpoint: the row's preconditions in the order
/// of `run_heartbeat`/`run_checkpoint` (not live, not an object, stale lease,
/// step behind), then the stamp. The heartbeat never moves backwards.
fn stamp_update(cfg: &Config, n: &Names, action: &str) -> String {
    let Names {
        table,
        id,
        status,
        meta,
    } = n;
    use ActionRefusal::*;
    let hb = int_at(meta, LAST_HEARTBEAT);
    let mut cases = vec![
        format!(
            "WHEN NOT {} THEN {}",
            live_test(cfg, status),
            raise(action, NotLive)
        ),
        format!(
            "WHEN NOT {} THEN {}",
            writable(meta),
            raise(action, NotObject)
        ),
        format!(
            "WHEN NEW.lease IS NOT NULL AND coalesce({}, 1) <> NEW.lease THEN {}",
            int_at(meta, LEASE),
            raise(action, StaleLease)
        ),
    ];
    let beat = super::stamped_heartbeat(NOW_MS, &hb, cfg.stale_after_ms);
    let mut new_meta = with_heartbeat_last(meta, &beat);
    if action == "checkpoint" {
        cases.push(format!(
            "WHEN coalesce({}, -1) > NEW.step THEN {}",
            int_at(meta, CHECKPOINT_STEP),
            raise(action, StepBehind)
        ));
        new_meta = checkpointed(meta, &beat, "NEW.step", "NEW.state");
    }
    format!(
        "  UPDATE {table} SET {meta} = CASE\n    {}\n    ELSE {new_meta}\n  END\n  WHERE {id} = NEW.run_id;",
        cases.join("\n    ")
    )
}

/// Step 2 for resume, fail and dismiss: [`crate::metadata::decide`] in SQL.
fn recover_update(cfg: &Config, n: &Names, action: &str) -> String {
    let Names {
        table,
        id,
        status,
        meta,
    } = n;
    use ActionRefusal::*;
    let hb = int_at(meta, LAST_HEARTBEAT);
    let step = int_at(meta, CHECKPOINT_STEP);
    let lease = format!("coalesce({}, 1)", int_at(meta, LEASE));
    let resumes = format!("coalesce({}, 0)", int_at(meta, RESUMES));
    let last = |key: &str| format!("json_extract({meta}, '$.recoveryLog[#-1].{key}')");
    // No sign of life since the last recovery (not a dismiss): no newer
    // heartbeat and no new checkpoint.
    let recovered = format!(
        "(coalesce(json_array_length({meta}, {RECOVERY_LOG_PATH}), 0) > 0 \
AND {} IS NOT 'dismiss' \
AND coalesce(CAST({} AS INTEGER), -9223372036854775808) >= coalesce({hb}, 0) \
AND CAST({} AS INTEGER) IS {step})",
        last("action"),
        last("at"),
        last(CHECKPOINT_STEP),
    );
    let terminal = format!(
        "lower({status}) IN ({})",
        TERMINAL_STATUSES.map(literal).join(", ")
    );
    let threshold = format!("coalesce(NEW.threshold_ms, {})", cfg.stale_after_ms);
    let mut cases = vec![
        format!("WHEN NOT {} THEN {}", writable(meta), raise(action, NotObject)),
        format!(
            "WHEN NOT {} THEN CASE WHEN {recovered} AND {terminal} THEN {} ELSE {} END",
            live_test(cfg, status),
            raise(action, AlreadyRecovered),
            raise(action, NotLive)
        ),
        format!(
            "WHEN {NOW_MS} - coalesce({hb}, 0) <= {threshold} AND coalesce({hb}, 0) <= {NOW_MS} + {} THEN CASE WHEN {recovered} THEN {} ELSE {} END",
            cfg.stale_after_ms,
            raise(action, AlreadyRecovered),
            raise(action, StillAlive)
        ),
    ];
    let base = format!("coalesce({meta}, '{{}}')");
    let bumped = format!("{lease} + 1");
    let (new_meta, new_status, lease_after) = match action {
        "resume" => {
            cases.push(format!(
                "WHEN {resumes} >= {} THEN {}",
                cfg.max_resumes,
                raise(action, TooManyResumes)
            ));
            cases.push(format!(
                "WHEN {lease} >= 9223372036854775807 THEN {}",
                raise(action, LeaseOverflow)
            ));
            (
                format!(
                    "json_set({base}, {LAST_HEARTBEAT_PATH}, {}, \
{LEASE_PATH}, {bumped}, {RESUMES_PATH}, {resumes} + 1)",
                    super::stamped_heartbeat(NOW_MS, &hb, cfg.stale_after_ms)
                ),
                status.to_string(),
                bumped.clone(),
            )
        }
        "fail" => {
            cases.push(format!(
                "WHEN {lease} >= 9223372036854775807 THEN {}",
                raise(action, LeaseOverflow)
            ));
            (
                format!("json_set({base}, {LEASE_PATH}, {bumped})"),
                failed_status(cfg, status),
                bumped.clone(),
            )
        }
        _ => {
            cases.push(format!(
                "WHEN CAST(json_extract({meta}, {DISMISSED_HEARTBEAT_PATH}) AS INTEGER) = coalesce({hb}, 0) THEN {}",
                raise(action, AlreadyDismissed)
            ));
            (
                format!("json_set({base}, {DISMISSED_HEARTBEAT_PATH}, coalesce({hb}, 0))"),
                status.to_string(),
                lease.clone(),
            )
        }
    };
    let record = format!(
        "json_object('action', '{action}', 'at', {NOW_MS}, 'from', {status}, 'to', {new_status}, \
'lastHeartbeat', {hb}, 'checkpointStep', {step}, 'leaseBefore', {lease}, 'leaseAfter', {lease_after})"
    );
    let with_log = format!(
        "CASE WHEN json_type({meta}, {RECOVERY_LOG_PATH}) = 'array' \
THEN json_insert({new_meta}, '$.recoveryLog[#]', json({record})) \
ELSE json_set({new_meta}, {RECOVERY_LOG_PATH}, json_array(json({record}))) END"
    );
    let mut sets = format!(
        "{meta} = CASE\n    {}\n    ELSE {with_log}\n  END",
        cases.join("\n    ")
    );
    if action == "fail" {
        sets.push_str(&format!(", {status} = {new_status}"));
        for col in [&cfg.end_time_column, &cfg.updated_at_column]
            .into_iter()
            .flatten()
        {
            sets.push_str(&format!(
                ", {} = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                ident(col)
            ));
        }
    }
    format!("  UPDATE {table} SET {sets}\n  WHERE {id} = NEW.run_id;")
}

/// `failed` in the case of the row's status (`RUNNING` → `FAILED`), for each
/// spelling of a live status; as [`in_case_of`].
fn failed_status(cfg: &Config, status: &str) -> String {
    let whens: String = cfg
        .live_statuses
        .iter()
        .flat_map(|s| spellings(s))
        .map(|s| {
            format!(
                " WHEN {} THEN {}",
                literal(&s),
                literal(&in_case_of(&s, "failed"))
            )
        })
        .collect();
    format!("CASE {status}{whens} ELSE {status} END")
}

/// `run_recovery_runs`: the recovery state of every run. Filtered by `run_id`
/// it is one primary-key lookup (the inner SELECT is flattened into the
/// caller's query). Fields of metadata that is not valid JSON are NULL.
fn runs_view(cfg: &Config) -> String {
    let n = names(cfg);
    format!(
        "CREATE VIEW {RUNS_VIEW} AS
SELECT run_id, name, status, live, last_heartbeat,
       {NOW_MS} - last_heartbeat AS age_ms,
       checkpoint_step, checkpoint_state, lease, resumes,
       coalesce(dismissed_at = coalesce(last_heartbeat, 0), 0) AS dismissed
FROM (SELECT {}, {} AS live
      FROM {})",
        run_fields(cfg, &n),
        live_test(cfg, &n.status),
        n.table,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_literal_naming_the_action() {
        let sql = create_statements(&Config::default()).join("\n");
        for action in ACTIONS {
            assert!(
                sql.contains(&format!("'run_recovery_actions: {action}: no such run'")),
                "{action}"
            );
        }
        assert!(sql.contains("'run_recovery_actions: resume: too many resumes"));
        assert!(sql.contains("'run_recovery_actions: heartbeat: stale lease"));
        assert!(!sql.contains("RAISE(ABORT, '') "));
    }

    #[test]
    fn max_resumes_and_threshold_come_from_the_config() {
        let cfg = Config {
            max_resumes: 7,
            stale_after_ms: 1234,
            ..Config::default()
        };
        let sql = create_statements(&cfg).join("\n");
        assert!(sql.contains(">= 7 THEN RAISE"), "{sql}");
        assert!(sql.contains("coalesce(NEW.threshold_ms, 1234)"));
    }

    #[test]
    fn fail_writes_failed_in_each_spelling() {
        let sql = failed_status(&Config::default(), "\"status\"");
        assert!(sql.contains("WHEN 'RUNNING' THEN 'FAILED'"));
        assert!(sql.contains("WHEN 'Paused' THEN 'Failed'"));
        assert!(sql.contains("WHEN 'requires_intervention' THEN 'failed'"));
    }
}
