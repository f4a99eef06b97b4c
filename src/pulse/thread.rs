//! A pulse's thread: one stamp per interval on its own connection, until
//! asked to stop or told the run is no longer its to keep alive.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::Connection;

use super::control::Ctl;
use super::EVERY;
use crate::errors::{Failure, Refusal};
use crate::heartbeat::{self, Stamp};
use crate::state::{now_ms, Outcome, Shared};

/// How long the thread waits before retrying a stamp refused with SQLITE_BUSY.
const BUSY_RETRY: Duration = Duration::from_millis(5);

/// What one stamp attempt came to.
enum Tick {
    Stamped,
    /// SQLITE_BUSY or SQLITE_LOCKED after the busy timeout, or a row that
    /// changed under the stamp: try again shortly.
    Busy,
    /// An error that says nothing about the run (I/O, full disk): try again
    /// next interval.
    Transient(String),
    /// The run cannot be kept alive by this pulse any more.
    Stop(String),
}

pub(crate) struct Pulse {
    /// The pulse's own connection, with run_recovery registered on it...
    pub conn: Connection,
    /// ...and the state registered with it.
    pub shared: Arc<Shared>,
    /// How long one stamp waits for a lock before it is retried.
    pub busy_ms: i32,
    pub id: Value,
    pub id_text: String,
    pub lease: i64,
    pub interval: Duration,
    pub ctl: Arc<Ctl>,
}

impl Pulse {
    pub(crate) fn run(self) {
        BUSY_LIMIT_MS.with(|c| c.set(self.busy_ms));
        let reason = 'outer: loop {
            if self.ctl.wait(self.interval) {
                break "stopped (run_heartbeat_stop, replaced, or its connection closed)"
                    .to_string();
            }
            self.ctl.lock().attempts += 1;
            loop {
                match self.classify(self.stamp_locked()) {
                    Tick::Stamped => {
                        self.ctl.lock().stamps += 1;
                        break;
                    }
                    Tick::Busy => {
                        self.ctl.lock().busy += 1;
                        if self.ctl.wait(BUSY_RETRY) {
                            break 'outer "stopped while the database was busy".to_string();
                        }
                    }
                    Tick::Transient(msg) => {
                        self.ctl.lock().last_error = Some(msg);
                        break;
                    }
                    Tick::Stop(msg) => break 'outer msg,
                }
            }
        };
        self.ctl.finish(reason);
        // The connection closes here, on the pulse's own thread.
    }

    /// Takes the write lock first, then stamps: a stamp reads the clock
    /// when it starts, so one that waited for the lock inside its UPDATE
    /// would write a time that is already old.
    fn stamp_locked(&self) -> Outcome<i64> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let stamp = Stamp {
            id: &self.id,
            lease: Some(self.lease),
            checkpoint: None,
            now: now_ms(),
        };
        // SAFETY: `self.conn` is the open connection `self.shared` was
        // registered on, used on this (the pulse's own) thread.
        let out = unsafe { heartbeat::stamp_on(&self.shared, self.conn.handle(), &stamp) }
            .and_then(|hb| Ok(self.conn.execute_batch("COMMIT").map(|()| hb)?));
        if out.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        out
    }

    /// Sorts a stamp's result: landed, busy (retry soon), a refusal (the
    /// run is not this pulse's to keep alive any more: stop), or an error
    /// that says nothing about the run (retry next interval).
    fn classify(&self, r: Outcome<i64>) -> Tick {
        match r {
            Ok(_) => Tick::Stamped,
            Err(f) if f.is_busy() => Tick::Busy,
            Err(Failure::Refused(Refusal::ChangedWhileStamped)) => Tick::Busy,
            Err(Failure::Refused(r)) => Tick::Stop(r.message(EVERY, &self.id_text)),
            Err(f @ Failure::Sql(_)) => {
                Tick::Transient(f.into_sql(EVERY, &self.id_text).to_string())
            }
        }
    }
}

thread_local! {
    /// The busy timeout of the pulse running on this thread, in milliseconds.
    static BUSY_LIMIT_MS: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The pulse connection's busy handler: retry every millisecond, up to the
/// busy timeout (it runs on the pulse's own thread).
pub(crate) fn busy_handler(tries: i32) -> bool {
    if tries >= BUSY_LIMIT_MS.with(|c| c.get()) {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}
