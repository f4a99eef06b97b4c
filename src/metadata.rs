//! The recovery state inside a run's metadata JSON, and the pure decisions
//! made on it: is the run orphaned, what a recovery writes (no SQLite here).
//!
//! Keys (top level of the metadata object): `lastHeartbeat`, `checkpointStep`,
//! `checkpointState`, `lease`, `resumes`, `dismissedHeartbeat`, `recoveryLog`.
//! Every other key belongs to the app and is carried through untouched, in
//! its order (serde_json's `preserve_order`).

use serde_json::{json, Map, Value};

use crate::config::{in_case_of, is_terminal, Config};
use crate::errors::quote;

pub type Object = Map<String, Value>;

/// Parses the metadata column. NULL is an empty object; anything that is not
/// a JSON object is refused, never overwritten.
pub fn parse(func: &str, run_id: &str, text: Option<&str>) -> Result<Object, String> {
    let Some(text) = text else {
        return Ok(Object::new());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "{func}: metadata of run {} is a JSON {}, not an object; it is left as it is, found {}",
            quote(run_id),
            kind(&other),
            quote(text)
        )),
        Err(_) => Err(format!(
            "{func}: metadata of run {} is not valid JSON; it is left as it is, found {}",
            quote(run_id),
            quote(text)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The integer SQLite's `CAST(json_extract(m, '$.key') AS INTEGER)` gives.
pub fn sql_int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Null => None,
        Value::Bool(b) => Some(*b as i64),
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim_start();
            let (sign, digits) = match s.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, s.strip_prefix('+').unwrap_or(s)),
            };
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            Some(digits[..end].parse::<i64>().map(|d| sign * d).unwrap_or(0))
        }
        Value::Array(_) | Value::Object(_) => Some(0),
    }
}

/// The recovery state read from a metadata object.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub last_heartbeat: Option<i64>,
    pub lease: i64,
    pub resumes: i64,
    pub checkpoint_step: Option<i64>,
    pub checkpoint_state: Value,
    pub dismissed_heartbeat: Option<i64>,
}

impl State {
    pub fn of(m: &Object) -> State {
        State {
            last_heartbeat: sql_int(m.get("lastHeartbeat")),
            lease: sql_int(m.get("lease")).unwrap_or(1),
            resumes: sql_int(m.get("resumes")).unwrap_or(0),
            checkpoint_step: sql_int(m.get("checkpointStep")),
            checkpoint_state: m.get("checkpointState").cloned().unwrap_or(Value::Null),
            dismissed_heartbeat: sql_int(m.get("dismissedHeartbeat")),
        }
    }

    pub fn dismissed(&self) -> bool {
        self.dismissed_heartbeat.is_some()
            && self.dismissed_heartbeat == Some(self.last_heartbeat.unwrap_or(0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Resume,
    Fail,
    Dismiss,
}

impl Action {
    pub const NAMES: &'static str = "'resume', 'fail', 'dismiss'";

    pub fn parse(s: &str) -> Option<Action> {
        match s.to_ascii_lowercase().as_str() {
            "resume" => Some(Action::Resume),
            "fail" => Some(Action::Fail),
            "dismiss" => Some(Action::Dismiss),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Resume => "resume",
            Action::Fail => "fail",
            Action::Dismiss => "dismiss",
        }
    }
}

/// A recovery decided on a row: the new status and metadata, and the result.
#[derive(Debug)]
pub struct Decision {
    pub status: String,
    pub metadata: Object,
    pub outcome: Value,
}

/// Decides `action` on a run read as (`status`, `m`) at `now`, or says why not.
/// This is the compare half of recover_run's compare-and-set.
pub fn decide(
    cfg: &Config,
    run_id: &str,
    status: &str,
    m: &Object,
    action: Action,
    threshold_ms: i64,
    now: i64,
) -> Result<Decision, String> {
    let f = "recover_run";
    let st = State::of(m);
    let last_record = m
        .get("recoveryLog")
        .and_then(Value::as_array)
        .and_then(|log| log.last());
    let recovered_since_heartbeat = last_record.is_some_and(|r| {
        let at = sql_int(r.get("at")).unwrap_or(i64::MIN);
        let action = r.get("action").and_then(Value::as_str).unwrap_or("");
        // No sign of life since: no newer heartbeat and no new checkpoint
        // (a checkpoint in the same millisecond as the recovery is progress).
        action != "dismiss"
            && at >= st.last_heartbeat.unwrap_or(0)
            && sql_int(r.get("checkpointStep")) == st.checkpoint_step
    });
    if !cfg.is_live(status) {
        if recovered_since_heartbeat && is_terminal(status) {
            return Err(already(run_id, last_record, now, &st));
        }
        return Err(format!(
            "{f}: run {} is not live, found status {}; only runs in {} can be orphaned",
            quote(run_id),
            quote(status),
            cfg.live_statuses.join(", ")
        ));
    }
    let age = now.saturating_sub(st.last_heartbeat.unwrap_or(0));
    if age <= threshold_ms {
        if recovered_since_heartbeat {
            return Err(already(run_id, last_record, now, &st));
        }
        let when = if age < 0 {
            format!(
                "last heartbeat {} ms in the future (another host's clock?)",
                -age
            )
        } else {
            format!("last heartbeat {age} ms ago")
        };
        return Err(format!(
            "{f}: run {} is still alive: {when}, threshold {threshold_ms} ms",
            quote(run_id)
        ));
    }
    // Resume and fail take the run away from its executor: the lease goes up.
    let bumped = || {
        st.lease.checked_add(1).ok_or_else(|| {
            format!(
                "{f}: run {} cannot be recovered: its lease cannot be bumped, found lease {}",
                quote(run_id),
                st.lease
            )
        })
    };
    let mut out = m.clone();
    let mut new_status = status.to_string();
    let mut lease_after = st.lease;
    match action {
        Action::Resume => {
            if st.resumes >= cfg.max_resumes {
                return Err(format!(
                    "{f}: run {} was already resumed {} times, found max_resumes {}; \
                     mark it as failed instead: SELECT recover_run({}, 'fail')",
                    quote(run_id),
                    st.resumes,
                    cfg.max_resumes,
                    quote(run_id)
                ));
            }
            lease_after = bumped()?;
            out.insert(
                "lastHeartbeat".into(),
                json!(now.max(st.last_heartbeat.unwrap_or(0))),
            );
            out.insert("lease".into(), json!(lease_after));
            out.insert("resumes".into(), json!(st.resumes.saturating_add(1)));
        }
        Action::Fail => {
            lease_after = bumped()?;
            new_status = in_case_of(status, "failed");
            out.insert("lease".into(), json!(lease_after));
        }
        Action::Dismiss => {
            if st.dismissed() {
                return Err(format!(
                    "{f}: run {} was already dismissed at heartbeat {}; it shows again once it heartbeats",
                    quote(run_id),
                    st.last_heartbeat.unwrap_or(0)
                ));
            }
            out.insert(
                "dismissedHeartbeat".into(),
                json!(st.last_heartbeat.unwrap_or(0)),
            );
        }
    }
    let record = json!({
        "action": action.name(),
        "at": now,
        "from": status,
        "to": new_status,
        "lastHeartbeat": st.last_heartbeat,
        "checkpointStep": st.checkpoint_step,
        "leaseBefore": st.lease,
        "leaseAfter": lease_after,
    });
    match out.get_mut("recoveryLog") {
        Some(Value::Array(log)) => log.push(record),
        _ => {
            out.insert("recoveryLog".into(), Value::Array(vec![record]));
        }
    }
    let after = State::of(&out);
    let outcome = json!({
        "run_id": run_id,
        "action": action.name(),
        "status": new_status,
        "previous_status": status,
        "lease": after.lease,
        "resumes": after.resumes,
        "last_heartbeat": after.last_heartbeat,
        "age_ms": age,
        "checkpoint_step": st.checkpoint_step,
        "checkpoint_state": st.checkpoint_state,
    });
    Ok(Decision {
        status: new_status,
        metadata: out,
        outcome,
    })
}

fn already(run_id: &str, record: Option<&Value>, now: i64, st: &State) -> String {
    let action = record
        .and_then(|r| r.get("action"))
        .and_then(Value::as_str)
        .unwrap_or("recover");
    let at = record.and_then(|r| sql_int(r.get("at"))).unwrap_or(now);
    format!(
        "recover_run: run {} was already recovered by another client ({action}, {} ms ago); it now holds lease {}",
        quote(run_id),
        (now - at).max(0),
        st.lease
    )
}

/// The ISO-8601 UTC text of a Unix epoch millisecond (`2026-11-24T05:28:54.123Z`).
pub fn iso8601(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Object {
        parse("t", "r", Some(s)).unwrap()
    }

    #[test]
    fn parse_refuses_what_is_not_an_object() {
        assert!(parse("f", "r", None).unwrap().is_empty());
        let e = parse("run_heartbeat", "r1", Some("[1,2]")).unwrap_err();
        assert!(
            e.contains("is a JSON array") && e.contains("found '[1,2]'"),
            "{e}"
        );
        let e = parse("run_heartbeat", "r1", Some("{oops")).unwrap_err();
        assert!(e.contains("not valid JSON") && e.contains("'{oops'"), "{e}");
    }

    #[test]
    fn sql_int_reads_like_sqlite_cast() {
        assert_eq!(sql_int(Some(&json!(5))), Some(5));
        assert_eq!(sql_int(Some(&json!(5.9))), Some(5));
        assert_eq!(sql_int(Some(&json!("12ab"))), Some(12));
        assert_eq!(sql_int(Some(&json!("x"))), Some(0));
        assert_eq!(sql_int(Some(&json!(null))), None);
        assert_eq!(sql_int(None), None);
    }

    #[test]
    fn resume_bumps_lease_and_keeps_app_keys_in_order() {
        let m = obj(
            r#"{"z":1,"a":2,"lastHeartbeat":1000,"checkpointStep":4,"checkpointState":{"w":7}}"#,
        );
        let d = decide(
            &Config::default(),
            "r",
            "RUNNING",
            &m,
            Action::Resume,
            30_000,
            100_000,
        )
        .unwrap();
        assert_eq!(d.status, "RUNNING");
        let keys: Vec<_> = d.metadata.keys().cloned().collect();
        assert_eq!(&keys[..2], &["z", "a"]);
        assert_eq!(d.metadata["lease"], 2);
        assert_eq!(d.metadata["resumes"], 1);
        assert_eq!(d.metadata["lastHeartbeat"], 100_000);
        assert_eq!(d.outcome["checkpoint_step"], 4);
        assert_eq!(d.outcome["checkpoint_state"], json!({"w":7}));
        assert_eq!(d.metadata["recoveryLog"][0]["leaseAfter"], 2);
    }

    #[test]
    fn fail_writes_failed_in_the_rows_case() {
        let m = obj(r#"{"lastHeartbeat":1}"#);
        let d = decide(&Config::default(), "r", "Paused", &m, Action::Fail, 10, 100).unwrap();
        assert_eq!(d.status, "Failed");
        assert_eq!(d.metadata["lease"], 2);
    }

    #[test]
    fn extreme_values_are_refused_or_handled_without_overflow() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1,"lease":9223372036854775807}"#);
        let e = decide(&cfg, "r", "running", &m, Action::Resume, 30, 100).unwrap_err();
        assert!(
            e.contains("lease cannot be bumped, found lease 9223372036854775807"),
            "{e}"
        );
        let m = obj(r#"{"lastHeartbeat":-9223372036854775808}"#);
        let d = decide(&cfg, "r", "running", &m, Action::Fail, 30, 100).unwrap();
        assert_eq!(d.status, "failed");
    }

    #[test]
    fn a_checkpoint_in_the_same_millisecond_as_a_resume_is_life() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1,"checkpointStep":2}"#);
        let mut after = decide(&cfg, "r", "running", &m, Action::Resume, 30, 100)
            .unwrap()
            .metadata;
        after.insert("checkpointStep".into(), json!(3));
        let e = decide(&cfg, "r", "running", &after, Action::Resume, 30, 100).unwrap_err();
        assert!(e.contains("still alive"), "{e}");
    }

    #[test]
    fn refusals_say_why() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":90}"#);
        let e = decide(&cfg, "r", "running", &m, Action::Fail, 30, 100).unwrap_err();
        assert!(e.contains("still alive: last heartbeat 10 ms ago"), "{e}");
        let ahead = obj(r#"{"lastHeartbeat":150}"#);
        let e = decide(&cfg, "r", "running", &ahead, Action::Fail, 30, 100).unwrap_err();
        assert!(e.contains("last heartbeat 50 ms in the future"), "{e}");
        let e = decide(&cfg, "r", "completed", &m, Action::Fail, 30, 100).unwrap_err();
        assert!(e.contains("not live, found status 'completed'"), "{e}");
        let m = obj(r#"{"lastHeartbeat":1,"resumes":3}"#);
        let e = decide(&cfg, "r", "running", &m, Action::Resume, 30, 100).unwrap_err();
        assert!(e.contains("max_resumes 3") && e.contains("'fail'"), "{e}");
    }

    #[test]
    fn a_second_resume_is_told_it_lost_the_race() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1}"#);
        let first = decide(&cfg, "r", "running", &m, Action::Resume, 30, 100).unwrap();
        let e = decide(
            &cfg,
            "r",
            "running",
            &first.metadata,
            Action::Resume,
            30,
            105,
        )
        .unwrap_err();
        assert!(
            e.contains("already recovered by another client (resume, 5 ms ago)"),
            "{e}"
        );
        let failed = decide(&cfg, "r", "running", &m, Action::Fail, 30, 100).unwrap();
        let e = decide(
            &cfg,
            "r",
            &failed.status,
            &failed.metadata,
            Action::Resume,
            30,
            105,
        )
        .unwrap_err();
        assert!(
            e.contains("already recovered by another client (fail"),
            "{e}"
        );
    }

    #[test]
    fn dismiss_hides_until_the_next_heartbeat() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1}"#);
        let d = decide(&cfg, "r", "running", &m, Action::Dismiss, 30, 100).unwrap();
        assert!(State::of(&d.metadata).dismissed());
        assert_eq!(d.metadata.get("lease"), None, "dismiss takes nothing away");
        let e = decide(&cfg, "r", "running", &d.metadata, Action::Dismiss, 30, 100).unwrap_err();
        assert!(e.contains("already dismissed"), "{e}");
        let mut beat = d.metadata.clone();
        beat.insert("lastHeartbeat".into(), json!(2));
        assert!(!State::of(&beat).dismissed());
    }

    #[test]
    fn iso8601_is_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
