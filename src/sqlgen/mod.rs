//! The SQL that run_recovery generates from a [`Config`] (pure logic).
//!
//! Two kinds of SQL come from here:
//! * the pure-SQL layer that `run_recovery_install` writes into the database
//!   (triggers, the `run_recovery_orphans` view, the settings table), which
//!   uses only core SQLite 3.38+ so clients that never load the extension
//!   (SQLite WASM, a stock Python) still get stamping, fencing and detection;
//! * the statements the extension's functions run on the calling connection.
//!
//! Every identifier that comes from the config goes through [`ident`] and
//! every string through [`literal`]; nothing from the config is pasted raw.

use crate::config::{spellings, Config};
use crate::metadata::key::{
    CHECKPOINT_REV, CHECKPOINT_REV_PATH, CHECKPOINT_STATE, CHECKPOINT_STATE_PATH, CHECKPOINT_STEP,
    CHECKPOINT_STEP_PATH, DISMISSED_HEARTBEAT, DISMISSED_HEARTBEAT_PATH, LAST_HEARTBEAT,
    LAST_HEARTBEAT_PATH, LEASE, LEASE_PATH, RECOVERY_LOG, RECOVERY_LOG_PATH, RESUMES, RESUMES_PATH,
};

pub mod actions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Unix epoch milliseconds in pure SQL (`unixepoch('subsec')` is NULL on 3.40).
pub const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

pub const SETTINGS_TABLE: &str = "run_recovery_settings";
/// The settings key that lets a plain write move `lastHeartbeat` backwards
/// (value `'1'`): for tests and demos that age a run on purpose. Without it
/// a write never moves the heartbeat back (a stale copy written back would
/// make a live run look dead).
pub const ALLOW_BACKDATING: &str = "allow_backdating";
/// The extension's internal function that `run_heartbeat`'s UPDATE calls
/// (see `crate::beat`).
pub const BEAT_FUNCTION: &str = "run_recovery_heartbeat_text";
/// The extension's internal function the stamp UPDATEs call before they
/// write: false when SQLite had to prepare the kept statement again since
/// the installed objects were last found complete (see `crate::stmt::fresh`).
pub const FRESH_FUNCTION: &str = "run_recovery_schema_fresh";
pub const VIEW: &str = "run_recovery_orphans";
/// Every view install makes (dropping a view drops its INSTEAD OF trigger).
pub const VIEWS: [&str; 6] = [
    VIEW,
    actions::ACTIONS_VIEW,
    actions::RUNS_VIEW,
    GUARD_REPAIR,
    GUARD_CHECK,
    STAMP,
];
/// The trigger that fences stale writes and merges dropped recovery keys back.
pub const GUARD_TRIGGER: &str = "run_recovery_lease_guard";
/// Where the guard sends a write it must refuse or repair: an internal view
/// whose INSTEAD OF trigger (GUARD_REPAIR_TRIGGER) refuses or restores.
pub const GUARD_REPAIR: &str = "run_recovery_guard_repair";
pub const GUARD_REPAIR_TRIGGER: &str = "run_recovery_guard_repair_do";
/// Where the guard sends a write its cheap tests could not pass: an internal
/// view whose INSTEAD OF trigger (GUARD_CHECK_TRIGGER) tests whether the
/// write must be refused or repaired, and if so sends it to GUARD_REPAIR.
pub const GUARD_CHECK: &str = "run_recovery_guard_check";
pub const GUARD_CHECK_TRIGGER: &str = "run_recovery_guard_check_do";
/// Where the two stamp triggers send a run that went live: an internal view
/// whose INSTEAD OF trigger (STAMP_TRIGGER) stamps it.
pub const STAMP: &str = "run_recovery_stamp";
pub const STAMP_TRIGGER: &str = "run_recovery_stamp_do";
pub const TRIGGERS: [&str; 5] = [
    "run_recovery_stamp_insert",
    "run_recovery_stamp_live",
    GUARD_TRIGGER,
    REPLACE_BEFORE_TRIGGER,
    REPLACE_AFTER_TRIGGER,
];
/// Every trigger install makes, with the object it is on (`None`: the runs
/// table): what [`crate::state`] checks is still there.
pub fn installed_triggers() -> Vec<(String, Option<&'static str>)> {
    let mut out: Vec<(String, Option<&'static str>)> =
        TRIGGERS.iter().map(|t| ((*t).to_owned(), None)).collect();
    out.push((GUARD_REPAIR_TRIGGER.to_owned(), Some(GUARD_REPAIR)));
    out.push((GUARD_CHECK_TRIGGER.to_owned(), Some(GUARD_CHECK)));
    out.push((STAMP_TRIGGER.to_owned(), Some(STAMP)));
    for t in actions::trigger_names() {
        out.push((t, Some(actions::ACTIONS_VIEW)));
    }
    out
}

/// `INSERT OR REPLACE` / `REPLACE INTO` of an existing run deletes the old
/// row without firing UPDATE (or, unless `recursive_triggers` is on, DELETE)
/// triggers. A BEFORE INSERT trigger still sees the old row: it keeps a copy
/// of its metadata and status in this table (one row, the insert's), and
/// the AFTER INSERT trigger judges the new row against it as the lease guard
/// judges an UPDATE (fence, merge-back).
pub const REPLACED_TABLE: &str = "run_recovery_replaced";
pub const REPLACE_BEFORE_TRIGGER: &str = "run_recovery_replace_keep";
pub const REPLACE_AFTER_TRIGGER: &str = "run_recovery_replace_guard";
/// Triggers of earlier schema versions, dropped by install (in
/// schema_version 1 merge-back was a trigger of its own).
pub const OLD_TRIGGERS: [&str; 1] = ["run_recovery_merge_back"];
/// Bumped when the generated objects change shape; stored in the settings table.
/// 1: triggers and the orphans view; 2: adds `run_recovery_actions` and
/// `run_recovery_runs`; 3: the guard's refusal and restores move into the
/// internal view `run_recovery_guard_repair`; 4: the stamp moves into the
/// internal view `run_recovery_stamp`, and the orphans view is one flat
/// SELECT; 5: the guard's full test moves into the internal view
/// `run_recovery_guard_check`; 6: a trigger per action on
/// `run_recovery_actions` (`run_recovery_act` before), and the orphans view
/// has no ORDER BY; 7: JSON null is absent, a stale copy moves nothing back
/// (`checkpointRev`), REPLACE is guarded (`run_recovery_replaced` and two
/// insert triggers), a write of a non-object over recovery state is refused.
/// Every install drops and recreates every object (the
/// view's triggers go with the view), so a database of any earlier version
/// upgrades in place.
pub const SCHEMA_VERSION: i64 = 8;

/// The message of the lease guard trigger (a RAISE takes a literal).
pub const STALE_LEASE_MESSAGE: &str = "run_recovery_lease_guard: stale write refused: \
the metadata carries an older lease than the run holds (the run was recovered by another client)";

/// The lease guard's refusal of a write that would replace metadata holding
/// recovery state with text that is not a JSON object.
pub const NOT_OBJECT_MESSAGE: &str = "run_recovery_lease_guard: write refused: \
the new metadata is not a JSON object (malformed text, an array, a scalar or JSON5) and the run \
holds recovery state that it would lose; write a JSON object (json() turns JSON5 into JSON)";

/// `` `name` `` with embedded backticks doubled: safe for any identifier.
pub fn ident(name: &str) -> String {
    // Backticks, not double quotes: SQLite reads a double-quoted name that
    // matches no column as a string literal (its DQS fallback, on in most
    // builds), so a renamed column would quietly turn a test into a
    // comparison with a constant; a backticked name is always a name, and
    // one that is gone is an error.
    format!("`{}`", name.replace('`', "``"))
}

/// The heartbeat an executor's stamp at `now` writes over the stored `hb`:
/// never backwards, unless `hb` is more than `ahead_ms` ahead of `now` (a
/// clock that was wrong wrote it; kept, it would hide the run from every
/// orphan check until that time): then `now`, so the rightful executor's
/// next stamp repairs it.
pub(crate) fn stamped_heartbeat(now: &str, hb: &str, ahead_ms: i64) -> String {
    format!(
        "CASE WHEN coalesce({hb}, 0) > {now} + {ahead_ms} THEN {now} ELSE max({now}, coalesce({hb}, 0)) END"
    )
}

/// `'text'` with embedded single quotes doubled.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `x` is a JSON object (never raises on malformed text or NULL; NULL is not an object).
fn is_object(x: &str) -> String {
    format!("CASE WHEN json_valid({x}) THEN json_type({x}) = 'object' ELSE 0 END")
}

/// `x` is NULL or a JSON object: metadata the extension may write.
fn writable(x: &str) -> String {
    format!("({x} IS NULL OR {})", is_object(x))
}

/// The integer at `$.key` of `x`, as SQLite's CAST reads it.
fn int_at(x: &str, key: &str) -> String {
    format!("CAST(json_extract({x}, '$.{key}') AS INTEGER)")
}

/// `x` holds `key` with a value other than JSON null. A recovery key set to
/// null means absent everywhere: it is merged back, and never counts as a
/// value (`json_type` is `'null'` for a null and SQL NULL only when absent).
fn has(x: &str, key: &str) -> String {
    format!("coalesce(json_type({x}, '$.{key}'), 'null') <> 'null'")
}

/// `x` lacks `key`, or holds JSON null there (see [`has`]).
fn lacks(x: &str, key: &str) -> String {
    format!("coalesce(json_type({x}, '$.{key}'), 'null') = 'null'")
}

/// The GLOB pattern of a metadata text's last 30 bytes when `lastHeartbeat`
/// is its last key, holding a 13-digit millisecond time (2001 to 2286):
/// `"lastHeartbeat":1795000000000}`.
const HEARTBEAT_LAST_GLOB: &str =
    "'\"lastHeartbeat\":[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]}'";

/// `x`'s text ends with `"lastHeartbeat":<13 digits>}`. For text that is a
/// JSON object this means `lastHeartbeat` is its last top-level key (the
/// brace right after the digits can only close the outermost object). Bytes
/// only (as a BLOB, `substr` and `length` do not scan the text) and no JSON
/// parse, nor a lookup in SQLite's parse cache (before 3.45, a `memcmp` of
/// the whole text per call).
fn heartbeat_is_last(x: &str) -> String {
    format!("CAST(substr(CAST({x} AS BLOB), -30) AS TEXT) GLOB {HEARTBEAT_LAST_GLOB}")
}

/// A length no text reaches (SQLite's largest, SQLITE_MAX_LENGTH, is
/// 2^31 - 1): `substr(x, -14, -HEAD_ALL)` is every byte before the last 14.
const HEAD_ALL: i64 = 2_147_483_647;

/// The cheap test both metadata triggers try first: the write changed only
/// the 13 digits of a last `lastHeartbeat` key (what every heartbeat writes
/// once the heartbeat is the last key; the writers put it there). Everything
/// else in the two texts is byte for byte the same (OLD's last 14 bytes aside,
/// which hold only its heartbeat's value when they hold no comma), so no key was dropped, nothing
/// went backwards and the lease is unchanged: neither trigger has anything to
/// do, whatever the rest of the text holds (if OLD is not valid JSON, NEW is
/// equally not, and both triggers leave such metadata alone anyway).
///
/// A text's head (all but its last 14 bytes) is `substr` with a negative
/// length, "the bytes before the 14th from the end", which needs no
/// `length` call (SQLite 3.40 and 3.53 alike; a text under 14 bytes has an
/// empty head, and the tail test above needs 30).
///
/// OLD's last 14 bytes must hold no comma: otherwise they could hold other
/// keys (`…"lastHeartbeat":1,"lease":99}`) that NEW drops (a comma test
/// costs a heartbeat about 3% less than a GLOB of OLD's tail on 3.40:
/// `make bench-guard`, BENCH_VARIANTS). And the digits must not go back (13
/// digits and a brace compare as bytes as the numbers do; an OLD tail that
/// is no number sorts before digits or after them, and after them goes to
/// the full test): a heartbeat written back older is a stale copy.
fn only_heartbeat_changed(new: &str, old: &str) -> String {
    let head = |x: &str| format!("substr(CAST({x} AS BLOB), -14, -{HEAD_ALL})");
    let tail = |x: &str| format!("substr(CAST({x} AS BLOB), -14)");
    format!(
        "({} AND {} = {} AND {} >= {} AND instr({}, X'2C') = 0)",
        heartbeat_is_last(new),
        head(new),
        head(old),
        tail(new),
        tail(old),
        tail(old)
    )
}

/// The metadata `meta` with `lastHeartbeat` set to `value`, as its last key
/// (moved there if it is elsewhere), so the next heartbeat takes the
/// triggers' cheap path. The other keys keep their order.
fn with_heartbeat_last(meta: &str, value: &str) -> String {
    format!(
        "CASE WHEN {} THEN json_set({meta}, {LAST_HEARTBEAT_PATH}, {value}) \
ELSE json_set(json_remove(coalesce({meta}, '{{}}'), {LAST_HEARTBEAT_PATH}), {LAST_HEARTBEAT_PATH}, {value}) END",
        heartbeat_is_last(meta)
    )
}

/// `CASE status WHEN 'running' THEN 1 WHEN 'RUNNING' THEN 1 … ELSE 0 END`:
/// the live test for one row, with the same spellings as the index-served
/// [`live_index_test`] (and `Config::is_live`). Not `status IN (…)`: SQLite
/// builds an ephemeral table for an IN list of more than two constants on
/// every execution, which doubled the cost of a heartbeat.
fn live_test(cfg: &Config, status: &str) -> String {
    live_case(cfg, status, 1)
}

/// `CASE status WHEN 'running' THEN 0 … ELSE 1 END`: true when `status` is
/// not live, NULL included.
fn not_live_test(cfg: &Config, status: &str) -> String {
    live_case(cfg, status, 0)
}

fn live_case(cfg: &Config, status: &str, live: u8) -> String {
    let whens: String = case_spellings(cfg)
        .iter()
        .map(|s| format!(" WHEN {} THEN {live}", literal(s)))
        .collect();
    format!("CASE {status}{whens} ELSE {} END", 1 - live)
}

/// The spellings of the live statuses in the order a `CASE` tests them, one
/// comparison each until one matches. The order changes no result, only how
/// soon the test ends: `running` and `paused` first (an executor spends its
/// time in them, so a heartbeat and a status write between them are decided
/// by the first few comparisons), then the others as configured; lowercase
/// and UPPERCASE of each (both are common), then every Capitalized spelling.
fn case_spellings(cfg: &Config) -> Vec<String> {
    let hot = ["running", "paused"];
    let mut statuses: Vec<&String> = cfg.live_statuses.iter().collect();
    // Stable: the others keep their configured order.
    statuses.sort_by_key(|s| {
        hot.iter()
            .position(|h| s.eq_ignore_ascii_case(h))
            .unwrap_or(hot.len())
    });
    let mut out: Vec<String> = Vec::new();
    let lower_upper = statuses
        .iter()
        .flat_map(|s| [s.to_lowercase(), s.to_uppercase()]);
    // `spellings` holds the two above and the Capitalized one.
    for s in lower_upper.chain(statuses.iter().flat_map(|s| spellings(s))) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// `status IN ('running', 'RUNNING', 'Running', …)`: the index-served test.
fn live_index_test(cfg: &Config, status: &str) -> String {
    format!(
        "{status} IN ({})",
        list(cfg.live_statuses.iter().flat_map(|s| spellings(s)))
    )
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.map(|s| literal(&s)).collect::<Vec<_>>().join(", ")
}

/// The metadata with `lastHeartbeat` moved forward to `now` (never backwards)
/// and `lease` 1 added when the run has none yet (or holds null).
fn stamped(meta: &str, now: &str) -> String {
    format!(
        "json_set(json_remove(coalesce({meta}, '{{}}'), {LAST_HEARTBEAT_PATH}), {LEASE_PATH}, \
         CASE WHEN {} THEN json({meta} -> {LEASE_PATH}) ELSE 1 END, {LAST_HEARTBEAT_PATH}, max({now}, coalesce({}, 0)))",
        has(meta, LEASE),
        int_at(meta, LAST_HEARTBEAT)
    )
}

/// The metadata `meta` (a JSON object or NULL) with checkpoint `step`,
/// `state` (JSON text) and `lastHeartbeat` = `beat`, the heartbeat last (see
/// [`with_heartbeat_last`]): in place when it is last already and the
/// checkpoint keys exist, else the heartbeat is moved behind them.
///
/// `checkpointRev` goes up by one: a plain write that carries an older one
/// is a stale copy and cannot replace this checkpoint (see the guard).
fn checkpointed(meta: &str, beat: &str, step: &str, state: &str) -> String {
    let rev = format!("coalesce({}, 0) + 1", int_at(meta, CHECKPOINT_REV));
    format!(
        "CASE WHEN {} AND json_type({meta}, {CHECKPOINT_STEP_PATH}) IS NOT NULL \
AND json_type({meta}, {CHECKPOINT_STATE_PATH}) IS NOT NULL \
AND json_type({meta}, {CHECKPOINT_REV_PATH}) IS NOT NULL \
THEN json_set({meta}, {LAST_HEARTBEAT_PATH}, {beat}, {CHECKPOINT_STEP_PATH}, {step}, {CHECKPOINT_STATE_PATH}, json({state}), \
{CHECKPOINT_REV_PATH}, {rev}) \
ELSE json_set(json_remove(coalesce({meta}, '{{}}'), {LAST_HEARTBEAT_PATH}), {CHECKPOINT_STEP_PATH}, {step}, \
{CHECKPOINT_STATE_PATH}, json({state}), {CHECKPOINT_REV_PATH}, {rev}, {LAST_HEARTBEAT_PATH}, {beat}) END",
        heartbeat_is_last(meta)
    )
}

pub(super) struct Names {
    table: String,
    id: String,
    status: String,
    meta: String,
}

fn names(cfg: &Config) -> Names {
    Names {
        table: ident(&cfg.table),
        id: ident(&cfg.id_column),
        status: ident(&cfg.status_column),
        meta: ident(&cfg.metadata_column),
    }
}

/// The visible columns of `orphaned_runs` and `run_recovery_orphans`, in
/// order; bit `1 << i` of an [`OrphanColumns`] mask stands for column `i`.
pub const ORPHAN_COLUMNS: [&str; 10] = [
    "run_id",
    "name",
    "status",
    "last_heartbeat",
    "age_ms",
    "checkpoint_step",
    "checkpoint_state",
    "lease",
    "resumes",
    "dismissed",
];

/// Which of [`ORPHAN_COLUMNS`] a query computes (bit `1 << i` for column
/// `i`); the others are NULL. The view computes them all and lets SQLite
/// drop the ones a query does not read; `orphaned_runs` passes the columns
/// SQLite says it uses (`colUsed`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OrphanColumns(pub u16);

impl OrphanColumns {
    pub const ALL: OrphanColumns = OrphanColumns((1 << ORPHAN_COLUMNS.len()) - 1);

    /// Whether column `i` is computed.
    pub fn has(self, i: usize) -> bool {
        i < ORPHAN_COLUMNS.len() && self.0 & (1 << i) != 0
    }
}

/// The SELECT behind both `run_recovery_orphans` and `orphaned_runs`, so the
/// two can never disagree. `now`, `threshold` and `include_dismissed` are SQL
/// expressions (literals in the view, parameters in the table-valued function).
///
/// The `WHERE status IN (…spellings…)` is what lets SQLite serve it from the
/// status index: only live rows are read, however long the history.
///
/// Cost: one flat SELECT, so a query on the view computes only the columns
/// it reads (SQLite flattens the view into it), and the `WHERE` is one `CASE`
/// that stops at the first answer: a live run with a fresh heartbeat costs a
/// `json_valid` (the one parse; later calls find it in SQLite's JSON cache)
/// and one lookup, a stale one a lookup more for `dismissedHeartbeat`.
/// Every field read from the JSON is guarded by `json_valid`: metadata that is
/// not valid JSON has no fields (NULL), never an error, and its run is stale.
///
/// Ordered as `orphaned_runs` lists its rows: oldest heartbeat first (a
/// missing one counting as 0), ties by id. The view is [`orphan_rows_select`],
/// the same SELECT without the ORDER BY.
pub fn orphan_select(
    cfg: &Config,
    now: &str,
    threshold: &str,
    include_dismissed: &str,
    cols: OrphanColumns,
) -> String {
    let f = RunFields::new(cfg, &names(cfg));
    // Run as the extension's own statement: qualified, so a TEMP table of
    // the same name is never read.
    let from = format!("main.{}", ident(&cfg.table));
    format!(
        "{}\nORDER BY coalesce({}, 0), {}",
        rows_select_from(cfg, &from, now, threshold, include_dismissed, cols),
        f.last_heartbeat,
        f.id
    )
}

/// [`orphan_select`] without its ORDER BY: the `run_recovery_orphans` view.
/// A view leaves the order to its query, as SQL views do: the sort by
/// heartbeat costs a quarter of the query when every live run is stale (it
/// reads the heartbeat a third time and sorts), and a caller who filters,
/// counts or orders by something else would pay for it for nothing.
pub fn orphan_rows_select(
    cfg: &Config,
    now: &str,
    threshold: &str,
    include_dismissed: &str,
    cols: OrphanColumns,
) -> String {
    // In a view of main, names resolve in main only (SQLite's rule for
    // schema objects), so the view's text names the table unqualified.
    rows_select_from(
        cfg,
        &ident(&cfg.table),
        now,
        threshold,
        include_dismissed,
        cols,
    )
}

/// [`orphan_rows_select`] reading the runs from `from`.
fn rows_select_from(
    cfg: &Config,
    from: &str,
    now: &str,
    threshold: &str,
    include_dismissed: &str,
    cols: OrphanColumns,
) -> String {
    let n = names(cfg);
    let meta = n.meta.as_str();
    let hb = int_at(meta, LAST_HEARTBEAT);
    let dismissed_at = int_at(meta, DISMISSED_HEARTBEAT);
    let cutoff = format!("{now} - ({threshold})");
    // A heartbeat more than stale_after_ms ahead of now came from a clock
    // that was wrong: listed (see `stamped_heartbeat`).
    let ahead = cfg.stale_after_ms;
    // Only fields of valid JSON are read: the CASE tests json_valid first.
    let stale_and_shown = format!(
        "CASE WHEN json_valid({meta}) THEN CASE \
WHEN {now} - coalesce({hb}, 0) BETWEEN -{ahead} AND ({threshold}) THEN 0 \
WHEN ({include_dismissed}) THEN 1 \
WHEN {dismissed_at} IS NULL THEN 1 \
ELSE {dismissed_at} <> coalesce({hb}, 0) END \
ELSE 0 < {cutoff} END"
    );
    let f = RunFields::new(cfg, &n);
    // Without include_dismissed every row listed is not dismissed.
    let dismissed = if include_dismissed.trim() == "0" {
        "0".to_string()
    } else {
        format!(
            "coalesce({} = coalesce({}, 0), 0)",
            f.dismissed_at, f.last_heartbeat
        )
    };
    let age = format!("{now} - coalesce({}, 0)", f.last_heartbeat);
    let exprs = [
        &f.id,
        &f.name,
        &f.status,
        &f.last_heartbeat,
        &age,
        &f.checkpoint_step,
        &f.checkpoint_state,
        &f.lease,
        &f.resumes,
        &dismissed,
    ];
    let select: Vec<String> = exprs
        .iter()
        .zip(ORPHAN_COLUMNS)
        .enumerate()
        .map(|(i, (e, c))| {
            let e = if cols.has(i) { e.as_str() } else { "NULL" };
            format!("{e} AS {c}")
        })
        .collect();
    format!(
        "SELECT {select}
FROM {table}
WHERE {live}
  AND {stale_and_shown}",
        select = select.join(",\n       "),
        table = from,
        live = live_index_test(cfg, &n.status),
    )
}

/// `expr` (which reads the metadata `meta`) where `meta` is valid JSON, else NULL.
fn guarded(meta: &str, expr: String) -> String {
    format!("CASE WHEN json_valid({meta}) THEN {expr} END")
}

/// A run's fields as `orphaned_runs` reports them, as SQL expressions over
/// the table's row: lease 1 and resumes 0 when absent; the fields of
/// metadata that is not valid JSON are NULL, never an error. The one
/// definition behind `orphan_select` and the `run_recovery_runs` view.
struct RunFields {
    id: String,
    name: String,
    status: String,
    last_heartbeat: String,
    checkpoint_step: String,
    checkpoint_state: String,
    lease: String,
    resumes: String,
    dismissed_at: String,
}

impl RunFields {
    fn new(cfg: &Config, n: &Names) -> RunFields {
        let meta = n.meta.as_str();
        let int = |key: &str| guarded(meta, int_at(meta, key));
        RunFields {
            id: n.id.clone(),
            name: cfg
                .name_column
                .as_deref()
                .map(ident)
                .unwrap_or_else(|| "NULL".into()),
            status: n.status.clone(),
            last_heartbeat: int(LAST_HEARTBEAT),
            checkpoint_step: int(CHECKPOINT_STEP),
            checkpoint_state: guarded(meta, format!("{meta} -> '$.{CHECKPOINT_STATE}'")),
            lease: format!("coalesce({}, 1)", int(LEASE)),
            resumes: format!("coalesce({}, 0)", int(RESUMES)),
            dismissed_at: int(DISMISSED_HEARTBEAT),
        }
    }
}

/// The select list the `run_recovery_runs` view reads a run with:
/// `run_id, name, status, last_heartbeat, checkpoint_step, checkpoint_state,
/// lease, resumes, dismissed_at` (see [`RunFields`]).
fn run_fields(cfg: &Config, n: &Names) -> String {
    let f = RunFields::new(cfg, n);
    format!(
        "{} AS run_id, {} AS name, {} AS status,
         {} AS last_heartbeat,
         {} AS checkpoint_step,
         {} AS checkpoint_state,
         {} AS lease,
         {} AS resumes,
         {} AS dismissed_at",
        f.id,
        f.name,
        f.status,
        f.last_heartbeat,
        f.checkpoint_step,
        f.checkpoint_state,
        f.lease,
        f.resumes,
        f.dismissed_at,
    )
}

/// Every statement of an install, in order: drop what an earlier install made,
/// create the settings table, triggers and view, stamp the runs live now, and
/// record the config. Run inside one savepoint.
pub fn install_script(cfg: &Config) -> Vec<String> {
    let n = names(cfg);
    let Names {
        table,
        id,
        status,
        meta,
    } = &n;
    let mut out = uninstall_script(false);
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS {SETTINGS_TABLE} (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)"
    ));
    out.push(format!(
        "CREATE TABLE {REPLACED_TABLE} (run_id PRIMARY KEY, meta, status)"
    ));

    // 1. Stamp on every transition into a live status (insert, or update of
    //    status). As with the guard (below), the stamp itself lives in the
    //    INSTEAD OF trigger of an internal view, so the two triggers that
    //    SQLite runs on every insert and status write are a WHEN and one
    //    INSERT: SQLite sets up a trigger's registers for every row it tests,
    //    and the stamp's UPDATE needs many (measured on SQLite 3.40: a
    //    status-only write runs about 5,000 fewer instructions).
    out.push(format!(
        "CREATE VIEW {STAMP} AS SELECT NULL AS run_id WHERE 0"
    ));
    out.push(format!(
        "CREATE TRIGGER {STAMP_TRIGGER} INSTEAD OF INSERT ON {STAMP}
BEGIN
  UPDATE {table} SET {meta} = {} WHERE {id} = NEW.run_id AND {};
END",
        stamped(meta, NOW_MS),
        writable(meta)
    ));
    let stamp = format!("INSERT INTO {STAMP} (run_id) VALUES (NEW.{id});");
    // An insert that replaced a live row is no transition into a live
    // status: no stamp (a stale copy written back with REPLACE must not make
    // a dead run look alive).
    out.push(format!(
        "CREATE TRIGGER run_recovery_stamp_insert AFTER INSERT ON {table}
WHEN {} AND NOT EXISTS (SELECT 1 FROM {REPLACED_TABLE} WHERE run_id = NEW.{id} AND {})
BEGIN
  {stamp}
END",
        live_test(cfg, &format!("NEW.{status}")),
        live_test(cfg, "status")
    ));
    out.push(format!(
        "CREATE TRIGGER run_recovery_stamp_live AFTER UPDATE OF {status} ON {table}
WHEN {} AND {}
BEGIN
  {stamp}
END",
        // The old status first: a move between two live statuses (the
        // common status write, running <-> paused) is decided by one test.
        not_live_test(cfg, &format!("OLD.{status}")),
        live_test(cfg, &format!("NEW.{status}"))
    ));

    // 2. One AFTER UPDATE trigger on the metadata column guards the recovery
    //    keys: fencing (a write that carries an older lease than the row held
    //    is refused; ABORT undoes the whole statement, so refusing after the
    //    write is refusing it) and merge-back (recovery keys a plain write
    //    dropped are restored from the row's previous metadata, one key per
    //    statement; a checkpoint, resume count or recovery log that a write
    //    would move backwards is kept; each statement re-checks against the
    //    current value, so the order in which SQLite runs this and the stamp
    //    triggers does not matter). One trigger, not two: every trigger
    //    program SQLite runs costs, and a BEFORE trigger makes SQLite re-read
    //    the row.
    let (new, old) = (format!("NEW.{meta}"), format!("OLD.{meta}"));
    // The trigger body runs only when its WHEN holds, but SQLite sets up the
    // registers of the whole body for every row the WHEN is tested on: the
    // refusal and the restores therefore live in the INSTEAD OF trigger of
    // the view GUARD_REPAIR, and the guard's own body is one INSERT into it
    // (the old and new metadata passed as values). Measured: a heartbeat
    // written by hand costs about 0.6 µs less on SQLite 3.40 than with the
    // body inline. The same holds for the WHEN itself (its registers are
    // the program's): the guard's WHEN keeps only the two tests that pass
    // most writes (a heartbeat; recovery values unchanged), and the full
    // test (an older lease, a recovery key lost or moved back) is the WHEN
    // of GUARD_CHECK's trigger, which passes the write on to GUARD_REPAIR.
    // Measured (callgrind, SQLite 3.40): a hand-written heartbeat 65.4k ->
    // 61.0k instructions, an app's read-modify-write 155.0k -> 149.8k, a
    // checkpoint (which reaches the full test) 199.3k -> 202.3k.
    let (r_new, r_old) = ("NEW.new_meta", "NEW.old_meta");
    // The written metadata carries an older lease than the row held.
    let stale = format!(
        "CASE WHEN json_valid({r_new}) AND json_valid({r_old}) THEN {} < {} ELSE 0 END",
        int_at(r_new, LEASE),
        int_at(r_old, LEASE)
    );
    let cur = meta.as_str();
    // Per recovery key, given the old metadata `o` and the written `n`:
    // (key, the current row has lost it or moved it back (the body's test),
    //  the write `n` lost it or moved it back (GUARD_CHECK's WHEN)). A key
    // holding JSON null counts as lost (see `has`). Each rule keeps the
    // larger of the old and the new value, so a stale copy written back (the
    // app read the metadata, the executor moved on, the app writes its copy)
    // moves nothing backwards:
    // * lastHeartbeat, resumes, lease: never lower (a lower lease is refused
    //   before, by `stale`);
    // * the checkpoint (step and state as a pair): a lower step is replaced
    //   by the old pair; at the same step the state changes only if the
    //   write carries the current `checkpointRev` (an edit of the current
    //   value, `json_set` on the column, does; a stale copy does not);
    // * recoveryLog: never shorter; dismissedHeartbeat: never dropped.
    let stale_copy = |n: &str| {
        format!(
            "coalesce({}, 0) < coalesce({}, 0)",
            int_at(n, CHECKPOINT_REV),
            int_at(r_old, CHECKPOINT_REV)
        )
    };
    let state_of = |x: &str| format!("({x} -> {CHECKPOINT_STATE_PATH})");
    let behind = |x: &str, key: &str| {
        format!(
            "{} OR {} < {}",
            lacks(x, key),
            int_at(x, key),
            int_at(r_old, key)
        )
    };
    // The checkpoint pair of `x` is behind the old one's (`x` is the written
    // metadata or the current row; the staleness is always the write's).
    let pair_behind = |x: &str| {
        format!(
            "{} OR ({} = {} AND {} AND {} IS NOT {})",
            behind(x, CHECKPOINT_STEP),
            int_at(x, CHECKPOINT_STEP),
            int_at(r_old, CHECKPOINT_STEP),
            stale_copy(r_new),
            state_of(x),
            state_of(r_old)
        )
    };
    // The heartbeat goes back only when the old one is ahead of this
    // database's clock (a host whose clock was ahead: the rightful
    // executor's next heartbeat repairs it), or when the settings allow it
    // on purpose (ALLOW_BACKDATING: tests and demos that age a run).
    let heartbeat_behind = |x: &str| {
        format!(
            "{} OR ({} < {} AND {} <= {NOW_MS} AND coalesce((SELECT value FROM {SETTINGS_TABLE} WHERE key = '{ALLOW_BACKDATING}'), '0') <> '1')",
            lacks(x, LAST_HEARTBEAT),
            int_at(x, LAST_HEARTBEAT),
            int_at(r_old, LAST_HEARTBEAT),
            int_at(r_old, LAST_HEARTBEAT),
        )
    };
    // The state dropped (or nulled) by a write that is no new checkpoint: a
    // checkpoint written by the extension or the actions (its
    // `checkpointRev` is newer) may hold a null state.
    let state_dropped = |x: &str| {
        format!(
            "{} AND coalesce({}, 0) <= coalesce({}, 0)",
            lacks(x, CHECKPOINT_STATE),
            int_at(r_new, CHECKPOINT_REV),
            int_at(r_old, CHECKPOINT_REV)
        )
    };
    let log_shorter = |x: &str| {
        format!(
            "{} OR json_array_length({x}, {RECOVERY_LOG_PATH}) < json_array_length({r_old}, {RECOVERY_LOG_PATH})",
            lacks(x, RECOVERY_LOG)
        )
    };
    // (the key the old metadata must hold, the keys restored from it, the
    //  current row's test, the write's test)
    let restores: Vec<(&str, Vec<&str>, String, String)> = vec![
        (
            LAST_HEARTBEAT,
            vec![LAST_HEARTBEAT],
            heartbeat_behind(cur),
            heartbeat_behind(r_new),
        ),
        (LEASE, vec![LEASE], behind(cur, LEASE), lacks(r_new, LEASE)),
        (
            RESUMES,
            vec![RESUMES],
            behind(cur, RESUMES),
            behind(r_new, RESUMES),
        ),
        (
            CHECKPOINT_STEP,
            vec![CHECKPOINT_STEP, CHECKPOINT_STATE],
            pair_behind(cur),
            pair_behind(r_new),
        ),
        (
            CHECKPOINT_STATE,
            vec![CHECKPOINT_STATE],
            state_dropped(cur),
            state_dropped(r_new),
        ),
        (
            CHECKPOINT_REV,
            vec![CHECKPOINT_REV],
            behind(cur, CHECKPOINT_REV),
            behind(r_new, CHECKPOINT_REV),
        ),
        (
            DISMISSED_HEARTBEAT,
            vec![DISMISSED_HEARTBEAT],
            lacks(cur, DISMISSED_HEARTBEAT),
            lacks(r_new, DISMISSED_HEARTBEAT),
        ),
        (
            RECOVERY_LOG,
            vec![RECOVERY_LOG],
            log_shorter(cur),
            log_shorter(r_new),
        ),
    ];
    let lost = restores
        .iter()
        .map(|(key, _, _, lost)| format!("({} AND ({lost}))", has(r_old, key)))
        .collect::<Vec<_>>()
        .join("\n      OR ");
    let body = restores
        .iter()
        .map(|(key, keys, lost_now, _)| {
            let sets: String = keys
                .iter()
                .map(|k| format!(", '$.{k}', json({r_old} -> '$.{k}')"))
                .collect();
            format!(
                "  UPDATE {table} SET {meta} = json_set(coalesce({meta}, '{{}}'){sets})
    WHERE {id} = NEW.run_id AND {} AND {} AND ({lost_now});",
                writable(meta),
                has(r_old, key)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    // The old metadata holds recovery state: a write of text that is not a
    // JSON object (malformed, an array, JSON5 that SQLite >= 3.45 would
    // read) would lose it, and is refused (NOT_OBJECT_MESSAGE).
    let holds_state = restores
        .iter()
        .map(|(key, _, _, _)| has(r_old, key))
        .collect::<Vec<_>>()
        .join(" OR ");
    // The values that decide, all but the heartbeat, in one call per side
    // (one parse each on SQLite < 3.45): equal means nothing to refuse and
    // nothing to restore unless the heartbeat was dropped or moved back. (A
    // recovery key holding JSON null reads as absent here, as everywhere.)
    let decisive = format!(
        "{LEASE_PATH}, {RESUMES_PATH}, {CHECKPOINT_STEP_PATH}, {CHECKPOINT_STATE_PATH}, {CHECKPOINT_REV_PATH}, {DISMISSED_HEARTBEAT_PATH}, {RECOVERY_LOG_PATH}"
    );
    // The common write (the app's read-modify-write of a fresh copy)
    // carries the heartbeat it read too: one comparison of every recovery
    // key decides it, with no reads of the heartbeat on their own.
    let all_keys = format!("{decisive}, {LAST_HEARTBEAT_PATH}");
    let identical = format!("json_extract({new}, {all_keys}) IS json_extract({old}, {all_keys})");
    let unchanged = format!(
        "json_extract({new}, {decisive}) IS json_extract({old}, {decisive}) \
AND coalesce({} >= {}, {} IS NULL)",
        int_at(&new, LAST_HEARTBEAT),
        int_at(&old, LAST_HEARTBEAT),
        int_at(&old, LAST_HEARTBEAT),
    );
    out.push(format!(
        "CREATE VIEW {GUARD_REPAIR} AS SELECT NULL AS run_id, NULL AS old_meta, NULL AS new_meta WHERE 0"
    ));
    out.push(format!(
        "CREATE TRIGGER {GUARD_REPAIR_TRIGGER} INSTEAD OF INSERT ON {GUARD_REPAIR}
BEGIN
  SELECT RAISE(ABORT, {}) WHERE NOT {};
  SELECT RAISE(ABORT, {}) WHERE {stale};
{body}
END",
        literal(NOT_OBJECT_MESSAGE),
        writable(r_new),
        literal(STALE_LEASE_MESSAGE),
    ));
    out.push(format!(
        "CREATE VIEW {GUARD_CHECK} AS SELECT NULL AS run_id, NULL AS old_meta, NULL AS new_meta WHERE 0"
    ));
    out.push(format!(
        "CREATE TRIGGER {GUARD_CHECK_TRIGGER} INSTEAD OF INSERT ON {GUARD_CHECK}
WHEN ({stale})
      OR (CASE WHEN {} THEN CASE WHEN {} THEN
      {lost}
    ELSE {holds_state} END ELSE 0 END)
BEGIN
  INSERT INTO {GUARD_REPAIR} (run_id, old_meta, new_meta) VALUES (NEW.run_id, {r_old}, {r_new});
END",
        is_object(r_old),
        writable(r_new),
    ));
    out.push(format!(
        "CREATE TRIGGER {GUARD_TRIGGER} AFTER UPDATE OF {meta} ON {table}
WHEN CASE
    WHEN {} THEN 0
    WHEN {new} IS NULL OR NOT json_valid({new}) OR NOT json_valid({old}) THEN 1
    WHEN {identical} THEN 0
    WHEN {unchanged} THEN 0
    ELSE 1
  END
BEGIN
  INSERT INTO {GUARD_CHECK} (run_id, old_meta, new_meta) VALUES (NEW.{id}, {old}, {new});
END",
        only_heartbeat_changed(&new, &old),
    ));

    // 3. REPLACE of an existing run: judged like an UPDATE of its metadata.
    //    The BEFORE trigger empties the table first, so a copy left by an
    //    insert that did not replace (OR IGNORE, an UPSERT's DO UPDATE) is
    //    never read by a later one; the AFTER trigger reads only the copy its
    //    own row's BEFORE trigger made.
    out.push(format!(
        "CREATE TRIGGER {REPLACE_BEFORE_TRIGGER} BEFORE INSERT ON {table}
BEGIN
  DELETE FROM {REPLACED_TABLE};
  INSERT INTO {REPLACED_TABLE} (run_id, meta, status) SELECT {id}, {meta}, {status} FROM {table} WHERE {id} = NEW.{id};
END"
    ));
    out.push(format!(
        "CREATE TRIGGER {REPLACE_AFTER_TRIGGER} AFTER INSERT ON {table}
WHEN EXISTS (SELECT 1 FROM {REPLACED_TABLE} WHERE run_id = NEW.{id})
BEGIN
  INSERT INTO {GUARD_CHECK} (run_id, old_meta, new_meta) SELECT NEW.{id}, meta, NEW.{meta} FROM {REPLACED_TABLE} WHERE run_id = NEW.{id};
END"
    ));

    // 4. Orphan detection for every client.
    out.push(format!(
        "CREATE VIEW {VIEW} AS\n{}",
        orphan_rows_select(
            cfg,
            NOW_MS,
            &cfg.stale_after_ms.to_string(),
            "0",
            OrphanColumns::ALL,
        )
    ));

    // 5. Every action in pure SQL, and the per-run state view.
    out.extend(actions::create_statements(cfg));

    // 6. Runs live right now that never heartbeated get a first stamp, so they are
    //    not orphans before their executor had a chance (an existing heartbeat is kept).
    // Statements (not schema objects) are qualified with the install's
    // schema: a TEMP object of the same name never receives them.
    out.push(format!(
        "UPDATE main.{table} SET {meta} = json_set(json_insert(coalesce({meta}, '{{}}'), {LEASE_PATH}, 1), {LAST_HEARTBEAT_PATH}, {NOW_MS})
WHERE {} AND {} AND {}",
        live_index_test(cfg, status),
        writable(meta),
        format_args!("({meta} IS NULL OR {})", lacks(meta, LAST_HEARTBEAT)),
    ));

    out.push(format!(
        "INSERT OR REPLACE INTO main.{SETTINGS_TABLE} (key, value) VALUES ('config', {}), ('schema_version', '{SCHEMA_VERSION}')",
        literal(&cfg.to_json().to_string())
    ));
    out
}

/// Drops every object install makes; `settings` also drops the settings table.
pub fn uninstall_script(settings: bool) -> Vec<String> {
    let mut out: Vec<String> = TRIGGERS
        .iter()
        .chain(OLD_TRIGGERS.iter())
        .map(|t| format!("DROP TRIGGER IF EXISTS main.{t}"))
        .collect();
    out.extend(
        VIEWS
            .iter()
            .map(|v| format!("DROP VIEW IF EXISTS main.{v}")),
    );
    out.push(format!("DROP TABLE IF EXISTS main.{REPLACED_TABLE}"));
    if settings {
        out.push(format!("DROP TABLE IF EXISTS main.{SETTINGS_TABLE}"));
    }
    out
}

/// The install script as one text, as checked in under `sql/install.sql`.
pub fn install_sql_file(cfg: &Config) -> String {
    let mut s = String::from(
        "-- Generated by run_recovery_install() for the default config; do not edit.\n\
         -- A client without the extension can apply it as-is (sqlite3 db < sql/install.sql).\n\
         -- A test keeps this file equal to what install generates: `make sql` rewrites it.\n",
    );
    s.push_str("SAVEPOINT run_recovery_install;\n");
    for stmt in install_script(cfg) {
        s.push_str(&stmt);
        s.push_str(";\n");
    }
    s.push_str("RELEASE run_recovery_install;\n");
    s
}

/// Statements run by the extension's functions on the calling connection.
pub struct FunctionSql {
    /// `run_heartbeat`'s first try (see `crate::beat`): ?1 id, ?2 now,
    /// ?3 lease or NULL, ?4 the config text. The new metadata comes from
    /// `run_recovery_heartbeat_text`, which raises when it cannot tell.
    pub beat: Arc<str>,
    pub heartbeat: Arc<str>,
    pub heartbeat_forward: String,
    pub checkpoint: Arc<str>,
    pub checkpoint_forward: String,
    pub read_row: String,
    pub write_meta: String,
    pub write_failed: String,
    /// Whether `write_failed` takes ?6 (the time for end_time / updated_at).
    pub write_failed_has_time: bool,
    /// The live runs as `orphaned_runs` computes its rows from them (see
    /// `crate::orphan_rows`): id, name, status, metadata, in id order.
    pub orphan_rows: Arc<str>,
    /// `orphaned_runs`' SELECT per set of columns used (see [`Self::orphans_for`]).
    orphans_by_columns: Mutex<HashMap<OrphanColumns, Arc<str>>>,
    cfg: Config,
}

impl FunctionSql {
    pub fn new(cfg: &Config) -> Self {
        let Names {
            table,
            id,
            status,
            meta,
        } = names(cfg);
        // Top-level statements: qualified with the install's schema, so a
        // TEMP table named like the runs or settings table never receives them.
        let table = format!("main.{table}");
        // ?1 id, ?2 now, ?3 lease or NULL, ?4 the config text these statements
        // were made from (so a changed install is noticed inside the same
        // statement); checkpoint adds ?5 step, ?6 state (JSON text or NULL).
        // Metadata that is not strict JSON (malformed, or JSON5, which
        // SQLite >= 3.45 would otherwise read) changes no row, as the
        // actions decide: the caller then reads the row to say why.
        let guard = format!(
            "{id} = ?1 AND {FRESH_FUNCTION}() AND {} AND {} \
AND (?3 IS NULL OR coalesce({}, 1) = ?3) \
AND (SELECT value FROM main.{SETTINGS_TABLE} WHERE key = 'config') = ?4",
            live_test(cfg, &status),
            writable(&meta),
            int_at(&meta, LEASE)
        );
        let hb = int_at(&meta, LAST_HEARTBEAT);
        let forward = stamped_heartbeat("?2", &hb, cfg.stale_after_ms);
        // Fast: the stored heartbeat is not ahead of `now`, so the new one is
        // exactly ?2 and no RETURNING (an ephemeral table) is needed.
        // The heartbeat is written as the last key, so the triggers skip it
        // with string tests (see `only_heartbeat_changed`).
        let heartbeat = format!(
            "UPDATE {table} SET {meta} = {}
WHERE {guard} AND coalesce({hb}, 0) <= ?2",
            with_heartbeat_last(&meta, "?2")
        );
        // Forward: a heartbeat ahead of the clock (another host's clock) is kept.
        let heartbeat_forward = format!(
            "UPDATE {table} SET {meta} = {}
WHERE {guard}
RETURNING {hb}",
            with_heartbeat_last(&meta, &forward)
        );
        let step_ok = format!("coalesce({}, -1) <= ?5", int_at(&meta, CHECKPOINT_STEP));
        let checkpoint = format!(
            "UPDATE {table} SET {meta} = {}
WHERE {guard} AND {step_ok} AND coalesce({hb}, 0) <= ?2",
            checkpointed(&meta, "?2", "?5", "?6")
        );
        let checkpoint_forward = format!(
            "UPDATE {table} SET {meta} = {}
WHERE {guard} AND {step_ok}
RETURNING {hb}",
            checkpointed(&meta, &forward, "?5", "?6")
        );
        let read_row = format!("SELECT {status}, {meta} FROM {table} WHERE {id} = ?1");
        // The UPDATE's WHERE holds the preconditions that need no JSON; the
        // function checks the rest on the text, in one pass.
        let beat = format!(
            "UPDATE {table} SET {meta} = {BEAT_FUNCTION}({meta}, ?2, ?3) WHERE {id} = ?1 \
AND {} AND (SELECT value FROM main.{SETTINGS_TABLE} WHERE key = 'config') = ?4",
            live_test(cfg, &status)
        );
        // Compare-and-set: acts only if status and metadata are still what was read.
        let write_meta = format!(
            "UPDATE {table} SET {meta} = ?3 WHERE {id} = ?1 AND {status} IS ?4 AND {meta} IS ?2"
        );
        let mut sets = vec![format!("{status} = ?5"), format!("{meta} = ?3")];
        for col in [&cfg.end_time_column, &cfg.updated_at_column]
            .into_iter()
            .flatten()
        {
            sets.push(format!("{} = ?6", ident(col)));
        }
        let write_failed_has_time = sets.len() > 2;
        let write_failed = format!(
            "UPDATE {table} SET {} WHERE {id} = ?1 AND {status} IS ?4 AND {meta} IS ?2",
            sets.join(", ")
        );
        let orphan_rows = format!(
            "SELECT {id}, {}, {status}, {meta} FROM {table} WHERE {} ORDER BY {id}",
            RunFields::new(cfg, &names(cfg)).name,
            live_index_test(cfg, &status)
        );
        FunctionSql {
            beat: beat.into(),
            orphan_rows: orphan_rows.into(),
            heartbeat: heartbeat.into(),
            heartbeat_forward,
            checkpoint: checkpoint.into(),
            checkpoint_forward,
            read_row,
            write_meta,
            write_failed,
            write_failed_has_time,
            orphans_by_columns: Mutex::default(),
            cfg: cfg.clone(),
        }
    }

    /// `orphaned_runs`' SELECT computing only `cols` (the others NULL), made
    /// once per set of columns (at most 1,024) and kept; ?1 now, ?2
    /// threshold, ?3 include_dismissed.
    pub fn orphans_for(&self, cols: OrphanColumns) -> Arc<str> {
        let mut made = self
            .orphans_by_columns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        made.entry(cols)
            .or_insert_with(|| orphan_select(&self.cfg, "?1", "?2", "?3", cols).into())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("x`; DROP TABLE y; --"), "`x``; DROP TABLE y; --`");
        assert_eq!(ident(r#"x"y"#), r#"`x"y`"#);
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn no_statement_relies_on_a_double_quoted_name() {
        // SQLite reads a double-quoted name that matches no column as a
        // string: every configured name is written in backticks instead.
        let cfg = Config::default();
        let f = FunctionSql::new(&cfg);
        let mut all = install_script(&cfg);
        all.extend(uninstall_script(true));
        all.extend(
            [
                &*f.beat,
                &*f.heartbeat,
                &f.heartbeat_forward,
                &*f.checkpoint,
                &f.checkpoint_forward,
                &f.read_row,
                &f.write_meta,
                &f.write_failed,
                &*f.orphan_rows,
                &*f.orphans_for(OrphanColumns::ALL),
            ]
            .map(|s| s.to_string()),
        );
        let names = [
            &cfg.table,
            &cfg.id_column,
            &cfg.status_column,
            &cfg.metadata_column,
        ];
        // (The config JSON that install stores names them in a string.)
        for stmt in all.iter().filter(|s| !s.contains("('config', ")) {
            for n in names {
                assert!(
                    !stmt.contains(&format!("\"{n}\"")),
                    "{n} double-quoted in {stmt}"
                );
            }
        }
        assert!(all.iter().any(|s| s.contains("`properties_json`")));
    }

    #[test]
    fn hostile_names_stay_inside_quotes() {
        let cfg = Config {
            table: "x`; DROP TABLE y; --".into(),
            ..Config::default()
        };
        for stmt in install_script(&cfg) {
            assert!(!stmt.contains("`x`; DROP"), "unquoted identifier in {stmt}");
        }
    }

    #[test]
    fn the_live_case_tests_every_spelling_hot_ones_first_capitalized_last() {
        let mut cfg = Config::default();
        let order = case_spellings(&cfg);
        let mut all: Vec<String> = cfg
            .live_statuses
            .iter()
            .flat_map(|s| spellings(s))
            .collect();
        all.sort();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, all, "each spelling once, none missing");
        assert_eq!(order[..4], ["running", "RUNNING", "paused", "PAUSED"]);
        let first_capitalized = order.iter().position(|s| s == "Running").unwrap();
        assert_eq!(first_capitalized, 2 * cfg.live_statuses.len());
        assert!(order[first_capitalized..].iter().all(|s| s
            .chars()
            .next()
            .unwrap()
            .is_uppercase()
            && s.chars().skip(1).any(|c| c.is_lowercase())));
        // A configured list without the hot statuses keeps its own order.
        cfg.live_statuses = vec!["Active".into(), "waiting".into()];
        assert_eq!(
            case_spellings(&cfg),
            ["active", "ACTIVE", "waiting", "WAITING", "Active", "Waiting"]
        );
        // A NULL or unknown status: not live, so the old-status test says 1.
        let not_live = not_live_test(&cfg, "s");
        assert!(
            not_live.starts_with("CASE s WHEN 'active' THEN 0") && not_live.ends_with("ELSE 1 END")
        );
        assert!(live_test(&cfg, "s").ends_with("WHEN 'Waiting' THEN 1 ELSE 0 END"));
    }

    #[test]
    fn the_orphan_query_names_every_spelling_of_live_statuses() {
        let sql = orphan_select(&Config::default(), "?1", "?2", "?3", OrphanColumns::ALL);
        for s in [
            "'running'",
            "'RUNNING'",
            "'Running'",
            "'requires_intervention'",
        ] {
            assert!(sql.contains(s), "{s} missing");
        }
        assert!(!sql.contains("'completed'"));
    }

    #[test]
    fn install_script_creates_every_object() {
        let all = install_script(&Config::default()).join("\n");
        for t in TRIGGERS {
            assert!(all.contains(&format!("CREATE TRIGGER {t}")), "{t}");
        }
        assert!(all.contains("CREATE VIEW run_recovery_orphans"));
    }
}
