//! The recovery state inside a run's metadata JSON, and the pure decisions
//! made on it: is the run orphaned, what a recovery writes (no SQLite here).
//!
//! Keys (top level of the metadata object): `lastHeartbeat`, `checkpointStep`,
//! `checkpointState`, `lease`, `resumes`, `dismissedHeartbeat`, `recoveryLog`.
//! Every other key belongs to the app and is carried through untouched, in
//! its order (serde_json's `preserve_order`).

use serde_json::value::RawValue;
use serde_json::{json, Value};

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

/// A metadata object as read from the column. The recovery keys are parsed;
/// every other member is kept as the text it was written in, never parsed,
/// so the app's values come back byte for byte (every digit, every escape,
/// any nesting depth SQLite accepts: serde_json's own reader stops at 128
/// levels, its raw reader does not). Members keep their order.
#[derive(Debug, Clone, Default)]
pub struct Object {
    /// In order; metadata objects are small, so a key is found by a scan.
    members: Vec<(String, Member)>,
}

#[derive(Debug, Clone)]
enum Member {
    Parsed(Value),
    /// JSON text as written: an app's member, or a recovery key nested too
    /// deep to parse (read as an empty array, which SQLite casts to 0 too).
    Text(Box<RawValue>),
}

/// How a recovery key nested too deep to parse reads (see [`Member::Text`]).
static NESTED: Value = Value::Array(Vec::new());

const RECOVERY_KEYS: [&str; 8] = [
    key::LAST_HEARTBEAT,
    key::CHECKPOINT_STEP,
    key::CHECKPOINT_STATE,
    key::LEASE,
    key::RESUMES,
    key::DISMISSED_HEARTBEAT,
    key::RECOVERY_LOG,
    key::CHECKPOINT_REV,
];

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The value of a recovery key (an app's member reads as an empty array:
    /// nothing here reads the app's keys).
    pub fn get(&self, k: &str) -> Option<&Value> {
        match self.member(k)? {
            Member::Parsed(v) => Some(v),
            Member::Text(_) => Some(&NESTED),
        }
    }

    /// The member's JSON text as it will be written.
    fn member(&self, k: &str) -> Option<&Member> {
        self.members.iter().find(|(n, _)| n == k).map(|(_, m)| m)
    }

    fn member_mut(&mut self, k: &str) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|(n, _)| n == k)
            .map(|(_, m)| m)
    }

    fn set(&mut self, k: String, m: Member) {
        match self.member_mut(&k) {
            Some(slot) => *slot = m,
            None => self.members.push((k, m)),
        }
    }

    /// Sets `k` (kept in its place when present, else last).
    pub fn insert(&mut self, k: String, v: Value) {
        self.set(k, Member::Parsed(v));
    }

    /// Sets `k` to the member `from_key` of `from` as it is (NULL when absent).
    pub fn insert_member_of(&mut self, k: String, from: &Object, from_key: &str) {
        let m = from
            .member(from_key)
            .cloned()
            .unwrap_or(Member::Parsed(Value::Null));
        self.set(k, m);
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.members.iter().map(|(k, _)| k)
    }

    /// Appends `item` to the array `k`, read or kept as text; `false` when
    /// `k` is not an array (nothing changed).
    pub fn push_to_array(&mut self, k: &str, item: Value) -> bool {
        match self.member_mut(k) {
            Some(Member::Parsed(Value::Array(a))) => {
                a.push(item);
                true
            }
            Some(Member::Text(t)) => {
                let text = t.get().trim_end();
                let Some(body) = text.strip_prefix('[').and_then(|b| b.strip_suffix(']')) else {
                    return false;
                };
                let body = body.trim_end();
                let sep = if body.trim_start().is_empty() {
                    ""
                } else {
                    ","
                };
                let joined = format!("[{body}{sep}{item}]");
                match RawValue::from_string(joined) {
                    Ok(raw) => {
                        *t = raw;
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }

    /// The object as JSON text: the app's members as they were written.
    pub fn to_text(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, m)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(k.clone()).to_string());
            out.push(':');
            match m {
                Member::Parsed(v) => out.push_str(&v.to_string()),
                Member::Text(t) => out.push_str(t.get()),
            }
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for Object {
    type Output = Value;
    fn index(&self, k: &str) -> &Value {
        self.get(k).unwrap_or(&Value::Null)
    }
}

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
    // Not an object: read again (without nesting) only to say what it is.
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(raw) => Err(Refusal::NotObject {
            kind: kind_of_text(raw.get()),
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
                let mut m = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    let raw: Box<RawValue> = a.next_value()?;
                    if !seen.insert(k.clone()) {
                        continue;
                    }
                    let member = if RECOVERY_KEYS.contains(&k.as_str()) {
                        match serde_json::from_str::<Value>(raw.get()) {
                            Ok(v) => Member::Parsed(v),
                            Err(_) => Member::Text(raw),
                        }
                    } else {
                        Member::Text(raw)
                    };
                    m.push((k, member));
                }
                Ok(FirstOfEachKey(Object { members: m }))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// What a JSON text is, from its first byte.
fn kind_of_text(t: &str) -> &'static str {
    match t.trim_start().as_bytes().first() {
        Some(b'[') => "array",
        Some(b'{') => "object",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
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
    /// The outcome object (see docs/api.md, recover_run).
    pub outcome: Object,
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
    // Alive: seen within the threshold, and not more than stale_after_ms
    // ahead of now (a clock that was wrong wrote that: kept, it would make
    // the run unrecoverable until that time).
    if age <= threshold_ms && age >= cfg.stale_after_ms.saturating_neg() {
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
            let hb = st.last_heartbeat.unwrap_or(0);
            let beat = if hb > now.saturating_add(cfg.stale_after_ms) {
                now
            } else {
                now.max(hb)
            };
            out.insert(key::LAST_HEARTBEAT.into(), json!(beat));
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
    if !out.push_to_array(key::RECOVERY_LOG, record.clone()) {
        out.insert(key::RECOVERY_LOG.into(), Value::Array(vec![record]));
    }
    let after = State::of(&out);
    let mut outcome = Object::new();
    for (k, v) in [
        ("run_id", json!(run.id)),
        ("action", json!(action.name())),
        ("status", json!(new_status)),
        ("previous_status", json!(status)),
        ("lease", json!(after.lease)),
        ("resumes", json!(after.resumes)),
        ("last_heartbeat", json!(after.last_heartbeat)),
        ("age_ms", json!(age)),
        ("checkpoint_step", json!(st.checkpoint_step)),
    ] {
        outcome.insert(k.into(), v);
    }
    // As written (any depth), like every other member the app wrote.
    outcome.insert_member_of("checkpoint_state".into(), m, key::CHECKPOINT_STATE);
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
    fn app_members_and_deep_recovery_keys_are_written_back_as_they_were() {
        let deep = format!("{}{}", "[".repeat(1500), "]".repeat(1500));
        let text = format!(
            r#"{{"esc":"caf\u00e9 \/", "n":1.50e0, "deep":{deep},"lastHeartbeat":1,"checkpointState":{{"s": {deep}}},"recoveryLog":[ {deep} ]}}"#
        );
        let m = obj(&text);
        let d = dec(&Config::default(), "running", &m, Action::Resume, 0, 100).unwrap();
        let out = d.metadata.to_text();
        assert!(
            out.starts_with(&format!(
                r#"{{"esc":"caf\u00e9 \/","n":1.50e0,"deep":{deep},"#
            )),
            "{}",
            &out[..80]
        );
        assert!(out.contains(&format!(r#""checkpointState":{{"s": {deep}}}"#)));
        assert!(out.contains(&format!(r#""recoveryLog":[ {deep},{{"action":"resume""#)));
        assert_eq!(d.metadata["lease"], 2);
        let outcome = d.outcome.to_text();
        assert!(outcome.ends_with(&format!(r#""checkpoint_state":{{"s": {deep}}}}}"#)));
        // An empty log gets the record alone; a log that is not an array is
        // replaced by one (as the SQL actions do).
        let mut e = obj(r#"{"recoveryLog":[ ]}"#);
        e.members[0].1 = Member::Text(RawValue::from_string("[ ]".into()).unwrap());
        assert!(e.push_to_array("recoveryLog", json!(1)));
        assert_eq!(e.to_text(), r#"{"recoveryLog":[1]}"#);
        let mut s = obj(r#"{"recoveryLog":"x"}"#);
        assert!(!s.push_to_array("recoveryLog", json!(1)));
    }

    #[test]
    fn a_heartbeat_from_a_clock_far_ahead_is_recoverable_and_resume_repairs_it() {
        let cfg = Config::default();
        let within = obj(r#"{"lastHeartbeat":130000}"#);
        let e = dec(&cfg, "running", &within, Action::Fail, 30_000, 100_000).unwrap_err();
        assert!(
            matches!(
                e,
                Refusal::StillAlive {
                    age_ms: -30_000,
                    ..
                }
            ),
            "{e:?}"
        );
        let wrong = obj(r#"{"lastHeartbeat":4102444800000}"#);
        let d = dec(&cfg, "running", &wrong, Action::Resume, 30_000, 100_000).unwrap();
        assert_eq!(d.metadata["lastHeartbeat"], 100_000);
        assert_eq!(d.metadata["lease"], 2);
    }

    #[test]
    fn iso8601_is_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
