//! The recovery state inside a run's metadata JSON, and the pure decisions
//! made on it: is the run orphaned, what a recovery writes (no SQLite here).
//!
//! Keys (top level of the metadata object): `lastHeartbeat`, `checkpointStep`,
//! `checkpointState`, `lease`, `resumes`, `dismissedHeartbeat`, `recoveryLog`.
//! Every other key belongs to the app and is carried through untouched, in
//! its order (serde_json's `preserve_order`).

use serde_json::{json, Map, Value};

use crate::config::{in_case_of, is_terminal, Config};
use crate::errors::Refusal;

/// The recovery keys of the metadata object, the one place their names are
/// spelled in Rust.
pub(crate) mod key {
    pub const LAST_HEARTBEAT: &str = "lastHeartbeat";
    pub const CHECKPOINT_STEP: &str = "checkpointStep";
    pub const CHECKPOINT_STATE: &str = "checkpointState";
    pub const LEASE: &str = "lease";
    pub const RESUMES: &str = "resumes";
    pub const DISMISSED_HEARTBEAT: &str = "dismissedHeartbeat";
    pub const RECOVERY_LOG: &str = "recoveryLog";
    /// Bumped by every checkpoint the extension or the actions write: a
    /// plain write that carries an older value is a stale copy, and cannot
    /// replace the checkpoint (see the lease guard in `sqlgen`).
    pub const CHECKPOINT_REV: &str = "checkpointRev";

    /// The same keys as SQL JSON paths, quoted (`'$.lastHeartbeat'`), for the generated SQL.
    pub const LAST_HEARTBEAT_PATH: &str = "'$.lastHeartbeat'";
    pub const CHECKPOINT_STEP_PATH: &str = "'$.checkpointStep'";
    pub const CHECKPOINT_STATE_PATH: &str = "'$.checkpointState'";
    pub const LEASE_PATH: &str = "'$.lease'";
    pub const RESUMES_PATH: &str = "'$.resumes'";
    pub const DISMISSED_HEARTBEAT_PATH: &str = "'$.dismissedHeartbeat'";
    pub const RECOVERY_LOG_PATH: &str = "'$.recoveryLog'";
    pub const CHECKPOINT_REV_PATH: &str = "'$.checkpointRev'";
}

pub type Object = Map<String, Value>;

/// Parses the metadata column. NULL is an empty object; anything that is not
/// a JSON object is refused, never overwritten.
pub(crate) fn parse(text: Option<&str>) -> Result<Object, Refusal> {
    let Some(text) = text else {
        return Ok(Object::new());
    };
    // An object keeps the first of duplicate keys, as SQLite's JSON
    // functions (and so the triggers) read them; serde_json keeps the last.
    if let Ok(FirstOfEachKey(m)) = serde_json::from_str(text) {
        return Ok(m);
    }
    // Not an object: read again only to say what it is.
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Refusal::NotObject {
            kind: kind(&other),
            text: text.to_string(),
        }),
        Err(_) => Err(Refusal::NotJson {
            text: text.to_string(),
        }),
    }
}

/// A JSON object read keeping the first value of a key that appears twice.
struct FirstOfEachKey(Object);

impl<'de> serde::Deserialize<'de> for FirstOfEachKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = FirstOfEachKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut m = Object::new();
                while let Some(k) = a.next_key::<String>()? {
                    let v: Value = a.next_value()?;
                    m.entry(k).or_insert(v);
                }
                Ok(FirstOfEachKey(m))
            }
        }
        d.deserialize_map(Visit)
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
            last_heartbeat: sql_int(m.get(key::LAST_HEARTBEAT)),
            lease: sql_int(m.get(key::LEASE)).unwrap_or(1),
            resumes: sql_int(m.get(key::RESUMES)).unwrap_or(0),
            checkpoint_step: sql_int(m.get(key::CHECKPOINT_STEP)),
            checkpoint_state: m.get(key::CHECKPOINT_STATE).cloned().unwrap_or(Value::Null),
            dismissed_heartbeat: sql_int(m.get(key::DISMISSED_HEARTBEAT)),
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

/// A run as read from its row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run<'a> {
    pub id: &'a str,
    pub status: &'a str,
    pub metadata: &'a Object,
}

/// A recovery asked for: what, with which threshold, at what time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub action: Action,
    pub threshold_ms: i64,
    pub now: i64,
}

/// Decides `req` on `run`, or says why not. This is the compare half of
/// recover_run's compare-and-set.
pub(crate) fn decide(cfg: &Config, run: Run<'_>, req: Request) -> Result<Decision, Refusal> {
    let Request {
        action,
        threshold_ms,
        now,
    } = req;
    let (status, m) = (run.status, run.metadata);
    let st = State::of(m);
    let last_record = m
        .get(key::RECOVERY_LOG)
        .and_then(Value::as_array)
        .and_then(|log| log.last());
    let recovered_since_heartbeat = last_record.is_some_and(|r| {
        let at = sql_int(r.get("at")).unwrap_or(i64::MIN);
        let action = r.get("action").and_then(Value::as_str).unwrap_or("");
        // No sign of life since: no newer heartbeat and no new checkpoint
        // (a checkpoint in the same millisecond as the recovery is progress).
        action != "dismiss"
            && at >= st.last_heartbeat.unwrap_or(0)
            && sql_int(r.get(key::CHECKPOINT_STEP)) == st.checkpoint_step
    });
    if !cfg.is_live(status) {
        if recovered_since_heartbeat && is_terminal(status) {
            return Err(already(last_record, now, &st));
        }
        return Err(Refusal::NotLive {
            status: status.to_string(),
            live_statuses: cfg.live_statuses.clone(),
        });
    }
    let age = now.saturating_sub(st.last_heartbeat.unwrap_or(0));
    if age <= threshold_ms {
        if recovered_since_heartbeat {
            return Err(already(last_record, now, &st));
        }
        return Err(Refusal::StillAlive {
            age_ms: age,
            threshold_ms,
        });
    }
    // Resume and fail take the run away from its executor: the lease goes up.
    let bumped = || {
        st.lease
            .checked_add(1)
            .ok_or(Refusal::LeaseOverflow { lease: st.lease })
    };
    let mut out = m.clone();
    let mut new_status = status.to_string();
    let mut lease_after = st.lease;
    match action {
        Action::Resume => {
            if st.resumes >= cfg.max_resumes {
                return Err(Refusal::TooManyResumes {
                    resumes: st.resumes,
                    max_resumes: cfg.max_resumes,
                });
            }
            lease_after = bumped()?;
            out.insert(
                key::LAST_HEARTBEAT.into(),
                json!(now.max(st.last_heartbeat.unwrap_or(0))),
            );
            out.insert(key::LEASE.into(), json!(lease_after));
            out.insert(key::RESUMES.into(), json!(st.resumes.saturating_add(1)));
        }
        Action::Fail => {
            lease_after = bumped()?;
            new_status = in_case_of(status, "failed");
            out.insert(key::LEASE.into(), json!(lease_after));
        }
        Action::Dismiss => {
            if st.dismissed() {
                return Err(Refusal::AlreadyDismissed {
                    heartbeat: st.last_heartbeat.unwrap_or(0),
                });
            }
            out.insert(
                key::DISMISSED_HEARTBEAT.into(),
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
    match out.get_mut(key::RECOVERY_LOG) {
        Some(Value::Array(log)) => log.push(record),
        _ => {
            out.insert(key::RECOVERY_LOG.into(), Value::Array(vec![record]));
        }
    }
    let after = State::of(&out);
    let outcome = json!({
        "run_id": run.id,
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

fn already(record: Option<&Value>, now: i64, st: &State) -> Refusal {
    let action = record
        .and_then(|r| r.get("action"))
        .and_then(Value::as_str)
        .unwrap_or("recover");
    let at = record.and_then(|r| sql_int(r.get("at"))).unwrap_or(now);
    Refusal::AlreadyRecovered {
        action: action.to_string(),
        ago_ms: now.saturating_sub(at).max(0),
        lease: st.lease,
    }
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
        parse(Some(s)).unwrap()
    }

    /// `decide` on run "r".
    fn dec(
        cfg: &Config,
        status: &str,
        m: &Object,
        action: Action,
        threshold_ms: i64,
        now: i64,
    ) -> Result<Decision, Refusal> {
        let run = Run {
            id: "r",
            status,
            metadata: m,
        };
        decide(
            cfg,
            run,
            Request {
                action,
                threshold_ms,
                now,
            },
        )
    }

    #[test]
    fn parse_refuses_what_is_not_an_object() {
        assert!(parse(None).unwrap().is_empty());
        assert_eq!(
            parse(Some("[1,2]")).unwrap_err(),
            Refusal::NotObject {
                kind: "array",
                text: "[1,2]".into()
            }
        );
        assert_eq!(
            parse(Some("{oops")).unwrap_err(),
            Refusal::NotJson {
                text: "{oops".into()
            }
        );
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
        let d = dec(
            &Config::default(),
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
        let d = dec(&Config::default(), "Paused", &m, Action::Fail, 10, 100).unwrap();
        assert_eq!(d.status, "Failed");
        assert_eq!(d.metadata["lease"], 2);
    }

    #[test]
    fn extreme_values_are_refused_or_handled_without_overflow() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1,"lease":9223372036854775807}"#);
        let e = dec(&cfg, "running", &m, Action::Resume, 30, 100).unwrap_err();
        assert_eq!(e, Refusal::LeaseOverflow { lease: i64::MAX });
        let m = obj(r#"{"lastHeartbeat":-9223372036854775808}"#);
        let d = dec(&cfg, "running", &m, Action::Fail, 30, 100).unwrap();
        assert_eq!(d.status, "failed");
    }

    #[test]
    fn a_checkpoint_in_the_same_millisecond_as_a_resume_is_life() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1,"checkpointStep":2}"#);
        let mut after = dec(&cfg, "running", &m, Action::Resume, 30, 100)
            .unwrap()
            .metadata;
        after.insert("checkpointStep".into(), json!(3));
        let e = dec(&cfg, "running", &after, Action::Resume, 30, 100).unwrap_err();
        assert!(matches!(e, Refusal::StillAlive { .. }), "{e:?}");
    }

    #[test]
    fn refusals_say_why() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":90}"#);
        let e = dec(&cfg, "running", &m, Action::Fail, 30, 100).unwrap_err();
        assert_eq!(
            e,
            Refusal::StillAlive {
                age_ms: 10,
                threshold_ms: 30
            }
        );
        let ahead = obj(r#"{"lastHeartbeat":150}"#);
        let e = dec(&cfg, "running", &ahead, Action::Fail, 30, 100).unwrap_err();
        assert_eq!(
            e,
            Refusal::StillAlive {
                age_ms: -50,
                threshold_ms: 30
            }
        );
        let e = dec(&cfg, "completed", &m, Action::Fail, 30, 100).unwrap_err();
        assert!(
            matches!(&e, Refusal::NotLive { status, .. } if status == "completed"),
            "{e:?}"
        );
        let m = obj(r#"{"lastHeartbeat":1,"resumes":3}"#);
        let e = dec(&cfg, "running", &m, Action::Resume, 30, 100).unwrap_err();
        assert_eq!(
            e,
            Refusal::TooManyResumes {
                resumes: 3,
                max_resumes: 3
            }
        );
    }

    #[test]
    fn a_second_resume_is_told_it_lost_the_race() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1}"#);
        let first = dec(&cfg, "running", &m, Action::Resume, 30, 100).unwrap();
        let e = dec(&cfg, "running", &first.metadata, Action::Resume, 30, 105).unwrap_err();
        assert_eq!(
            e,
            Refusal::AlreadyRecovered {
                action: "resume".into(),
                ago_ms: 5,
                lease: 2
            }
        );
        let failed = dec(&cfg, "running", &m, Action::Fail, 30, 100).unwrap();
        let e = dec(
            &cfg,
            &failed.status,
            &failed.metadata,
            Action::Resume,
            30,
            105,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Refusal::AlreadyRecovered { action, .. } if action == "fail"),
            "{e:?}"
        );
    }

    #[test]
    fn dismiss_hides_until_the_next_heartbeat() {
        let cfg = Config::default();
        let m = obj(r#"{"lastHeartbeat":1}"#);
        let d = dec(&cfg, "running", &m, Action::Dismiss, 30, 100).unwrap();
        assert!(State::of(&d.metadata).dismissed());
        assert_eq!(d.metadata.get("lease"), None, "dismiss takes nothing away");
        let e = dec(&cfg, "running", &d.metadata, Action::Dismiss, 30, 100).unwrap_err();
        assert_eq!(e, Refusal::AlreadyDismissed { heartbeat: 1 });
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
