//! The heartbeat worked out in Rust: the new metadata text of a plain
//! heartbeat, without a JSON function call.
//!
//! The heartbeat UPDATE made in SQL (see `sqlgen::FunctionSql`) reads the
//! metadata three times (the object test, the lease, the heartbeat) and then
//! `json_set` parses it again and writes the whole text out; on SQLite 3.40
//! the reads share a parse cache, but each call finds it by comparing the
//! whole text. The app's hand-written heartbeat is the `json_set` alone. So
//! `run_heartbeat`'s first statement is an UPDATE whose new metadata comes
//! from [`sql_text`] (the internal SQL function `run_recovery_heartbeat_text`):
//! one pass over the text, in place.
//!
//! [`plan`] answers only for the common case, where it is sure SQLite's JSON
//! functions would read the text as it does: strict RFC 8259 JSON (a subset
//! of what every SQLite version accepts) in valid UTF-8, an object whose
//! last key is `lastHeartbeat` holding 13 digits (what every heartbeat
//! writes: see `sqlgen::with_heartbeat_last`), no other top-level
//! `lastHeartbeat` or `lease` key, no top-level key spelled with an escape
//! (SQLite 3.40 compares keys as written, 3.45+ decoded), and a `lease` that
//! is absent or a plain integer. Anything else: the function raises, having
//! marked the refusal as its own ([`take_declined`]), nothing is written,
//! and `run_heartbeat` runs the SQL UPDATE, which decides as it always did.
//! The answer is the same text with the 13 digits replaced, so the triggers
//! take their cheap string path, and the app's keys, order and spacing are
//! kept byte for byte.

use std::cell::Cell;

use rusqlite::functions::Context;
use rusqlite::types::ValueRef;

use crate::errors::show;
use crate::jsontext::{self, plain_int};
use crate::metadata::key::{LAST_HEARTBEAT, LEASE};

thread_local! {
    /// Set by [`sql_text`] when it declines; read by [`take_declined`].
    static DECLINED: Cell<bool> = const { Cell::new(false) };
}

/// Whether `run_recovery_heartbeat_text` declined on this thread since the
/// last call (so an error of the UPDATE that called it is that refusal, not
/// SQLite's); clears the mark.
pub(crate) fn take_declined() -> bool {
    DECLINED.with(|d| d.replace(false))
}

/// `run_recovery_heartbeat_text(metadata, now, lease)`: [`plan`] as SQL,
/// raising when it does not answer.
pub(crate) fn sql_text(ctx: &Context<'_>) -> rusqlite::Result<String> {
    let (meta, now, lease) = (ctx.get_raw(0), ctx.get_raw(1), ctx.get_raw(2));
    // The schema changed under the kept statement: decline, write nothing.
    let fresh = crate::stmt::fresh();
    let planned = match (meta, now, lease) {
        _ if !fresh => None,
        (ValueRef::Text(m), ValueRef::Integer(now), ValueRef::Integer(l)) => plan(m, Some(l), now),
        (ValueRef::Text(m), ValueRef::Integer(now), ValueRef::Null) => plan(m, None, now),
        _ => None,
    };
    planned.ok_or_else(|| {
        DECLINED.with(|d| d.set(true));
        crate::errors::fail(
            crate::sqlgen::BEAT_FUNCTION,
            format!(
                "cannot set the heartbeat in place in metadata {} at now {} with lease {}: \
that takes a JSON object ending in \"lastHeartbeat\":<13 digits no later than now>}} \
and a lease that matches (run_heartbeat then writes through SQL)",
                show(meta),
                show(now),
                show(lease)
            ),
        )
    })
}

/// The new metadata of a heartbeat at `now` on `meta`, fenced with `lease`
/// when given: `Some(text)` when the heartbeat may be written and this is
/// exactly its text; `None` when this module cannot tell (the SQL UPDATE
/// then decides, refusing or writing as it always did).
pub(crate) fn plan(meta: &[u8], lease: Option<i64>, now: i64) -> Option<String> {
    if !(1_000_000_000_000..10_000_000_000_000).contains(&now) {
        return None;
    }
    let text = std::str::from_utf8(meta).ok()?;
    let top = TopLevel::scan(text)?;
    if top.heartbeat > now {
        return None; // the SQL path keeps a heartbeat that is ahead
    }
    if let Some(given) = lease {
        if top.lease.unwrap_or(1) != given {
            return None; // the SQL path refuses, and says why
        }
    }
    // The last 14 bytes are the 13 digits and the brace (ASCII: a char boundary).
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..text.len() - 14]);
    out.push_str(&now.to_string());
    out.push('}');
    Some(out)
}

/// What [`plan`] needs of a metadata text's top-level object.
struct TopLevel {
    /// The 13-digit `lastHeartbeat`, the last key, ending the text.
    heartbeat: i64,
    /// The `lease`, when present.
    lease: Option<i64>,
}

impl TopLevel {
    /// `None` unless `text` is strict JSON, an object, with the shape
    /// [`plan`] asks for.
    fn scan(text: &str) -> Option<TopLevel> {
        let mut seen_heartbeat = false;
        let mut lease = None;
        // The last member's key and where its value starts and ends.
        let mut last: Option<(&[u8], usize, usize)> = None;
        jsontext::object_members(text, |m| {
            if m.key == LAST_HEARTBEAT.as_bytes() {
                if seen_heartbeat {
                    return None;
                }
                seen_heartbeat = true;
            } else if m.key == LEASE.as_bytes() {
                if lease.is_some() {
                    return None;
                }
                lease = Some(plain_int(m.value)?);
            }
            last = Some((m.key, m.start, m.start + m.value.len()));
            Some(())
        })?;
        let text = text.as_bytes();
        // An empty object has no heartbeat. Otherwise: exactly
        // `"lastHeartbeat":<13 digits>}` at the end, as written by every
        // heartbeat and tested by the triggers' string path.
        let (key, start, end) = last?;
        let heartbeat = (key == LAST_HEARTBEAT.as_bytes()
            && end == text.len() - 1
            && end - start == 13
            && end.checked_sub(29).and_then(|at| text.get(at..start))
                == Some(&b"\"lastHeartbeat\":"[..])
            && text[start..end].iter().all(u8::is_ascii_digit))
        .then(|| plain_int(&text[start..end]))
        .flatten();
        heartbeat.map(|heartbeat| TopLevel { heartbeat, lease })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn beat(meta: &str, lease: Option<i64>) -> Option<String> {
        plan(meta.as_bytes(), lease, NOW)
    }

    #[test]
    fn the_common_case_replaces_only_the_digits() {
        let m = r#"{"deck": {"a": [1, 2.5e-3, true, null]}, "op": "Zoë", "lease":2,"lastHeartbeat":1700000000000}"#;
        let want = m.replace("1700000000000", "1800000000000");
        assert_eq!(beat(m, None).as_deref(), Some(want.as_str()));
        assert_eq!(beat(m, Some(2)).as_deref(), Some(want.as_str()));
        // no lease key reads as lease 1, as coalesce(…, 1) does
        let m = r#"{"a":1,"lastHeartbeat":1700000000000}"#;
        assert!(beat(m, Some(1)).is_some());
    }

    #[test]
    fn anything_unsure_is_left_to_sql() {
        for (m, lease, why) in [
            (
                r#"{"lease":2,"lastHeartbeat":1700000000000}"#,
                Some(3),
                "a stale lease",
            ),
            (
                r#"{"lastHeartbeat":1900000000000}"#,
                None,
                "a heartbeat ahead",
            ),
            (
                r#"{"lastHeartbeat":1700000000000,"a":1}"#,
                None,
                "heartbeat not last",
            ),
            (
                r#"{"lastHeartbeat":1,"lastHeartbeat":1700000000000}"#,
                None,
                "two heartbeats",
            ),
            (
                r#"{"lease":1,"lease":2,"lastHeartbeat":1700000000000}"#,
                None,
                "two leases",
            ),
            (
                r#"{"lease":"2","lastHeartbeat":1700000000000}"#,
                Some(2),
                "a text lease",
            ),
            (
                r#"{"lease":2.0,"lastHeartbeat":1700000000000}"#,
                Some(2),
                "a real lease",
            ),
            (
                r#"{"lease":99999999999999999999,"lastHeartbeat":1700000000000}"#,
                None,
                "a huge lease",
            ),
            (
                r#"{"l\u0065ase":3,"lastHeartbeat":1700000000000}"#,
                Some(1),
                "an escaped key",
            ),
            (
                r#"{"lastHeartbeat":1700000000000} "#,
                None,
                "trailing space",
            ),
            (
                r#"{"lastHeartbeat": 1700000000000}"#,
                None,
                "not what the heartbeat writes, but valid",
            ),
            (
                r#"{"a":01,"lastHeartbeat":1700000000000}"#,
                None,
                "a leading zero",
            ),
            (r#"{"a":'x',"lastHeartbeat":1700000000000}"#, None, "JSON5"),
            (
                r#"{"a":[1,],"lastHeartbeat":1700000000000}"#,
                None,
                "a trailing comma",
            ),
            (
                r#"{"a":"x
","lastHeartbeat":1700000000000}"#,
                None,
                "a raw newline in a string",
            ),
            (
                r#"{"a":"\x","lastHeartbeat":1700000000000}"#,
                None,
                "a bad escape",
            ),
            (
                r#"{"a":"x\",\"lastHeartbeat\":1700000000000}"#,
                None,
                "inside a string",
            ),
            (r#"["lastHeartbeat",1700000000000]"#, None, "not an object"),
            (
                r#"{"lastHeartbeat":-170000000000}"#,
                None,
                "a negative heartbeat",
            ),
            (
                r#"{"lastHeartbeat":"1700000000000"}"#,
                None,
                "a text heartbeat",
            ),
            ("", None, "empty"),
            ("{}", None, "no heartbeat"),
        ] {
            assert_eq!(beat(m, lease), None, "{why}: {m}");
        }
        let deep = format!(
            "{{\"a\":{}1{},\"lastHeartbeat\":1700000000000}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert_eq!(beat(&deep, None), None, "nesting deeper than MAX_DEPTH");
        let ok = format!(
            "{{\"a\":{}1{},\"lastHeartbeat\":1700000000000}}",
            "[".repeat(60),
            "]".repeat(60)
        );
        assert!(beat(&ok, None).is_some(), "nesting within MAX_DEPTH");
        assert_eq!(
            plan(
                b"{\"a\":\"\xff\",\"lastHeartbeat\":1700000000000}",
                None,
                NOW
            ),
            None,
            "not UTF-8"
        );
        assert_eq!(
            plan(br#"{"lastHeartbeat":1700000000000}"#, None, 99),
            None,
            "a clock before 2001"
        );
    }
}
