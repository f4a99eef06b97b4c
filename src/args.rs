//! Reading and checking SQL function arguments. Every refusal names the
//! function, the argument and the value found.

use rusqlite::types::{Value, ValueRef};
use rusqlite::Result;

use crate::errors::{bad_argument, Expected};

/// A run id: text or an integer (bound back to SQL as it came, so the
/// column's affinity applies). NULL, real and blob ids are refused.
pub fn run_id(func: &str, v: ValueRef<'_>) -> Result<(Value, String)> {
    let id = run_id_value(func, v)?;
    let text = id_text(&id);
    Ok((id, text))
}

/// [`run_id`] without its text, for the hot path (see [`id_text`]).
pub fn run_id_value(func: &str, v: ValueRef<'_>) -> Result<Value> {
    match v {
        ValueRef::Text(t) => Ok(Value::Text(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Integer(i) => Ok(Value::Integer(i)),
        other => Err(bad_argument(func, Expected::RunId, other)),
    }
}

/// A run id (from [`run_id_value`]) as refusals show it.
pub fn id_text(id: &Value) -> String {
    match id {
        Value::Text(t) => t.clone(),
        Value::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

/// An integer argument `>= min`; reals, text, blobs and NULL are refused.
pub fn int(func: &str, name: &str, v: ValueRef<'_>, min: i64) -> Result<i64> {
    match v {
        ValueRef::Integer(i) if i >= min => Ok(i),
        other => Err(bad_argument(func, Expected::Int { name, min }, other)),
    }
}

/// An integer argument `>= min`, or NULL (`None`): the inputs of
/// `orphaned_runs`, where NULL gives no rows.
pub fn int_or_null(func: &str, name: &str, v: ValueRef<'_>, min: i64) -> Result<Option<i64>> {
    match v {
        ValueRef::Null => Ok(None),
        v => int(func, name, v, min).map(Some),
    }
}

/// A lease argument (integer >= 1).
pub fn lease(func: &str, v: ValueRef<'_>) -> Result<i64> {
    int(func, "lease", v, 1)
}

/// A checkpoint state: any JSON. Text must be valid JSON (use json_quote()
/// for a plain string); numbers are stored as numbers; NULL as JSON null.
pub fn json_state(func: &str, v: ValueRef<'_>) -> Result<Option<String>> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i.to_string())),
        ValueRef::Real(r) if r.is_finite() => Ok(Some(serde_json::Value::from(r).to_string())),
        ValueRef::Text(t) => {
            let s =
                std::str::from_utf8(t).map_err(|_| bad_argument(func, Expected::StateText, v))?;
            // Checked without building it (any nesting depth: serde_json's
            // value reader stops at 128 levels, its raw reader does not).
            match serde_json::from_str::<Box<serde_json::value::RawValue>>(s) {
                Ok(_) => Ok(Some(s.to_string())),
                Err(_) => Err(bad_argument(func, Expected::StateJson, v)),
            }
        }
        other => Err(bad_argument(func, Expected::StateValue, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_function_argument_and_value() {
        let e = run_id("run_heartbeat", ValueRef::Null).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run_heartbeat: run id must be text or an integer, found NULL"
        );
        let e = int("run_checkpoint", "step", ValueRef::Integer(-1), 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run_checkpoint: step must be an integer >= 0, found -1"
        );
        let e = int("run_checkpoint", "step", ValueRef::Real(1.5), 0).unwrap_err();
        assert!(e.to_string().ends_with("found 1.5"));
        let e = json_state("run_checkpoint", ValueRef::Text(b"plate 3")).unwrap_err();
        assert!(e.to_string().contains("found 'plate 3'"));
        assert!(json_state("f", ValueRef::Blob(b"x")).is_err());
    }

    #[test]
    fn accepted_values() {
        assert_eq!(run_id("f", ValueRef::Integer(7)).unwrap().1, "7");
        assert_eq!(
            json_state("f", ValueRef::Text(b"{\"a\":1}"))
                .unwrap()
                .as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(
            json_state("f", ValueRef::Integer(3)).unwrap().as_deref(),
            Some("3")
        );
        assert_eq!(json_state("f", ValueRef::Null).unwrap(), None);
        assert_eq!(lease("f", ValueRef::Integer(1)).unwrap(), 1);
        assert!(lease("f", ValueRef::Integer(0)).is_err());
    }
}
