//! The control block a pulse's thread shares with the connection that
//! started it, and the per-connection registry of pulses.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

/// The control block shared by a pulse's thread and the connection that started it.
#[derive(Default)]
pub(crate) struct Ctl {
    state: Mutex<CtlState>,
    cv: Condvar,
}

#[derive(Default, Debug, Clone)]
pub(crate) struct CtlState {
    /// Asked to stop (run_heartbeat_stop, replaced, connection closed).
    pub stop: bool,
    /// The thread has left its loop and will write nothing more.
    pub finished: bool,
    /// Why it finished.
    pub reason: Option<String>,
    /// Stamp attempts (one per interval; BUSY retries not counted).
    pub attempts: u64,
    /// Stamps that landed.
    pub stamps: u64,
    /// Attempts that met SQLITE_BUSY/SQLITE_LOCKED and were retried.
    pub busy: u64,
    /// The last error that did not stop the pulse.
    pub last_error: Option<String>,
}

impl CtlState {
    /// What `run_recovery_debug()` shows of a pulse.
    fn to_json(&self) -> Value {
        json!({
            "stop": self.stop,
            "finished": self.finished,
            "reason": self.reason,
            "attempts": self.attempts,
            "stamps": self.stamps,
            "busy": self.busy,
            "last_error": self.last_error,
        })
    }
}

impl Ctl {
    pub(crate) fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the thread to stop; returns whether it was still running.
    pub(crate) fn stop(&self) -> bool {
        let mut g = self.lock();
        g.stop = true;
        self.cv.notify_all();
        !g.finished
    }

    /// Sleeps `d` or until asked to stop; true when asked to stop.
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let g = self.lock();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |s| !s.stop)
            .unwrap_or_else(|e| e.into_inner());
        g.stop
    }

    pub(crate) fn finish(&self, reason: String) {
        let mut g = self.lock();
        g.finished = true;
        g.reason = Some(reason);
        self.cv.notify_all();
    }
}

/// The pulses started on one connection, by run id, held by the
/// connection's state. Dropped when SQLite destroys the functions (the
/// connection closes): every pulse is signalled.
#[derive(Default)]
pub(crate) struct Registry {
    pulses: Mutex<HashMap<String, Arc<Ctl>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Ctl>>> {
        self.pulses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the pulse of `id`, stopping the one it replaces.
    pub(crate) fn insert(&self, id: String, ctl: Arc<Ctl>) {
        if let Some(old) = self.lock().insert(id, ctl) {
            old.stop();
        }
    }

    /// Stops and forgets the pulse of `id`; whether one was still running.
    pub(crate) fn stop(&self, id: &str) -> bool {
        match self.lock().remove(id) {
            Some(ctl) => ctl.stop(),
            None => false,
        }
    }

    /// Every pulse started here and not stopped by run_heartbeat_stop, by
    /// run id (finished ones included, with their reason).
    pub(crate) fn to_json(&self) -> Value {
        let pulses = self.lock();
        let mut all: Vec<(&String, &Arc<Ctl>)> = pulses.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        Value::Object(
            all.into_iter()
                .map(|(id, ctl)| (id.clone(), ctl.lock().to_json()))
                .collect(),
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for ctl in self.lock().values() {
            ctl.stop();
        }
    }
}
