//! `orphaned_runs`: the eponymous table-valued function listing live runs
//! whose heartbeat is stale.
//!
//! ```sql
//! SELECT * FROM orphaned_runs;                  -- the configured threshold
//! SELECT * FROM orphaned_runs(5000);            -- threshold_ms
//! SELECT * FROM orphaned_runs(5000, 1700000000000);   -- threshold_ms, now_ms
//! SELECT * FROM orphaned_runs WHERE include_dismissed = 1;
//! ```
//!
//! It runs the same SELECT as the `run_recovery_orphans` view (see
//! [`crate::sqlgen::orphan_select`]), which SQLite serves from the status
//! index, and hands the rows out oldest heartbeat first.
//!
//! Nothing here may panic: rusqlite does not catch panics in virtual-table
//! callbacks, so every lookup is checked.

use std::borrow::Cow;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor,
};
use rusqlite::{ffi, params, Connection, Result};

use crate::args;
use crate::errors::{bad_argument, Expected};
use crate::sqlgen::OrphanColumns;
use crate::state::{now_ms, Installed, Outcome, Shared};

const F: &str = "orphaned_runs";

/// The table's columns, in declaration order (as series.c names its
/// `SERIES_COLUMN_*`): the visible ones, then the hidden inputs.
/// Only some are matched in `best_index`; the others name their numbers.
#[allow(dead_code)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(i32)]
enum Col {
    RunId = 0,
    Name,
    Status,
    LastHeartbeat,
    AgeMs,
    CheckpointStep,
    CheckpointState,
    Lease,
    Resumes,
    Dismissed,
    /// Hidden input: the threshold in milliseconds.
    ThresholdMs,
    /// Hidden input: the clock in Unix epoch milliseconds.
    NowMs,
    /// Hidden input: 1 to list dismissed orphans too.
    IncludeDismissed,
}

impl Col {
    /// The hidden inputs, in the order `filter` receives them (bit `1 << i`
    /// of idxNum is input `i`).
    const INPUTS: [Col; 3] = [Col::ThresholdMs, Col::NowMs, Col::IncludeDismissed];

    /// Whether SQLite's column number `i` is this column.
    fn is(self, i: c_int) -> bool {
        self as c_int == i
    }
}

const SCHEMA: &CStr = c"CREATE TABLE x(run_id, name, status, last_heartbeat, age_ms, \
checkpoint_step, checkpoint_state, lease, resumes, dismissed, \
threshold_ms HIDDEN, now_ms HIDDEN, include_dismissed HIDDEN)";
/// How many columns a row of [`Rows`] holds: the visible ones.
const VISIBLE: usize = Col::ThresholdMs as usize;
const _: () = assert!(crate::sqlgen::ORPHAN_COLUMNS.len() == VISIBLE);
/// Where the visible columns a plan reads start in its idxNum (above the inputs).
const COLUMNS_SHIFT: u32 = Col::INPUTS.len() as u32;

/// The visible columns of SQLite's colUsed mask (bit `1 << i`: column `i`).
fn columns_used(col_used: u64) -> c_int {
    (col_used & OrphanColumns::ALL.0 as u64) as c_int
}

/// Whether the rows come out in the order `ORDER BY <order_bys>` asks for.
///
/// The query sorts by `coalesce(last_heartbeat, 0), run_id` (see
/// [`crate::sqlgen::orphan_select`]). `age_ms` is `now - coalesce(last_heartbeat, 0)`,
/// so the rows are exactly in `age_ms DESC` order; that is the one order
/// claimed. `ORDER BY last_heartbeat` is not: SQLite puts NULL first, the
/// query puts it where 0 would be (after negative heartbeats).
fn order_is_produced(mut order_bys: impl Iterator<Item = (c_int, bool)>) -> bool {
    matches!(order_bys.next(), Some((c, true)) if Col::AgeMs.is(c)) && order_bys.next().is_none()
}

pub(crate) fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    const MODULE: Module<OrphansTab> = Module::eponymous_only_module();
    db.create_module(c"orphaned_runs", &MODULE, Some(shared.clone()))
}

#[repr(C)]
pub(crate) struct OrphansTab {
    /// Base class. Must be first.
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    shared: Arc<Shared>,
}

impl Drop for OrphansTab {
    fn drop(&mut self) {
        // xDisconnect: release the statement cache before SQLite closes.
        self.shared.vtab_disconnected();
    }
}

// SAFETY: the vtab declares its schema in `connect` exactly as SQLite
// expects and keeps `base` first (#[repr(C)]), as the trait requires.
unsafe impl<'vtab> VTab<'vtab> for OrphansTab {
    type Aux = Arc<Shared>;
    type Cursor = OrphansCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&Arc<Shared>>,
        _module_name: &[u8],
        _database_name: &[u8],
        _table_name: &[u8],
        _args: &[&[u8]],
    ) -> Result<(Cow<'static, CStr>, Self)> {
        let shared = aux
            .cloned()
            .ok_or_else(|| crate::errors::internal("orphaned_runs registered without state"))?;
        db.config(VTabConfig::Innocuous)?;
        shared.vtab_connected();
        let vtab = OrphansTab {
            base: ffi::sqlite3_vtab::default(),
            // SAFETY: the raw handle is kept to run queries on this same
            // connection from `filter`; SQLite disconnects the table before
            // the connection closes.
            db: unsafe { db.handle() },
            shared,
        };
        Ok((Cow::Borrowed(SCHEMA), vtab))
    }

    /// idxNum bit `1 << i` is set when input [`Col::INPUTS`]`[i]` has an
    /// `=` constraint; `filter` receives the present ones as arguments in
    /// that order. The bits from [`COLUMNS_SHIFT`] up say which visible
    /// columns the query reads (SQLite's colUsed): the SELECT computes only
    /// those (the others are NULL, and SQLite never asks for them). An unusable constraint on an input column rejects the plan
    /// (SQLITE_CONSTRAINT), as series.c does.
    ///
    /// Cost: every plan runs the same one query over the live rows (served
    /// from the status index), estimated at 100 orphans. An input that is
    /// pushed down is omitted from SQLite's own per-row checks, so each one
    /// consumed makes the plan a little cheaper; no other constraint is used.
    fn best_index(&self, info: &mut IndexInfo) -> Result<bool> {
        let mut slots: [Option<usize>; 3] = [None; 3];
        let mut unusable = 0;
        for (i, c) in info.constraints().enumerate() {
            let Some(bit) = Col::INPUTS.iter().position(|x| x.is(c.column())) else {
                continue;
            };
            if !c.is_usable() {
                unusable |= 1 << bit;
            } else if c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
                slots[bit] = Some(i);
            }
        }
        let mut idx_num = 0;
        let mut argv = 0;
        for (bit, slot) in slots.iter().enumerate() {
            if let Some(i) = *slot {
                idx_num |= 1 << bit;
                argv += 1;
                let mut usage = info.constraint_usage(i);
                usage.set_argv_index(argv);
                usage.set_omit(true);
            }
        }
        if unusable & !idx_num != 0 {
            return Ok(false);
        }
        let consumed = order_is_produced(
            info.order_bys()
                .map(|ob| (ob.column(), ob.is_order_by_desc())),
        );
        info.set_order_by_consumed(consumed);
        info.set_idx_num(idx_num | columns_used(info.col_used()) << COLUMNS_SHIFT);
        info.set_estimated_rows(100);
        info.set_estimated_cost(100.0 - 10.0 * f64::from(argv));
        Ok(true)
    }

    fn open(&'vtab mut self) -> Result<OrphansCursor<'vtab>> {
        Ok(OrphansCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            db: self.db,
            shared: self.shared.clone(),
            rows: Rows::default(),
            pos: 0,
            inputs: [Value::Null, Value::Null, Value::Null],
            phantom: PhantomData,
        })
    }
}

#[repr(C)]
pub(crate) struct OrphansCursor<'vtab> {
    /// Base class. Must be first.
    base: ffi::sqlite3_vtab_cursor,
    db: *mut ffi::sqlite3,
    shared: Arc<Shared>,
    rows: Rows,
    pos: usize,
    /// threshold_ms, now_ms, include_dismissed as used.
    inputs: [Value; 3],
    phantom: PhantomData<&'vtab OrphansTab>,
}

/// The rows of one query, stored flat (`VISIBLE` cells a row) with every
/// text in one buffer: no allocation per value, no UTF-8 re-validation; the
/// cells are handed to SQLite as they came from it.
#[derive(Default)]
struct Rows {
    cells: Vec<Cell>,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    /// A range of `Rows::bytes`.
    Text(usize, usize),
    Blob(usize, usize),
}

impl Rows {
    fn clear(&mut self) {
        self.cells.clear();
        self.bytes.clear();
    }

    fn push(&mut self, v: ValueRef<'_>) {
        let mut range = |b: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            (start, self.bytes.len())
        };
        let cell = match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Integer(i),
            ValueRef::Real(r) => Cell::Real(r),
            ValueRef::Text(t) => {
                let (a, b) = range(t);
                Cell::Text(a, b)
            }
            ValueRef::Blob(t) => {
                let (a, b) = range(t);
                Cell::Blob(a, b)
            }
        };
        self.cells.push(cell);
    }

    fn len(&self) -> usize {
        self.cells.len() / VISIBLE
    }

    /// Column `col` of row `row`; `None` when out of range (never panics).
    fn get(&self, row: usize, col: usize) -> Option<ValueRef<'_>> {
        let at = row.checked_mul(VISIBLE)?.checked_add(col)?;
        Some(match *self.cells.get(at)? {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(i),
            Cell::Real(r) => ValueRef::Real(r),
            Cell::Text(a, b) => ValueRef::Text(self.bytes.get(a..b)?),
            Cell::Blob(a, b) => ValueRef::Blob(self.bytes.get(a..b)?),
        })
    }
}

// SAFETY: `base` is first and #[repr(C)], as the trait requires.
unsafe impl VTabCursor for OrphansCursor<'_> {
    fn filter(&mut self, idx_num: c_int, _idx_str: Option<&str>, args: &Filters<'_>) -> Result<()> {
        self.rows.clear();
        self.pos = 0;
        let mut next = 0;
        let mut take = |bit: c_int| -> Option<ValueRef<'_>> {
            if idx_num & bit == 0 {
                return None;
            }
            let v = args.iter().nth(next);
            next += 1;
            v
        };
        let cols =
            OrphanColumns(((idx_num >> COLUMNS_SHIFT) & c_int::from(OrphanColumns::ALL.0)) as u16);
        let threshold = take(1 << 0);
        let now = take(1 << 1);
        let include = take(1 << 2);
        let threshold = threshold
            .map(|v| args::int_or_null(F, "threshold_ms", v, 0))
            .transpose()?;
        let now = now
            .map(|v| args::int_or_null(F, "now_ms", v, 0))
            .transpose()?;
        let include = include
            .map(|v| match v {
                ValueRef::Null => Ok(None),
                ValueRef::Integer(i @ (0 | 1)) => Ok(Some(i)),
                other => Err(bad_argument(F, Expected::IncludeDismissed, other)),
            })
            .transpose()?;
        // A NULL input gives no rows, like generate_series.
        if threshold == Some(None) || now == Some(None) || include == Some(None) {
            return Ok(());
        }
        let include = include.flatten().unwrap_or(0);
        let now = now.flatten().unwrap_or_else(now_ms);
        let mut rows = std::mem::take(&mut self.rows);
        let run = |conn: &Connection, inst: &Installed| -> Outcome<i64> {
            let threshold = threshold.flatten().unwrap_or(inst.cfg.stale_after_ms);
            let mut stmt = conn.prepare_cached(&inst.sql.orphans_for(cols))?;
            let mut q = stmt.query(params![now, threshold, include])?;
            while let Some(r) = q.next()? {
                for i in 0..VISIBLE {
                    // A column the query does not read is NULL: not fetched.
                    rows.push(if cols.has(i) {
                        r.get_ref(i)?
                    } else {
                        ValueRef::Null
                    });
                }
            }
            Ok(threshold)
        };
        // SAFETY: `self.db` is the connection this table was connected on,
        // which `shared` was registered on; SQLite calls xFilter on that
        // connection's thread, and disconnects the table before closing it.
        let threshold = unsafe { self.shared.run_on(self.db, run) }.map_err(|f| f.into_sql(F, ""));
        self.rows = rows;
        let threshold = match threshold {
            Ok(t) => t,
            Err(e) => {
                self.rows.clear();
                return Err(e);
            }
        };
        self.inputs = [
            Value::Integer(threshold),
            Value::Integer(now),
            Value::Integer(include),
        ];
        Ok(())
    }

    fn next(&mut self) -> Result<()> {
        self.pos += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.pos >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> Result<()> {
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        if i < VISIBLE {
            let v = self.rows.get(self.pos, i).unwrap_or(ValueRef::Null);
            ctx.set_result(&ToSqlOutput::Borrowed(v))
        } else {
            match self.inputs.get(i - VISIBLE) {
                Some(v) => ctx.set_result(v),
                None => ctx.set_result(&Value::Null),
            }
        }
    }

    fn rowid(&self) -> Result<i64> {
        Ok(self.pos as i64)
    }
}
