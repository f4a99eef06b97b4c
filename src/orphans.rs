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
//! It gives the rows of the `run_recovery_orphans` view, oldest heartbeat
//! first. `xFilter` first computes them in Rust from the live runs'
//! metadata (see [`crate::orphan_rows`]); when that is not sure to match the
//! view's SQL, it runs the view's SELECT (see
//! [`crate::sqlgen::orphan_select`]), made for the columns the query reads,
//! and streams its rows: each `xNext` steps the SELECT, each `xColumn` hands
//! SQLite the SELECT's own value. Both read the live runs from the status
//! index. The prepared SELECTs are kept in a pool owned by the table
//! (finalized when SQLite disconnects it), so a query prepares nothing once
//! its SELECT has run before.
//!
//! Nothing here may panic: rusqlite does not catch panics in virtual-table
//! callbacks, so every lookup is checked.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::vtab::{
    Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor,
};
use rusqlite::{ffi, Connection, Result};

use crate::args;
use crate::errors::{bad_argument, Expected};
use crate::orphan_rows::{Fields, Rows};
use crate::sqlgen::OrphanColumns;
use crate::state::{now_ms, Installed, Outcome, Shared};
use crate::stmt::{self, Prepared};

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
/// How many visible columns there are (the SELECT's; the hidden inputs follow).
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
    /// The SELECTs prepared for earlier queries, ready for the next cursor.
    pool: Pool,
}

impl Drop for OrphansTab {
    fn drop(&mut self) {
        // xDisconnect: release the statement cache before SQLite closes.
        self.shared.vtab_disconnected();
        // The pooled statements are finalized with `pool` (before the
        // connection closes: SQLite disconnects the table first).
    }
}

/// Prepared SELECTs not in use by a cursor. A cursor takes one (or prepares
/// one) in `filter` and gives it back when it closes, so a query prepares
/// nothing once its SELECT has run before.
type Pool = Rc<RefCell<Vec<Prepared>>>;

/// At most this many idle statements are kept (one per set of columns read).
const POOL_MAX: usize = 8;

/// The error SQLite reports for `rc` on `db`, named for `orphaned_runs`.
///
/// # Safety
/// `db` is an open connection handle.
unsafe fn sqlite_error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    // SAFETY: the caller's contract.
    crate::errors::wrap(F, unsafe { stmt::error(db, rc) })
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
            pool: Pool::default(),
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
            pool: self.pool.clone(),
            stmt: None,
            on_row: false,
            row: 0,
            inputs: [Value::Null, Value::Null, Value::Null],
            computed: None,
            phantom: PhantomData,
        })
    }
}

/// Hands out the rows computed in `filter` (see [`crate::orphan_rows`]),
/// or streams the rows of the view's SELECT: `filter` steps to the first
/// row, `next` to the following ones, and `column` hands SQLite the
/// statement's own values (no copy of the rows is made).
#[repr(C)]
pub(crate) struct OrphansCursor<'vtab> {
    /// Base class. Must be first.
    base: ffi::sqlite3_vtab_cursor,
    db: *mut ffi::sqlite3,
    shared: Arc<Shared>,
    pool: Pool,
    /// The SELECT this cursor runs (taken from the pool in `filter`).
    stmt: Option<Prepared>,
    /// Whether `stmt` points at a row.
    on_row: bool,
    /// The number of the current row (the rowid).
    row: i64,
    /// threshold_ms, now_ms, include_dismissed as used.
    inputs: [Value; 3],
    /// The rows computed in Rust (see [`crate::orphan_rows`]) and the
    /// current one; `None` when the rows come from `stmt`.
    computed: Option<(Rows, usize)>,
    phantom: PhantomData<&'vtab OrphansTab>,
}

impl OrphansCursor<'_> {
    /// Resets the statement (if any) and gives it back to the pool.
    fn release(&mut self) {
        self.on_row = false;
        if let Some(p) = self.stmt.take() {
            // SAFETY: the statement is ours and alive; reset ends its run.
            unsafe {
                ffi::sqlite3_reset(p.as_ptr());
            }
            if let Ok(mut pool) = self.pool.try_borrow_mut() {
                if pool.len() < POOL_MAX {
                    pool.push(p);
                }
            }
        }
    }

    /// A statement for `sql`: this cursor's, a pooled one, or a new one.
    fn take(&mut self, sql: Arc<str>) -> Result<NonNull<ffi::sqlite3_stmt>> {
        if let Some(p) = self.stmt.as_ref().filter(|p| p.is(&sql)) {
            // SAFETY: the statement is ours and alive.
            unsafe {
                ffi::sqlite3_reset(p.as_ptr());
            }
            return Ok(p.handle());
        }
        self.release();
        let pooled = self.pool.try_borrow_mut().ok().and_then(|mut pool| {
            let i = pool.iter().position(|p| p.is(&sql))?;
            Some(pool.swap_remove(i))
        });
        let p = match pooled {
            Some(p) => p,
            // SAFETY: `self.db` is the connection this table was connected
            // on; SQLite calls xFilter on its thread, and closes every cursor
            // and disconnects the table (dropping the pool) before closing it.
            None => unsafe { Prepared::new(self.db, sql).map_err(|e| crate::errors::wrap(F, e))? },
        };
        let stmt = p.handle();
        self.stmt = Some(p);
        Ok(stmt)
    }

    /// Steps the statement to its next row.
    fn step(&mut self) -> Result<()> {
        self.on_row = false;
        let Some(p) = &self.stmt else {
            return Ok(());
        };
        // SAFETY: the statement is ours, alive and bound; SQLite calls
        // xFilter/xNext on the connection's thread.
        let rc = unsafe { ffi::sqlite3_step(p.as_ptr()) };
        match rc {
            ffi::SQLITE_ROW => {
                self.on_row = true;
                self.row += 1;
                Ok(())
            }
            ffi::SQLITE_DONE => Ok(()),
            // SAFETY: `self.db` is open (see `take`).
            rc => Err(unsafe { sqlite_error(self.db, rc) }),
        }
    }

    /// The rows computed in Rust from the live runs `sql` reads (see
    /// [`crate::orphan_rows`]): `None` when they cannot be computed exactly,
    /// and the view's SELECT is to run instead.
    fn compute(
        &mut self,
        sql: Arc<str>,
        now: i64,
        threshold: i64,
        ahead_ms: i64,
        include: bool,
    ) -> Result<Option<Rows>> {
        self.take(sql)?;
        let mut rows = Rows::default();
        let mut sure = true;
        self.step()?;
        while self.on_row {
            let meta = match self.value(3) {
                ValueRef::Null => None,
                ValueRef::Text(t) => Some(t),
                _ => {
                    sure = false;
                    break;
                }
            };
            let added = Fields::read(meta).and_then(|fields| {
                let cells = [self.value(0), self.value(1), self.value(2)];
                rows.add(cells, meta, fields, [now, threshold, ahead_ms], include)
            });
            if added.is_none() {
                sure = false;
                break;
            }
            self.step()?;
        }
        self.release();
        self.row = 0;
        Ok(sure.then(|| {
            rows.sort();
            rows
        }))
    }

    /// Column `i` of the current row as SQLite holds it (valid until the next step).
    fn value(&self, i: c_int) -> ValueRef<'_> {
        let (Some(p), true) = (&self.stmt, self.on_row) else {
            return ValueRef::Null;
        };
        // SAFETY: the statement is on a row and `i` is below its column
        // count (checked by the caller); the value, and the text or blob it
        // points at, stay valid until the statement steps or resets, which
        // needs `&mut self`, so not while the returned borrow lives.
        unsafe {
            let v = ffi::sqlite3_column_value(p.as_ptr(), i);
            if v.is_null() {
                return ValueRef::Null;
            }
            let bytes = |data: *const u8| -> &[u8] {
                let n = usize::try_from(ffi::sqlite3_value_bytes(v)).unwrap_or(0);
                if data.is_null() || n == 0 {
                    &[]
                } else {
                    std::slice::from_raw_parts(data, n)
                }
            };
            match ffi::sqlite3_value_type(v) {
                ffi::SQLITE_INTEGER => ValueRef::Integer(ffi::sqlite3_value_int64(v)),
                ffi::SQLITE_FLOAT => ValueRef::Real(ffi::sqlite3_value_double(v)),
                ffi::SQLITE_TEXT => ValueRef::Text(bytes(ffi::sqlite3_value_text(v))),
                ffi::SQLITE_BLOB => ValueRef::Blob(bytes(ffi::sqlite3_value_blob(v).cast())),
                _ => ValueRef::Null,
            }
        }
    }
}

impl Drop for OrphansCursor<'_> {
    fn drop(&mut self) {
        // xClose: the statement goes back to the pool for the next query.
        self.release();
    }
}

// SAFETY: `base` is first and #[repr(C)], as the trait requires.
unsafe impl VTabCursor for OrphansCursor<'_> {
    fn filter(&mut self, idx_num: c_int, _idx_str: Option<&str>, args: &Filters<'_>) -> Result<()> {
        self.on_row = false;
        self.row = 0;
        self.computed = None;
        if let Some(p) = &self.stmt {
            // SAFETY: the statement is ours and alive; a new scan starts
            // from a reset statement (even one that ends below with no rows).
            unsafe {
                ffi::sqlite3_reset(p.as_ptr());
            }
        }
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
        let run = |_: &Connection, inst: &Installed| -> Outcome<(Arc<str>, i64, Arc<str>, i64)> {
            let threshold = threshold.flatten().unwrap_or(inst.cfg.stale_after_ms);
            Ok((
                inst.sql.orphans_for(cols),
                threshold,
                inst.sql.orphan_rows.clone(),
                inst.cfg.stale_after_ms,
            ))
        };
        // SAFETY: `self.db` is the connection this table was connected on,
        // which `shared` was registered on; SQLite calls xFilter on that
        // connection's thread, and disconnects the table before closing it.
        let (sql, threshold, rows_sql, ahead_ms) =
            unsafe { self.shared.run_on(self.db, run) }.map_err(|f| f.into_sql(F, ""))?;
        self.inputs = [
            Value::Integer(threshold),
            Value::Integer(now),
            Value::Integer(include),
        ];
        if let Some(rows) = self.compute(rows_sql, now, threshold, ahead_ms, include == 1)? {
            self.row = 1;
            self.computed = Some((rows, 0));
            return Ok(());
        }
        let stmt = self.take(sql)?;
        for (i, v) in [now, threshold, include].into_iter().enumerate() {
            // SAFETY: the statement is ours and reset; parameters ?1..?3.
            let rc = unsafe { ffi::sqlite3_bind_int64(stmt.as_ptr(), i as c_int + 1, v) };
            if rc != ffi::SQLITE_OK {
                // SAFETY: `self.db` is open (see above).
                return Err(unsafe { sqlite_error(self.db, rc) });
            }
        }
        self.row = 0;
        self.step()
    }

    fn next(&mut self) -> Result<()> {
        match &mut self.computed {
            Some((_, at)) => {
                *at += 1;
                self.row += 1;
                Ok(())
            }
            None => self.step(),
        }
    }

    fn eof(&self) -> bool {
        match &self.computed {
            Some((rows, at)) => *at >= rows.len(),
            None => !self.on_row,
        }
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> Result<()> {
        match usize::try_from(i) {
            Ok(c) if c < VISIBLE => ctx.set_result(&ToSqlOutput::Borrowed(match &self.computed {
                Some((rows, at)) => rows.value(*at, c),
                None => self.value(i),
            })),
            Ok(c) => match self.inputs.get(c - VISIBLE) {
                Some(v) => ctx.set_result(v),
                None => ctx.set_result(&Value::Null),
            },
            Err(_) => ctx.set_result(&Value::Null),
        }
    }

    fn rowid(&self) -> Result<i64> {
        Ok(self.row)
    }
}
