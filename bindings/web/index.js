// run_recovery for the browser: session recovery for lab protocol runs on
// @sqlite.org/sqlite-wasm, through the pure-SQL layer only (no extension: WASM
// cannot load one). Every write is one INSERT INTO run_recovery_actions (an
// INSTEAD OF trigger decides it atomically in the database); every read is a
// view (run_recovery_orphans, run_recovery_runs). Works on any oo1 database
// (OpfsDb, OpfsSAHPoolDb, in-memory), best in the Worker that owns it.
import { INSTALL_SQL, SCHEMA_VERSION, DEFAULT_CONFIG, INSTALL_SQL_SHA256 } from './install-sql.js';

export { INSTALL_SQL, SCHEMA_VERSION, DEFAULT_CONFIG, INSTALL_SQL_SHA256 };

/** The three decisions a person can take on an orphan. */
export const ACTIONS = Object.freeze(['resume', 'fail', 'dismiss']);

/**
 * A write the database refused: a stale lease (the run was recovered by another
 * client), a run that is still alive or not live any more, … `reason` is a
 * stable code; `message` is the database's own text.
 */
export class RecoveryRefusedError extends Error {
  constructor(action, reason, message, runId, cause) {
    super(message, cause ? { cause } : undefined);
    this.name = 'RecoveryRefusedError';
    /** heartbeat | checkpoint | resume | fail | dismiss | write */
    this.action = action;
    /** stale-lease | already-recovered | still-alive | not-live | no-such-run | too-many-resumes | bad-argument | not-json-object | unknown-action | refused */
    this.reason = reason;
    this.runId = runId;
  }
}

// The refusal texts, by key words (the database's messages start with
// "run_recovery_actions: <action>: " or "run_recovery_lease_guard: ").
const REASONS = [
  [/stale lease|stale write/i, 'stale-lease'],
  [/already recovered/i, 'already-recovered'],
  [/still alive/i, 'still-alive'],
  [/no such run|no run with/i, 'no-such-run'],
  [/not live/i, 'not-live'],
  [/too many resumes|max_resumes/i, 'too-many-resumes'],
  [/unknown action/i, 'unknown-action'],
  [/not a json object|malformed/i, 'not-json-object'],
  [/bad argument/i, 'bad-argument'],
];

/** The RecoveryRefusedError for a refusal raised by the pure-SQL layer, or null. */
export function refusalOf(error, runId) {
  const text = String(error?.message ?? '');
  const m = /run_recovery_actions: (\w+): .*|run_recovery_lease_guard: .*/s.exec(text);
  if (!m) return null;
  const message = m[0];
  const reason = REASONS.find(([re]) => re.test(message))?.[1] ?? 'refused';
  return new RecoveryRefusedError(m[1] ?? 'write', reason, message, runId, error);
}

// Prepared statements per database, reused across calls (oo1's close()
// finalizes them). A schema change (install) makes SQLite re-prepare them.
const statements = new WeakMap();

function statement(db, sql) {
  let cache = statements.get(db);
  if (!cache) statements.set(db, (cache = new Map()));
  let st = cache.get(sql);
  if (!st || !st.pointer) {
    try {
      st = db.prepare(sql);
    } catch (e) {
      if (/no such (table|view): run_recovery/.test(String(e?.message))) {
        throw new Error(`run_recovery is not installed in this database (or an install older than run_recovery_actions): call install(db) first (${e.message})`, { cause: e });
      }
      throw e;
    }
    cache.set(sql, st);
  }
  return st;
}

function forget(db) {
  const cache = statements.get(db);
  if (!cache) return;
  for (const st of cache.values()) {
    try { if (st.pointer) st.finalize(); } catch { /* already gone with its db */ }
  }
  statements.delete(db);
}

/** Runs one statement; returns its rows as objects (none for a write). */
function run(db, sql, bind, runId) {
  const st = statement(db, sql);
  const rows = [];
  try {
    st.bind(bind.map((v) => (v === undefined ? null : v)));
    while (st.step()) rows.push(st.get({}));
  } catch (e) {
    throw refusalOf(e, runId) ?? e;
  } finally {
    // sqlite3_reset() repeats the step's error code, and oo1's reset() throws it:
    // the statement is reset all the same; the step's error is the one to report.
    try {
      st.reset(true);
    } catch {
      /* reported above */
    }
  }
  return rows;
}

function checkRunId(fn, runId) {
  if (typeof runId !== 'string' && !Number.isInteger(runId)) {
    throw new TypeError(`${fn}: runId must be a string or an integer, found ${typeof runId}`);
  }
}

function checkLease(fn, lease) {
  if (lease !== undefined && lease !== null && !(Number.isInteger(lease) && lease >= 1)) {
    throw new TypeError(`${fn}: lease must be an integer >= 1, found ${lease}`);
  }
}

function sameConfig(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Installs (or upgrades, idempotently) the pure-SQL layer in `db`: triggers,
 * the views run_recovery_orphans, run_recovery_runs and run_recovery_actions,
 * the settings table. The package ships the install for the default config
 * only; `config` may be omitted or name default values. A database that holds
 * this very install already is not written to (no schema change, no lock).
 * Returns the effective config.
 */
export function install(db, config) {
  if (config !== undefined && config !== null) {
    const differs = Object.entries(config).filter(([k, v]) => !(k in DEFAULT_CONFIG) || !sameConfig(DEFAULT_CONFIG[k], v));
    if (differs.length) {
      throw new RangeError(
        `install: bindings/web ships the install for the default config only; found ${differs.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')}. ` +
          'For another table, columns, statuses or threshold, install once with the extension ' +
          "(SELECT run_recovery_install('{...}') in the sqlite3 shell after .load dist/run_recovery) and open that database: " +
          'every other function of this package works on it, and orphans() and recover() take thresholdMs per call.',
      );
    }
  }
  const installed = readConfig(db);
  if (installed && !sameConfig(installed, DEFAULT_CONFIG)) {
    throw new RangeError(
      `install: this database holds an install with another config (${JSON.stringify(installed)}); ` +
        'bindings/web would overwrite it with the default one, so it leaves it as it is: use the database without install(), or reinstall it with the extension',
    );
  }
  if (installed && upToDate(db)) return installed; // nothing to write: no schema change, no lock taken
  forget(db);
  orphanSqlByDb.delete(db);
  db.exec(INSTALL_SQL);
  return readConfig(db);
}

// The database already holds exactly this install: the same schema_version and
// every trigger and view with the very text INSTALL_SQL creates.
const INSTALLED_OBJECTS = (INSTALL_SQL.match(/^CREATE (?:TRIGGER|VIEW) \w+/gm) ?? []).length;
function upToDate(db) {
  if (db.selectValue("SELECT value FROM run_recovery_settings WHERE key = 'schema_version'") !== String(SCHEMA_VERSION)) return false;
  const objects = db.selectValues("SELECT sql FROM sqlite_schema WHERE type IN ('trigger', 'view') AND name LIKE 'run_recovery%'");
  return objects.length === INSTALLED_OBJECTS && objects.every((sql) => INSTALL_SQL.includes(`${sql};`));
}

function readConfig(db) {
  const has = db.selectValue("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'run_recovery_settings'");
  if (!has) return null;
  const text = db.selectValue("SELECT value FROM run_recovery_settings WHERE key = 'config'");
  return text ? JSON.parse(text) : null;
}

/** The installed config (JSON object), or null when run_recovery is not installed. */
export function config(db) {
  return readConfig(db);
}

const ACTION_SQL = 'INSERT INTO run_recovery_actions (run_id, action, lease, step, state, threshold_ms) VALUES (?, ?, ?, ?, ?, ?)';
const RUN_SQL =
  'SELECT run_id, name, status, live, last_heartbeat, age_ms, checkpoint_step, checkpoint_state, lease, resumes, dismissed FROM run_recovery_runs WHERE run_id = ?';

/** Stamps a heartbeat; with `lease`, only while the run still holds it. Throws RecoveryRefusedError. */
export function heartbeat(db, runId, { lease } = {}) {
  checkRunId('heartbeat', runId);
  checkLease('heartbeat', lease);
  run(db, ACTION_SQL, [runId, 'heartbeat', lease, null, null, null], runId);
}

/**
 * Records that `step` is done and `state` (any JSON value) is what the next
 * step needs, with a heartbeat, in one statement: call it inside the same
 * transaction as the step's own writes. Throws RecoveryRefusedError.
 */
export function checkpoint(db, runId, step, state, { lease } = {}) {
  checkRunId('checkpoint', runId);
  checkLease('checkpoint', lease);
  if (!Number.isInteger(step) || step < 0) throw new TypeError(`checkpoint: step must be an integer >= 0, found ${step}`);
  const json = state === undefined ? null : JSON.stringify(state);
  run(db, ACTION_SQL, [runId, 'checkpoint', lease, step, json, null], runId);
}

function parseJson(text) {
  if (text === null || text === undefined) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function runRow(r) {
  return {
    runId: r.run_id,
    name: r.name,
    status: r.status,
    live: r.live === undefined ? undefined : Boolean(r.live),
    lastHeartbeat: r.last_heartbeat,
    ageMs: r.age_ms,
    checkpointStep: r.checkpoint_step,
    checkpointState: parseJson(r.checkpoint_state),
    lease: r.lease,
    resumes: r.resumes,
    dismissed: Boolean(r.dismissed),
  };
}

/**
 * The orphans: live runs whose last heartbeat is older than `thresholdMs`
 * (default: the installed stale_after_ms), oldest first; dismissed ones only
 * with `includeDismissed`. Objects: runId, name, status, lastHeartbeat, ageMs,
 * checkpointStep, checkpointState (parsed), lease, resumes, dismissed.
 */
export function orphans(db, { thresholdMs, includeDismissed = false } = {}) {
  if (thresholdMs !== undefined && !(Number.isInteger(thresholdMs) && thresholdMs >= 0)) {
    throw new TypeError(`orphans: thresholdMs must be an integer >= 0, found ${thresholdMs}`);
  }
  return run(db, orphansSql(db), [thresholdMs ?? null, includeDismissed ? 1 : 0], null).map(runRow);
}

// The live statuses in the spellings the install matches (as configured,
// lowercase, UPPERCASE, Capitalized), as literals: with them SQLite flattens the view
// run_recovery_runs into this query and probes the status index, so only live
// rows are read however long the history. The threshold is per call; a
// heartbeat more than stale_after_ms ahead (a clock that was wrong) is an
// orphan too, as for orphaned_runs.
const orphanSqlByDb = new WeakMap();
/** The SELECT that orphans() runs on `db` (?1 threshold or NULL, ?2 include dismissed): for EXPLAIN QUERY PLAN. */
export function orphansSql(db) {
  let sql = orphanSqlByDb.get(db);
  if (sql) return sql;
  const cfg = readConfig(db);
  if (!cfg) throw new Error('run_recovery is not installed in this database: call install(db) first');
  // The same spellings as the extension's (config.rs, spellings()): the
  // status as configured, lowercase, UPPERCASE, and Capitalized from the
  // lowercase, by code point (Unicode's case mapping, as SQLite's rows hold it).
  const spellings = new Set();
  for (const s of cfg.live_statuses) {
    const lower = [...s.toLowerCase()];
    spellings.add(s);
    spellings.add(s.toLowerCase());
    spellings.add(s.toUpperCase());
    spellings.add(lower.length ? lower[0].toUpperCase() + lower.slice(1).join('') : '');
  }
  const quoted = [...spellings].map((s) => `'${s.replaceAll("'", "''")}'`).join(', ');
  sql = `SELECT run_id, name, status, live, last_heartbeat, age_ms, checkpoint_step, checkpoint_state, lease, resumes, dismissed
  FROM run_recovery_runs
  WHERE status IN (${quoted})
    AND (coalesce(last_heartbeat, 0) < CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) - coalesce(?1, ${Number(cfg.stale_after_ms)})
      OR coalesce(last_heartbeat, 0) > CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + ${Number(cfg.stale_after_ms)})
    AND (?2 OR NOT dismissed)
  ORDER BY coalesce(last_heartbeat, 0), run_id`;
  orphanSqlByDb.set(db, sql);
  return sql;
}

/** The run's recovery state (run_recovery_runs), or null when there is no such run. */
export function runState(db, runId) {
  checkRunId('runState', runId);
  const [row] = run(db, RUN_SQL, [runId], runId);
  return row ? runRow(row) : null;
}

/**
 * Decides an orphan's fate: 'resume' (new lease, fresh heartbeat; continue
 * from checkpointStep with checkpointState), 'fail' (status failed, end_time
 * set) or 'dismiss' (hidden until it heartbeats again). Atomic: refused with a
 * RecoveryRefusedError when the run is alive, not live, or was recovered by
 * another client first (pass the `lease` the orphan was listed with to be sure
 * of the last). Returns the outcome read in the same transaction.
 */
export function recover(db, runId, action, { thresholdMs, lease } = {}) {
  checkRunId('recover', runId);
  checkLease('recover', lease);
  if (!ACTIONS.includes(action)) throw new TypeError(`recover: action must be one of ${ACTIONS.join(', ')}, found ${action}`);
  if (thresholdMs !== undefined && !(Number.isInteger(thresholdMs) && thresholdMs >= 0)) {
    throw new TypeError(`recover: thresholdMs must be an integer >= 0, found ${thresholdMs}`);
  }
  return db.savepoint(() => {
    run(db, ACTION_SQL, [runId, action, lease, null, null, thresholdMs], runId);
    const [row] = run(db, RUN_SQL, [runId], runId);
    return { action, ...runRow(row) };
  });
}

/**
 * Keeps a run alive from the Worker that owns the database: a heartbeat now
 * and every `intervalMs` (default a sixth of the installed threshold), fenced
 * with `lease`. When the database refuses a heartbeat (the run was recovered
 * by another client, or is not live any more) the pulse stops and reports it:
 * `onLost(error)`, and `handle.done` resolves to { reason: 'lost', error }.
 * Other errors (a busy database) go to `onError` and the pulse goes on.
 */
export function startPulse(db, runId, { intervalMs, lease, onLost, onError } = {}) {
  checkRunId('startPulse', runId);
  checkLease('startPulse', lease);
  const every = intervalMs ?? Math.max(100, Math.floor((readConfig(db)?.stale_after_ms ?? 30000) / 6));
  if (!(Number.isFinite(every) && every > 0)) throw new TypeError(`startPulse: intervalMs must be > 0, found ${intervalMs}`);
  let timer = null;
  let finish;
  const done = new Promise((resolve) => (finish = resolve));
  const handle = {
    runId,
    lease,
    running: true,
    beats: 0,
    lastError: null,
    done,
    stop() {
      if (!handle.running) return;
      handle.running = false;
      clearInterval(timer);
      finish({ reason: 'stopped' });
    },
  };
  const beat = () => {
    if (!handle.running) return;
    try {
      heartbeat(db, runId, { lease });
      handle.beats += 1;
    } catch (error) {
      handle.lastError = error;
      if (error instanceof RecoveryRefusedError) {
        handle.running = false;
        clearInterval(timer);
        finish({ reason: 'lost', error });
        if (onLost) onLost(error);
      } else if (onError) {
        onError(error);
      }
    }
  };
  timer = setInterval(beat, every);
  beat();
  return handle;
}
