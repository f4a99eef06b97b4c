//! `run_heartbeat(id [, lease])` and `run_checkpoint(id, step [, state [, lease]])`.
//!
//! A heartbeat first tries to set the heartbeat in place: an UPDATE whose
//! new metadata comes from `run_recovery_heartbeat_text` (see
//! [`crate::beat`]), which declines when it is not sure. Then, as for every
//! checkpoint, the fast path is one UPDATE whose WHERE clause holds every
//! precondition (the install is unchanged, the run exists and is live, its
//! metadata is an object or NULL, the lease matches, the checkpoint does not
//! go backwards, the stored heartbeat is not ahead of the clock). Only when it changes no
//! row does [`check`] read the row to say which precondition failed; a
//! heartbeat ahead of the clock (another host's) is then kept by the
//! `_forward` statements, so a heartbeat never moves backwards.

use std::sync::Arc;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::Value;
use rusqlite::{ffi, params, Connection, OptionalExtension, Result};

use crate::errors::Refusal;
use crate::metadata::{parse, State};
use crate::state::{now_ms, Installed, Outcome, Shared, Stmts};
use crate::stmt::Bind;
use crate::{args, WRITER};

/// A stamp asked for: a heartbeat, or a checkpoint (`step`, `state` as JSON
/// text or NULL) with its heartbeat, fenced with `lease` when given.
pub(crate) struct Stamp<'a> {
    pub id: &'a Value,
    pub lease: Option<i64>,
    pub checkpoint: Option<(i64, Option<&'a str>)>,
    pub now: i64,
}

/// The fast statement: `Some(now)`, or `None` when it changed no row.
/// `config` is the stored config text `inst` was built from.
fn attempt(
    stmts: &mut Stmts<'_>,
    inst: &Installed,
    config: &str,
    s: &Stamp<'_>,
) -> Result<Option<i64>> {
    let (id, now, lease, config) = (
        Bind::from(s.id),
        Bind::Int(s.now),
        Bind::from(s.lease),
        Bind::Text(config),
    );
    if s.checkpoint.is_none() {
        // The heartbeat set in place (see crate::beat); when the function
        // declines, the SQL UPDATE below decides. No row changed: the SQL
        // UPDATE would change none either (its WHERE holds this one's).
        crate::beat::take_declined();
        match stmts.execute(&inst.sql.beat, &[id, now, lease, config]) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(s.now)),
            Err(e) if !crate::beat::take_declined() => return Err(e),
            // Declined because the schema changed: nothing more here.
            Err(_) if crate::stmt::stale_seen() => return Ok(None),
            Err(_) => {}
        }
    }
    let changed = match s.checkpoint {
        None => stmts.execute(&inst.sql.heartbeat, &[id, now, lease, config])?,
        Some((step, state)) => stmts.execute(
            &inst.sql.checkpoint,
            &[id, now, lease, config, Bind::Int(step), Bind::from(state)],
        )?,
    };
    Ok((changed > 0).then_some(s.now))
}

/// When the fast statement changed nothing: says why, or, when nothing is
/// wrong but the stored heartbeat is ahead of the clock, writes with that
/// heartbeat kept and returns it.
fn slow_path(conn: &Connection, inst: &Installed, config: &str, s: &Stamp<'_>) -> Outcome<i64> {
    check(conn, inst, s)?;
    let forward = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Option<i64>> {
        conn.prepare_cached(sql)?
            .query_row(p, |r| r.get::<_, i64>(0))
            .optional()
    };
    let out = match s.checkpoint {
        None => forward(
            &inst.sql.heartbeat_forward,
            params![s.id, s.now, s.lease, config],
        )?,
        Some((step, state)) => forward(
            &inst.sql.checkpoint_forward,
            params![s.id, s.now, s.lease, config, step, state],
        )?,
    };
    match out {
        Some(hb) => Ok(hb),
        None => {
            // Changed under us: say what is wrong now, if anything.
            check(conn, inst, s)?;
            Err(Refusal::ChangedWhileStamped.into())
        }
    }
}

/// The first precondition of a stamp that the row fails, as a refusal.
/// Reads the row; changes nothing.
fn check(conn: &Connection, inst: &Installed, s: &Stamp<'_>) -> Outcome<()> {
    let row: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached(&inst.sql.read_row)?
        .query_row([s.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((status, meta)) = row else {
        return Err(Refusal::NoSuchRun {
            id_column: inst.cfg.id_column.clone(),
        }
        .into());
    };
    let status = status.unwrap_or_default();
    if !inst.cfg.is_live(&status) {
        return Err(Refusal::NotLive {
            status,
            live_statuses: inst.cfg.live_statuses.clone(),
        }
        .into());
    }
    let st = State::of(&parse(meta.as_deref())?);
    if let Some(given) = s.lease {
        if given != st.lease {
            return Err(Refusal::StaleLease {
                given,
                found: st.lease,
            }
            .into());
        }
    }
    if let (Some((step, _)), Some(found)) = (s.checkpoint, st.checkpoint_step) {
        if step < found {
            return Err(Refusal::StepBehind { step, found }.into());
        }
    }
    Ok(())
}

/// Stamps `s` on the connection of the SQL function call `ctx`.
pub(crate) fn stamp(shared: &Shared, ctx: &Context<'_>, s: &Stamp<'_>) -> Outcome<i64> {
    shared.run_fast(
        ctx,
        |stmts, inst, config| attempt(stmts, inst, config, s),
        |conn, inst, config| slow_path(conn, inst, config, s),
    )
}

/// Stamps `s` on `handle` (the pulse's own connection).
///
/// # Safety
/// As [`Shared::run_on`]: `handle` is the open connection `shared` was
/// registered on, used on this thread for the call.
pub(crate) unsafe fn stamp_on(
    shared: &Shared,
    handle: *mut ffi::sqlite3,
    s: &Stamp<'_>,
) -> Outcome<i64> {
    // SAFETY: the caller's contract.
    unsafe {
        shared.run_fast_on(
            handle,
            |stmts, inst, config| attempt(stmts, inst, config, s),
            |conn, inst, config| slow_path(conn, inst, config, s),
        )
    }
}

pub(crate) fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    for n_arg in [1, 2] {
        let shared = shared.clone();
        db.create_scalar_function(c"run_heartbeat", n_arg, WRITER, move |ctx| {
            sql_stamp(ctx, &shared, false)
        })?;
    }
    // Internal to run_heartbeat's UPDATE (see crate::beat): a pure function
    // of its arguments, which only that top-level statement needs to call.
    db.create_scalar_function(
        c"run_recovery_heartbeat_text",
        3,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DIRECTONLY
            | FunctionFlags::SQLITE_DETERMINISTIC,
        crate::beat::sql_text,
    )?;
    // Internal to the stamp UPDATEs (see crate::stmt::fresh).
    db.create_scalar_function(
        c"run_recovery_schema_fresh",
        0,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY,
        |_| Ok(crate::stmt::fresh()),
    )?;
    for n_arg in [2, 3, 4] {
        let shared = shared.clone();
        db.create_scalar_function(c"run_checkpoint", n_arg, WRITER, move |ctx| {
            sql_stamp(ctx, &shared, true)
        })?;
    }
    Ok(())
}

/// `run_heartbeat(id [, lease])` and `run_checkpoint(id, step [, state [, lease]])`.
fn sql_stamp(ctx: &Context<'_>, shared: &Shared, is_checkpoint: bool) -> Result<i64> {
    let func = if is_checkpoint {
        "run_checkpoint"
    } else {
        "run_heartbeat"
    };
    let id = args::run_id_value(func, ctx.get_raw(0))?;
    let (checkpoint, state, lease_at) = if is_checkpoint {
        let step = args::int(func, "step", ctx.get_raw(1), 0)?;
        let state = match ctx.len() {
            n if n >= 3 => args::json_state(func, ctx.get_raw(2))?,
            _ => None,
        };
        (Some(step), state, 3)
    } else {
        (None, None, 1)
    };
    let lease = match ctx.len() {
        n if n > lease_at => Some(args::lease(func, ctx.get_raw(lease_at))?),
        _ => None,
    };
    let s = Stamp {
        id: &id,
        lease,
        checkpoint: checkpoint.map(|step| (step, state.as_deref())),
        now: now_ms(),
    };
    stamp(shared, ctx, &s).map_err(|f| f.into_sql(func, &args::id_text(&id)))
}
