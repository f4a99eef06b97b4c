//! `run_recovery_install([config])`, `run_recovery_uninstall()`,
//! `run_recovery_config()`, `run_recovery_version()`, `run_recovery_debug()`.

use std::sync::Arc;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Result};

use crate::config::Config;
use crate::errors::{fail, not_installed, quote, show, wrap};
use crate::sqlgen::{install_script, uninstall_script, SETTINGS_TABLE};
use crate::{READER, WRITER};

pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
pub const SOURCE: &str = env!("RUN_RECOVERY_SOURCE");

/// The config stored by an earlier install, if any.
pub fn stored_config(conn: &Connection) -> Option<Config> {
    let text: String = conn
        .query_row(
            &format!("SELECT value FROM {SETTINGS_TABLE} WHERE key = 'config'"),
            [],
            |r| r.get(0),
        )
        .optional()
        .ok()
        .flatten()?;
    Config::from_stored(&text).ok()
}

/// Installs (or upgrades) the pure-SQL layer; returns the effective config.
/// `config` keys override the stored config (or the defaults on a first install).
pub fn install(conn: &Connection, config: Option<&str>) -> Result<Config> {
    const F: &str = "run_recovery_install";
    let mut cfg = stored_config(conn).unwrap_or_default();
    let explicit: serde_json::Map<String, serde_json::Value> = match config {
        Some(text) => {
            cfg.apply(F, text)
                .map_err(|m| rusqlite::Error::UserFunctionError(m.into()))?;
            serde_json::from_str(text).unwrap_or_default()
        }
        None => Default::default(),
    };
    let columns = table_columns(conn, &cfg.table).map_err(|e| wrap(F, e))?;
    if columns.is_empty() {
        return Err(fail(
            F,
            format!(
                "no table {} in the main database (config key 'table')",
                quote(&cfg.table)
            ),
        ));
    }
    let has = |c: &str| columns.iter().any(|x| x.eq_ignore_ascii_case(c));
    for (key, col) in [
        ("id_column", &cfg.id_column),
        ("status_column", &cfg.status_column),
        ("metadata_column", &cfg.metadata_column),
    ] {
        if !has(col) {
            return Err(fail(
                F,
                format!(
                    "table {} has no column {} (config key '{key}')",
                    quote(&cfg.table),
                    quote(col)
                ),
            ));
        }
    }
    for (key, col) in [
        ("name_column", &mut cfg.name_column),
        ("end_time_column", &mut cfg.end_time_column),
        ("updated_at_column", &mut cfg.updated_at_column),
    ] {
        if let Some(c) = col.as_deref() {
            if !has(c) {
                if explicit.contains_key(key) {
                    return Err(fail(
                        F,
                        format!(
                            "table {} has no column {} (config key '{key}')",
                            quote(&cfg.table),
                            quote(c)
                        ),
                    ));
                }
                *col = None;
            }
        }
    }
    in_savepoint(conn, F, |conn| {
        for stmt in install_script(&cfg) {
            conn.execute_batch(&stmt)?;
        }
        Ok(())
    })?;
    Ok(cfg)
}

/// Drops every object install made; run data stays as it is.
pub fn uninstall(conn: &Connection) -> Result<Config> {
    const F: &str = "run_recovery_uninstall";
    let cfg = stored_config(conn).ok_or_else(|| not_installed(F))?;
    in_savepoint(conn, F, |conn| {
        for stmt in uninstall_script(true) {
            conn.execute_batch(&stmt)?;
        }
        Ok(())
    })?;
    Ok(cfg)
}

/// Runs `f` inside a savepoint: all of it happens, or none of it.
fn in_savepoint(
    conn: &Connection,
    func: &str,
    f: impl FnOnce(&Connection) -> Result<()>,
) -> Result<()> {
    conn.execute_batch("SAVEPOINT run_recovery_install")
        .map_err(|e| wrap(func, e))?;
    match f(conn) {
        Ok(()) => conn
            .execute_batch("RELEASE run_recovery_install")
            .map_err(|e| wrap(func, e)),
        Err(e) => {
            let _ = conn
                .execute_batch("ROLLBACK TO run_recovery_install; RELEASE run_recovery_install");
            Err(wrap(func, e))
        }
    }
}

fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1, 'main')")?;
    let cols = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>>>()?;
    Ok(cols)
}

pub fn debug_info() -> serde_json::Value {
    serde_json::json!({
        "version": VERSION,
        "source": SOURCE,
        "sqlite": rusqlite::version(),
        "build": if cfg!(feature = "loadable") { "loadable" } else { "static" },
    })
}

pub fn register(db: &Connection, shared: &Arc<crate::state::Shared>) -> Result<()> {
    for n_arg in [0, 1] {
        db.create_scalar_function(c"run_recovery_install", n_arg, WRITER, |ctx| {
            const F: &str = "run_recovery_install";
            let config = match ctx.len() {
                0 => None,
                _ => match ctx.get_raw(0) {
                    ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Null => None,
                    other => {
                        return Err(fail(
                            F,
                            format!("config must be JSON text, found {}", show(other)),
                        ))
                    }
                },
            };
            with_conn(ctx, |conn| install(conn, config.as_deref()))
                .map(|cfg| cfg.to_json().to_string())
        })?;
    }
    db.create_scalar_function(c"run_recovery_uninstall", 0, WRITER, |ctx| {
        with_conn(ctx, uninstall)
            .map(|cfg| serde_json::json!({"uninstalled": true, "table": cfg.table}).to_string())
    })?;
    db.create_scalar_function(c"run_recovery_config", 0, READER, |ctx| {
        with_conn(ctx, |conn| {
            stored_config(conn)
                .map(|c| c.to_json().to_string())
                .ok_or_else(|| not_installed("run_recovery_config"))
        })
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
        Ok(info.to_string())
    })?;
    Ok(())
}

fn with_conn<R>(ctx: &Context<'_>, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    // SAFETY: the connection is the caller's, used on this thread during this call.
    let conn = unsafe { ctx.get_connection() }?;
    f(&conn)
}
