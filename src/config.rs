//! The install configuration: parsing, validation and defaults (pure logic).
//!
//! The effective config is stored as JSON in the `run_recovery_settings`
//! table under the key `config`; every function reads it from there.

use serde_json::{json, Value};

use crate::errors::ConfigProblem;

/// Statuses in which no executor can hold a run any more.
pub const TERMINAL_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];
/// Statuses in which an executor holds a run (the spec's default).
pub const DEFAULT_LIVE: [&str; 8] = [
    "preparing",
    "running",
    "pausing",
    "paused",
    "resuming",
    "canceling",
    "intervening",
    "requires_intervention",
];
pub const KEYS: [&str; 11] = [
    "table",
    "id_column",
    "status_column",
    "metadata_column",
    "name_column",
    "end_time_column",
    "updated_at_column",
    "stale_after_ms",
    "live_statuses",
    "max_resumes",
    "schema",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub table: String,
    pub id_column: String,
    pub status_column: String,
    pub metadata_column: String,
    /// Optional columns: `None` when the table has no such column.
    pub name_column: Option<String>,
    pub end_time_column: Option<String>,
    pub updated_at_column: Option<String>,
    pub stale_after_ms: i64,
    /// Lowercase.
    pub live_statuses: Vec<String>,
    pub max_resumes: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            table: "protocol_runs".into(),
            id_column: "accession_id".into(),
            status_column: "status".into(),
            metadata_column: "properties_json".into(),
            name_column: Some("name".into()),
            end_time_column: Some("end_time".into()),
            updated_at_column: Some("updated_at".into()),
            stale_after_ms: 30_000,
            live_statuses: DEFAULT_LIVE.iter().map(|s| s.to_string()).collect(),
            max_resumes: 3,
        }
    }
}

impl Config {
    /// Applies the keys of a user-supplied config object over `self`; a
    /// refused config changes nothing.
    pub fn apply_json(&mut self, text: &str) -> Result<(), ConfigProblem> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigProblem::NotJson {
            error: e.to_string(),
            text: text.to_string(),
        })?;
        let mut next = self.clone();
        let Value::Object(map) = value else {
            return Err(ConfigProblem::NotObject {
                text: text.to_string(),
            });
        };
        for (key, v) in &map {
            match key.as_str() {
                "table" => next.table = ident(key, v)?,
                "id_column" => next.id_column = ident(key, v)?,
                "status_column" => next.status_column = ident(key, v)?,
                "metadata_column" => next.metadata_column = ident(key, v)?,
                "name_column" => next.name_column = opt_ident(key, v)?,
                "end_time_column" => next.end_time_column = opt_ident(key, v)?,
                "updated_at_column" => next.updated_at_column = opt_ident(key, v)?,
                "stale_after_ms" => next.stale_after_ms = int(key, v, 1)?,
                "max_resumes" => next.max_resumes = int(key, v, 0)?,
                "live_statuses" => next.live_statuses = statuses(v)?,
                "schema" => {
                    if v.as_str() != Some("main") {
                        return Err(ConfigProblem::OnlyMain {
                            found: v.to_string(),
                        });
                    }
                }
                other => {
                    return Err(ConfigProblem::UnknownKey {
                        key: other.to_string(),
                        keys: &KEYS,
                    })
                }
            }
        }
        *self = next;
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "table": self.table,
            "id_column": self.id_column,
            "status_column": self.status_column,
            "metadata_column": self.metadata_column,
            "name_column": self.name_column,
            "end_time_column": self.end_time_column,
            "updated_at_column": self.updated_at_column,
            "stale_after_ms": self.stale_after_ms,
            "live_statuses": self.live_statuses,
            "max_resumes": self.max_resumes,
        })
    }

    /// Reads a stored config (as written by `to_json`).
    pub fn from_stored(text: &str) -> Result<Config, ConfigProblem> {
        let mut c = Config::default();
        c.apply_json(text)?;
        Ok(c)
    }

    /// Whether `status` is live: one of the live statuses spelled lowercase,
    /// UPPERCASE or Capitalized (see [`spellings`]). The same test runs in the
    /// triggers and, through the status index, in orphan detection, so a run
    /// the functions treat as live is always one that can be found orphaned.
    /// The one case rule, as the generated SQL applies it: `status` is one
    /// of the [`spellings`] of a live status (Unicode case mapping, so
    /// `LÄUFT` is a spelling of `läuft`; `lÄuft` is not).
    pub fn is_live(&self, status: &str) -> bool {
        self.live_statuses
            .iter()
            .any(|s| spellings(s).iter().any(|v| v == status))
    }
}

pub fn is_terminal(status: &str) -> bool {
    let lower = status.to_lowercase();
    TERMINAL_STATUSES.contains(&lower.as_str())
}

/// `new_status` (lowercase) written in the case the row's current status uses:
/// `RUNNING` → `FAILED`, `Running` → `Failed`, anything else → `failed`.
pub fn in_case_of(current: &str, new_status: &str) -> String {
    let has_lower = current.chars().any(|c| c.is_lowercase());
    let has_upper = current.chars().any(|c| c.is_uppercase());
    if has_upper && !has_lower {
        new_status.to_uppercase()
    } else if has_upper && current.chars().next().is_some_and(|c| c.is_uppercase()) {
        let mut chars = new_status.chars();
        match chars.next() {
            Some(f) => f.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    } else {
        new_status.to_string()
    }
}

/// The spellings of a status that index lookups match: lowercase, UPPERCASE, Capitalized.
pub fn spellings(status: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(4);
    for v in [
        status.to_string(),
        status.to_lowercase(),
        status.to_uppercase(),
        in_case_of("Xx", &status.to_lowercase()),
    ] {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn ident(key: &str, v: &Value) -> Result<String, ConfigProblem> {
    match v.as_str() {
        Some(s) if !s.is_empty() && !s.contains('\0') => Ok(s.to_string()),
        _ => Err(ConfigProblem::BadName {
            key: key.to_string(),
            found: v.to_string(),
        }),
    }
}

fn opt_ident(key: &str, v: &Value) -> Result<Option<String>, ConfigProblem> {
    if v.is_null() {
        Ok(None)
    } else {
        ident(key, v).map(Some)
    }
}

fn int(key: &str, v: &Value, min: i64) -> Result<i64, ConfigProblem> {
    match v.as_i64() {
        Some(i) if i >= min => Ok(i),
        _ => Err(ConfigProblem::BadInt {
            key: key.to_string(),
            min,
            found: v.to_string(),
        }),
    }
}

fn statuses(v: &Value) -> Result<Vec<String>, ConfigProblem> {
    let bad = || ConfigProblem::BadStatuses {
        found: v.to_string(),
    };
    let arr = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
    let mut out: Vec<String> = Vec::new();
    for s in arr {
        let given = s.as_str().filter(|s| !s.is_empty()).ok_or_else(bad)?;
        // Stored lowercase, unless lowercase cannot give the spelling back
        // (Unicode's `İ` lowercases to `i` + a combining dot, which
        // uppercases to `I` + the dot): then as given.
        let lower = given.to_lowercase();
        let s = if spellings(&lower).iter().any(|v| v == given) {
            lower
        } else {
            given.to_string()
        };
        if is_terminal(&s) {
            return Err(ConfigProblem::TerminalStatus {
                status: s,
                found: v.to_string(),
            });
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.table, "protocol_runs");
        assert_eq!(c.stale_after_ms, 30_000);
        assert_eq!(c.max_resumes, 3);
        assert!(c.is_live("RUNNING") && c.is_live("paused") && !c.is_live("queued"));
        assert!(c.is_live("Requires_intervention") && !c.is_live("rUnNiNg"));
        assert!(!c.is_live("completed"));
    }

    #[test]
    fn apply_overrides_and_round_trips() {
        let mut c = Config::default();
        c.apply_json(r#"{"table":"jobs","live_statuses":["Active","active"],"stale_after_ms":5}"#)
            .unwrap();
        assert_eq!(c.table, "jobs");
        assert_eq!(c.live_statuses, vec!["active"]);
        let back = Config::from_stored(&c.to_json().to_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn apply_rejects_bad_input_with_the_value() {
        let mut c = Config::default();
        let e = |c: &mut Config, text: &str| c.apply_json(text).unwrap_err();
        assert!(
            matches!(e(&mut c, r#"{"tabel":"x"}"#), ConfigProblem::UnknownKey { key, .. } if key == "tabel")
        );
        assert_eq!(
            e(&mut c, r#"{"stale_after_ms":-1}"#).to_string(),
            "config key 'stale_after_ms' must be an integer >= 1, found -1"
        );
        assert_eq!(
            e(&mut c, r#"{"live_statuses":["failed"]}"#),
            ConfigProblem::TerminalStatus {
                status: "failed".into(),
                found: r#"["failed"]"#.into()
            }
        );
        assert!(matches!(e(&mut c, "[1]"), ConfigProblem::NotObject { .. }));
        assert!(matches!(e(&mut c, "{nope"), ConfigProblem::NotJson { .. }));
        assert!(matches!(
            e(&mut c, r#"{"table":""}"#),
            ConfigProblem::BadName { .. }
        ));
        assert!(matches!(
            e(&mut c, r#"{"max_resumes":1.5}"#),
            ConfigProblem::BadInt { .. }
        ));
        assert!(matches!(
            e(&mut c, r#"{"schema":"temp"}"#),
            ConfigProblem::OnlyMain { .. }
        ));
        let last = e(&mut c, r#"{"table":"jobs","max_resumes":-2}"#);
        assert!(last.to_string().ends_with("found -2"), "{last}");
        assert_eq!(c, Config::default(), "a refused config changes nothing");
    }

    #[test]
    fn status_case_follows_the_row() {
        assert_eq!(in_case_of("RUNNING", "failed"), "FAILED");
        assert_eq!(in_case_of("running", "failed"), "failed");
        assert_eq!(in_case_of("Running", "failed"), "Failed");
        assert_eq!(in_case_of("rUnNiNg", "failed"), "failed");
        assert_eq!(in_case_of("REQUIRES_INTERVENTION", "failed"), "FAILED");
        assert_eq!(spellings("running"), vec!["running", "RUNNING", "Running"]);
    }
}
