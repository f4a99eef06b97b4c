//! `orphaned_runs`' rows computed in Rust from the live runs' metadata text.
//!
//! The `run_recovery_orphans` view (see `sqlgen::orphan_select`) reads each
//! live run's metadata with a `json_valid` guard and a JSON call per field,
//! and sorts; a client without the extension needs it as it is. The
//! extension can do better: it reads the live runs (id, name, status,
//! metadata, served from the status index and ordered by id), reads each
//! metadata text once in [`Fields::read`], keeps the orphans and sorts them
//! by heartbeat, a stable sort that keeps the id order among equal
//! heartbeats. That is `orphan_select`'s `ORDER BY coalesce(last_heartbeat,
//! 0), run_id` exactly, with SQLite's own collation and type order for the id.
//! (Sorting only the ids of tied orphans was tried: a second query, costlier
//! than this sort whenever many orphans share a heartbeat, as runs that never
//! heartbeated do. The price of this one is that SQLite sorts every live
//! run with its metadata, where the view sorts only the orphans: for
//! thousands of live runs, that sort is the larger part.)
//!
//! Every value is the one the view's SQL gives, or the whole query is left
//! to that SQL: [`Fields::read`] and [`decide`] answer `None` when they are
//! not sure (metadata that is not strict JSON, a value that is not a plain
//! integer where `CAST(json_extract(…) AS INTEGER)` reads it, a
//! `checkpointState` not written compactly, a duplicate key, an overflow).

use std::ops::Range;

use rusqlite::types::ValueRef;

use crate::jsontext::{object_members, plain_int};
use crate::metadata::key::{
    CHECKPOINT_STATE, CHECKPOINT_STEP, DISMISSED_HEARTBEAT, LAST_HEARTBEAT, LEASE, RESUMES,
};

/// What the view reads from one run's metadata.
#[derive(Default, Debug, PartialEq)]
pub(crate) struct Fields {
    /// Whether the metadata is valid JSON (`json_valid`); NULL is not.
    valid: bool,
    last_heartbeat: Option<i64>,
    dismissed_at: Option<i64>,
    checkpoint_step: Option<i64>,
    /// Where `checkpointState`'s value is in the metadata text (what `->`
    /// returns).
    checkpoint_state: Option<Range<usize>>,
    lease: Option<i64>,
    resumes: Option<i64>,
}

impl Fields {
    /// The fields of metadata `meta` (NULL: `None`), or `None` when not sure.
    pub fn read(meta: Option<&[u8]>) -> Option<Fields> {
        let Some(text) = meta else {
            return Some(Fields::default());
        };
        let text = std::str::from_utf8(text).ok()?;
        let mut f = Fields {
            valid: true,
            ..Fields::default()
        };
        // The keys read, in the order of the match below.
        const KEYS: [&str; 6] = [
            LAST_HEARTBEAT,
            DISMISSED_HEARTBEAT,
            CHECKPOINT_STEP,
            LEASE,
            RESUMES,
            CHECKPOINT_STATE,
        ];
        let mut seen = [false; 6];
        object_members(text, |m| {
            let Some(k) = KEYS.iter().position(|k| k.as_bytes() == m.key) else {
                return Some(());
            };
            if std::mem::replace(&mut seen[k], true) {
                return None; // a duplicate: which one SQLite reads is its business
            }
            let int = || match m.value {
                b"null" => Some(None),
                v => plain_int(v).map(Some),
            };
            match k {
                0 => f.last_heartbeat = int()?,
                1 => f.dismissed_at = int()?,
                2 => f.checkpoint_step = int()?,
                3 => f.lease = int()?,
                4 => f.resumes = int()?,
                _ => {
                    // `->` writes the value compactly: only a compact one is
                    // already written as `->` would write it.
                    if !m.compact {
                        return None;
                    }
                    f.checkpoint_state = Some(m.start..m.start + m.value.len());
                }
            }
            Some(())
        })?;
        Some(f)
    }
}

/// Whether a run with `f` is listed at `now` with `threshold` (`include`:
/// dismissed ones too), and its computed columns: `None` when not sure
/// (an overflow, where SQLite's integer arithmetic would turn to reals).
/// `Some(None)`: not listed.
pub(crate) fn decide(
    f: &Fields,
    now: i64,
    threshold: i64,
    ahead_ms: i64,
    include: bool,
) -> Option<Option<Computed>> {
    let cutoff = now.checked_sub(threshold)?;
    let heartbeat = f.last_heartbeat.unwrap_or(0);
    // A heartbeat more than stale_after_ms ahead of now (a clock that was
    // wrong) is listed too: kept, it would hide the run until that time.
    let ahead = heartbeat > now.checked_add(ahead_ms)?;
    let listed = if f.valid {
        (heartbeat < cutoff || ahead) && (include || f.dismissed_at != Some(heartbeat))
    } else {
        0 < cutoff
    };
    if !listed {
        return Some(None);
    }
    Some(Some(Computed {
        sort_key: heartbeat,
        age_ms: now.checked_sub(heartbeat)?,
        dismissed: i64::from(include && f.dismissed_at == Some(heartbeat)),
    }))
}

/// The columns of a listed run that are not read from its metadata.
#[derive(Debug, PartialEq)]
pub(crate) struct Computed {
    /// `coalesce(last_heartbeat, 0)`: what the rows are sorted by.
    sort_key: i64,
    age_ms: i64,
    /// 1 when listed with `include_dismissed` and dismissed at its heartbeat.
    dismissed: i64,
}

/// A value copied out of the SELECT (texts and blobs into [`Rows::bytes`]).
#[derive(Debug)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(Range<usize>),
    Blob(Range<usize>),
}

struct Row {
    id: Cell,
    name: Cell,
    status: Cell,
    fields: Fields,
    computed: Computed,
    /// `checkpointState`'s text in `bytes`.
    checkpoint_state: Option<Range<usize>>,
}

/// The listed runs of one query, in order.
#[derive(Default)]
pub(crate) struct Rows {
    rows: Vec<Row>,
    bytes: Vec<u8>,
}

impl Rows {
    /// Adds a live run (`id`, `name`, `status`, its metadata `meta` and the
    /// fields read from it) when it is listed. `None` when not sure.
    pub fn add(
        &mut self,
        [id, name, status]: [ValueRef<'_>; 3],
        meta: Option<&[u8]>,
        fields: Fields,
        [now, threshold, ahead_ms]: [i64; 3],
        include: bool,
    ) -> Option<()> {
        let Some(computed) = decide(&fields, now, threshold, ahead_ms, include)? else {
            return Some(());
        };
        let state = fields.checkpoint_state.clone();
        let row = Row {
            id: self.cell(id),
            name: self.cell(name),
            status: self.cell(status),
            checkpoint_state: match (state, meta) {
                (Some(s), Some(m)) => Some(self.keep(m.get(s)?)),
                _ => None,
            },
            fields,
            computed,
        };
        self.rows.push(row);
        Some(())
    }

    /// Copies `b` into `bytes`: where it is there.
    fn keep(&mut self, b: &[u8]) -> Range<usize> {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(b);
        at..self.bytes.len()
    }

    fn cell(&mut self, v: ValueRef<'_>) -> Cell {
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(r) => Cell::Real(r),
            ValueRef::Text(t) => Cell::Text(self.keep(t)),
            ValueRef::Blob(b) => Cell::Blob(self.keep(b)),
        }
    }

    /// Puts the rows in `orphan_select`'s order. They were added in id order; the
    /// sort is stable, so runs with equal heartbeats keep it.
    pub fn sort(&mut self) {
        self.rows.sort_by_key(|r| r.computed.sort_key);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Column `col` (`orphaned_runs`' visible columns, in order) of row `at`.
    pub fn value(&self, at: usize, col: usize) -> ValueRef<'_> {
        let Some(r) = self.rows.get(at) else {
            return ValueRef::Null;
        };
        let bytes = |range: &Range<usize>| self.bytes.get(range.clone()).unwrap_or_default();
        let cell = |c: &Cell| match c {
            Cell::Null => ValueRef::Null,
            Cell::Int(i) => ValueRef::Integer(*i),
            Cell::Real(f) => ValueRef::Real(*f),
            Cell::Text(t) => ValueRef::Text(bytes(t)),
            Cell::Blob(b) => ValueRef::Blob(bytes(b)),
        };
        let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
        let f = &r.fields;
        match col {
            0 => cell(&r.id),
            1 => cell(&r.name),
            2 => cell(&r.status),
            3 => int(f.last_heartbeat),
            4 => ValueRef::Integer(r.computed.age_ms),
            5 => int(f.checkpoint_step),
            6 => r
                .checkpoint_state
                .as_ref()
                .map_or(ValueRef::Null, |s| ValueRef::Text(bytes(s))),
            7 => ValueRef::Integer(f.lease.unwrap_or(1)),
            8 => ValueRef::Integer(f.resumes.unwrap_or(0)),
            9 => ValueRef::Integer(r.computed.dismissed),
            _ => ValueRef::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(t: &str) -> Option<Fields> {
        Fields::read(Some(t.as_bytes()))
    }

    #[test]
    fn fields_are_read_as_the_view_reads_them() {
        let f = read(r#"{"op":"x","lease":2,"resumes":null,"checkpointStep":3,"checkpointState":{"a":[1,"b c"]},"dismissedHeartbeat":5,"lastHeartbeat":7}"#).unwrap();
        assert!(f.valid);
        assert_eq!(
            (
                f.last_heartbeat,
                f.dismissed_at,
                f.checkpoint_step,
                f.lease,
                f.resumes
            ),
            (Some(7), Some(5), Some(3), Some(2), None)
        );
        assert_eq!(Fields::read(None), Some(Fields::default()));
        for unsure in [
            r#"{"lease":"2"}"#,
            r#"{"lease":2.0}"#,
            r#"{"lease":true}"#,
            r#"{"lastHeartbeat":1,"lastHeartbeat":2}"#,
            r#"{"checkpointState":{"a": 1}}"#,
            r#"{"l\u0065ase":1}"#,
            r#"[1]"#,
            "not json",
            "",
        ] {
            assert_eq!(read(unsure), None, "{unsure}");
        }
    }

    #[test]
    fn listing_follows_the_views_case() {
        let f = |hb: Option<i64>, d: Option<i64>| Fields {
            valid: true,
            last_heartbeat: hb,
            dismissed_at: d,
            ..Fields::default()
        };
        let listed = |f: &Fields, include| decide(f, 100, 10, 30_000, include).unwrap().is_some();
        assert!(!listed(&f(Some(90), None), false), "fresh");
        assert!(listed(&f(Some(89), None), false), "stale");
        assert!(listed(&f(None, None), false), "no heartbeat counts as 0");
        assert!(
            !listed(&f(Some(5), Some(5)), false),
            "dismissed at its heartbeat"
        );
        assert!(
            listed(&f(Some(5), Some(5)), true),
            "shown with include_dismissed"
        );
        assert!(listed(&f(Some(6), Some(5)), false), "heartbeat since");
        assert!(listed(&Fields::default(), false), "not valid JSON: stale");
        assert_eq!(
            decide(&Fields::default(), 5, 10, 30_000, false),
            Some(None),
            "not valid JSON, the cutoff below 0: not listed"
        );
        assert_eq!(
            decide(&f(Some(i64::MIN), None), 100, 10, 30_000, false),
            None,
            "overflow"
        );
        let c = decide(&f(Some(5), Some(5)), 100, 10, 30_000, true)
            .unwrap()
            .unwrap();
        assert_eq!((c.sort_key, c.age_ms, c.dismissed), (5, 95, 1));
    }

    #[test]
    fn a_heartbeat_from_a_clock_far_ahead_is_listed() {
        let at = |hb: i64| Fields {
            valid: true,
            last_heartbeat: Some(hb),
            ..Fields::default()
        };
        let listed = |hb| {
            decide(&at(hb), 1_000_000, 10, 30_000, false)
                .unwrap()
                .is_some()
        };
        assert!(!listed(1_000_000), "seen now");
        assert!(
            !listed(1_030_000),
            "ahead within stale_after_ms: another host's clock"
        );
        assert!(listed(1_030_001), "further ahead: a clock that was wrong");
        let c = decide(&at(2_000_000), 1_000_000, 10, 30_000, false)
            .unwrap()
            .unwrap();
        assert_eq!(c.age_ms, -1_000_000);
        assert_eq!(decide(&at(i64::MAX), 1, 10, i64::MAX, false), None);
    }
}
