//! `run_recovery_install([config])`, `run_recovery_uninstall()`,
//! `run_recovery_config()`, `run_recovery_version()`, `run_recovery_debug()`.

use std::sync::Arc;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Result};

use crate::config::Config;
use crate::errors::{bad_argument, Expected, Failure, Refusal};
use crate::sqlgen::{install_script, uninstall_script};
use crate::state::{stored_config, Outcome, Shared};
use crate::{READER, WRITER};

pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
pub const SOURCE: &str = env!("RUN_RECOVERY_SOURCE");

/// Installs (or upgrades) the pure-SQL layer; returns the effective config.
/// `config` keys override the stored config (or the defaults on a first install).
fn install(conn: &Connection, config: Option<&str>) -> Outcome<Config> {
    let mut cfg = match stored_config(conn) {
        Ok(cfg) => cfg,
        // A first install, or one over a stored config that no longer reads.
        Err(Failure::Refused(Refusal::NotInstalled | Refusal::StoredConfigUnreadable(_))) => {
            Config::default()
        }
        Err(e) => return Err(e),
    };
    let explicit: serde_json::Map<String, serde_json::Value> = match config {
        Some(text) => {
            cfg.apply_json(text).map_err(Refusal::BadConfig)?;
            serde_json::from_str(text).unwrap_or_default()
        }
        None => Default::default(),
    };
    let columns = table_columns(conn, &cfg.table)?;
    if columns.is_empty() {
        return Err(Refusal::NoTable {
            table: cfg.table.clone(),
        }
        .into());
    }
    let has = |c: &str| columns.iter().any(|x| x.eq_ignore_ascii_case(c));
    let missing = |key: &'static str, column: &str| Refusal::NoColumn {
        table: cfg.table.clone(),
        column: column.to_string(),
        key,
    };
    for (key, col) in [
        ("id_column", &cfg.id_column),
        ("status_column", &cfg.status_column),
        ("metadata_column", &cfg.metadata_column),
    ] {
        if !has(col) {
            return Err(missing(key, col).into());
        }
    }
    let mut optional = [
        ("name_column", cfg.name_column.clone()),
        ("end_time_column", cfg.end_time_column.clone()),
        ("updated_at_column", cfg.updated_at_column.clone()),
    ];
    for (key, col) in &mut optional {
        if let Some(c) = col.as_deref() {
            if !has(c) {
                if explicit.contains_key(*key) {
                    return Err(missing(key, c).into());
                }
                *col = None;
            }
        }
    }
    let [(_, name), (_, end_time), (_, updated_at)] = optional;
    cfg.name_column = name;
    cfg.end_time_column = end_time;
    cfg.updated_at_column = updated_at;
    in_savepoint(conn, |conn| {
        for stmt in install_script(&cfg) {
            conn.execute_batch(&stmt)?;
        }
        // Preparing a write codes the triggers it fires: with
        // trusted_schema=OFF, SQLite 3.40 refuses their JSON functions.
        trigger_probe(conn, &cfg)
    })
    .map_err(|e| {
        let text = e.to_string();
        if text.contains("unsafe use of") {
            // Nothing is installed: the savepoint was rolled back.
            Failure::Refused(Refusal::TrustedSchemaOff {
                sqlite_version: rusqlite::version().to_string(),
                found: text,
            })
        } else {
            Failure::Sql(e)
        }
    })?;
    Ok(cfg)
}

/// Drops every object install made; run data stays as it is.
fn uninstall(conn: &Connection) -> Outcome<Config> {
    let cfg = stored_config(conn)?;
    in_savepoint(conn, |conn| {
        for stmt in uninstall_script(true) {
            conn.execute_batch(&stmt)?;
        }
        Ok(())
    })?;
    Ok(cfg)
}

/// Runs `f` inside a savepoint: all of it happens, or none of it.
fn in_savepoint(conn: &Connection, f: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
    conn.execute_batch("SAVEPOINT run_recovery_install")?;
    match f(conn) {
        Ok(()) => conn.execute_batch("RELEASE run_recovery_install"),
        Err(e) => {
            let _ = conn
                .execute_batch("ROLLBACK TO run_recovery_install; RELEASE run_recovery_install");
            Err(e)
        }
    }
}

/// Prepares (never runs) an UPDATE and an INSERT on the runs table, which
/// codes every installed trigger they would fire.
fn trigger_probe(conn: &Connection, cfg: &Config) -> Result<()> {
    use crate::sqlgen::ident;
    let (t, id, st, meta) = (
        format!("main.{}", ident(&cfg.table)),
        ident(&cfg.id_column),
        ident(&cfg.status_column),
        ident(&cfg.metadata_column),
    );
    conn.prepare(&format!(
        "UPDATE {t} SET {st} = {st}, {meta} = {meta} WHERE 0"
    ))?;
    conn.prepare(&format!(
        "INSERT OR REPLACE INTO {t} ({id}, {st}, {meta}) SELECT NULL, NULL, NULL WHERE 0"
    ))?;
    Ok(())
}

fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1, 'main')")?;
    let cols = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>>>()?;
    Ok(cols)
}

fn debug_info() -> serde_json::Value {
    serde_json::json!({
        "version": VERSION,
        "source": SOURCE,
        "sqlite": rusqlite::version(),
        "build": if cfg!(feature = "loadable") { "loadable" } else { "static" },
    })
}

pub(crate) fn register(db: &Connection, shared: &Arc<Shared>) -> Result<()> {
    for n_arg in [0, 1] {
        db.create_scalar_function(c"run_recovery_install", n_arg, WRITER, |ctx| {
            const F: &str = "run_recovery_install";
            let config = match ctx.len() {
                0 => None,
                _ => match ctx.get_raw(0) {
                    ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Null => None,
                    other => return Err(bad_argument(F, Expected::ConfigText, other)),
                },
            };
            with_conn(ctx, F, |conn| install(conn, config.as_deref()))
                .map(|cfg| cfg.to_json().to_string())
        })?;
    }
    db.create_scalar_function(c"run_recovery_uninstall", 0, WRITER, |ctx| {
        with_conn(ctx, "run_recovery_uninstall", uninstall)
            .map(|cfg| serde_json::json!({"uninstalled": true, "table": cfg.table}).to_string())
    })?;
    db.create_scalar_function(c"run_recovery_config", 0, READER, |ctx| {
        with_conn(ctx, "run_recovery_config", stored_config).map(|c| c.to_json().to_string())
    })?;
    db.create_scalar_function(
        c"run_recovery_version",
        0,
        READER | FunctionFlags::SQLITE_DETERMINISTIC,
        |_| Ok(VERSION),
    )?;
    let shared = shared.clone();
    db.create_scalar_function(c"run_recovery_debug", 0, READER, move |_| {
        let mut info = debug_info();
        info["statement_cache"] = shared.cache_in_use().into();
        info["pulses"] = shared.pulses.to_json();
        Ok(info.to_string())
    })?;
    Ok(())
}

/// Runs `f` on the connection of the call `ctx` of SQL function `func`; its
/// failure becomes `func`'s error.
fn with_conn<R>(
    ctx: &Context<'_>,
    func: &str,
    f: impl FnOnce(&Connection) -> Outcome<R>,
) -> Result<R> {
    // SAFETY: the connection is the caller's, used on this thread during this call.
    let conn = unsafe { ctx.get_connection() }?;
    f(&conn).map_err(|e| e.into_sql(func, ""))
}
