// The module Worker that owns the database: SQLite WASM on OPFS, run_recovery
// installed with bindings/web, the protocol executor and its pulse (a
// Worker's timers keep time in a hidden tab; the page's do not).
//
// Each protocol step is a timer standing in for a liquid-handling step; its
// effect (a row in example_step_log) and its checkpoint commit in one
// transaction, fenced by the run's lease: a step of an executor whose run was
// taken over is refused and rolled back, so every step is done exactly once.
import sqlite3InitModule from './node_modules/@sqlite.org/sqlite-wasm/dist/index.mjs';
import { install, orphans, recover, checkpoint, startPulse, runState, RecoveryRefusedError } from '../../bindings/web/index.js';

const DB_FILE = '/run-recovery-example.db';
let sqlite3 = null;
let db = null;
let executor = null; // the run this tab executes: { runId, name, lease, steps, stepMs, next, timer, pulse }

const post = (type, detail = {}) => postMessage({ type, ...detail });

function locked(e) {
  return e?.name === 'NoModificationAllowedError' || /Access Handles cannot be created|NoModificationAllowedError|locked by another/i.test(String(e?.message ?? e));
}

async function open({ vfs }) {
  sqlite3 ??= await sqlite3InitModule({ print: () => {}, printErr: (...a) => console.error(...a) });
  db?.close(); // an earlier try that failed after opening (a busy install)
  db = null;
  if (vfs === 'opfs-sahpool') {
    let pool;
    try {
      pool = await sqlite3.installOpfsSAHPoolVfs({ name: 'run-recovery-example', forceReinitIfPreviouslyFailed: true });
      db = new pool.OpfsSAHPoolDb(DB_FILE);
    } catch (e) {
      if (locked(e) || locked(e?.cause)) {
        const err = new Error('the database is open in another tab (opfs-sahpool gives one tab at a time)');
        err.code = 'locked';
        throw err;
      }
      throw e;
    }
  } else if (vfs === 'opfs') {
    if (!sqlite3.oo1.OpfsDb) throw new Error('OPFS is not available here: the "opfs" VFS needs a Worker, SharedArrayBuffer and the COOP/COEP headers (serve with `make web-demo`)');
    // opfs-unlock-asap: the VFS lets go of the file after each operation,
    // not after 150 ms idle, so a tab that is frozen (or stopped in the
    // debugger) between two steps does not keep every other tab out.
    db = new sqlite3.oo1.OpfsDb(`file:${DB_FILE}?opfs-unlock-asap=1`, 'c');
  } else {
    throw new Error(`unknown vfs ${vfs}: opfs or opfs-sahpool`);
  }
  const have = db.selectValue("SELECT count(*) FROM sqlite_schema WHERE name IN ('protocol_runs', 'example_step_log')");
  if (have < 2) withBusyRetry(() => {
    db.transaction('IMMEDIATE', () => {
      if (!db.selectValue("SELECT 1 FROM sqlite_schema WHERE name = 'protocol_runs'")) db.exec(hostSchema);
      db.exec(`CREATE TABLE IF NOT EXISTS example_step_log (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step INTEGER NOT NULL, lease INTEGER NOT NULL, done_at INTEGER NOT NULL)`);
    });
  });
  withBusyRetry(() => install(db));
  return { vfs, sqliteVersion: sqlite3.version.libVersion, file: DB_FILE };
}

let hostSchema = '';

// Another tab may hold the database for a moment ("opfs" VFS): retry a busy
// statement a few times (synchronously; the VFS itself waits between tries).
function withBusyRetry(fn, tries = 5) {
  for (let i = 1; ; i++) {
    try {
      return fn();
    } catch (e) {
      if (i >= tries || !/SQLITE_BUSY|database is locked/i.test(String(e?.message))) throw e;
    }
  }
}

function scan({ thresholdMs }) {
  const found = orphans(db, { thresholdMs });
  // Live runs that are not orphans: executed here or in another tab right now.
  const live = db.selectObjects(
    `SELECT r.run_id AS runId, r.name, r.status, r.checkpoint_step AS checkpointStep, r.age_ms AS ageMs,
            coalesce(p.input_parameters_json ->> '$.steps', 0) AS steps
       FROM run_recovery_runs r JOIN protocol_runs p ON p.accession_id = r.run_id
      WHERE r.live AND r.age_ms <= ?`,
    [thresholdMs],
  );
  const recent = db.selectObjects(
    `SELECT accession_id AS runId, name, status, end_time AS endTime, properties_json ->> '$.checkpointStep' AS checkpointStep,
            coalesce(input_parameters_json ->> '$.steps', 0) AS steps
       FROM protocol_runs ORDER BY created_at DESC, rowid DESC LIMIT 5`,
  );
  return { orphans: found, live: live.filter((r) => r.runId !== executor?.runId), recent, executing: executor?.runId ?? null };
}

function newId() {
  return crypto.randomUUID().replaceAll('-', '');
}

function start({ steps, stepMs, intervalMs, upper }) {
  if (executor) throw new Error(`this tab is already running ${executor.name}`);
  const runId = newId();
  const n = db.selectValue('SELECT count(*) FROM protocol_runs') + 1;
  const name = `Serial dilution, plate ${n}`;
  db.exec({
    sql: `INSERT INTO protocol_runs (accession_id, name, status, start_time, properties_json, input_parameters_json, top_level_protocol_definition_accession_id)
          VALUES (?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '{"operator":"bench 3"}', json_object('steps', ?, 'step_ms', ?), ?)`,
    // Older databases store statuses lowercase, newer ones UPPERCASE: the page can make either.
    bind: [runId, name, upper ? 'RUNNING' : 'running', steps, stepMs, 'protocol-serial-dilution'],
  });
  const state = runState(db, runId); // the insert trigger stamped lease 1 and a first heartbeat
  execute({ runId, name, lease: state.lease, steps, stepMs, next: 1, intervalMs });
  return { runId, name, lease: state.lease, steps };
}

/** Continues a resumed run here: from the step after its checkpoint, with the new lease. */
function resume({ runId, lease, stepMs, intervalMs }) {
  if (executor) throw new Error(`this tab is already running ${executor.name}`);
  const row = db.selectObject('SELECT name, input_parameters_json ->> \'$.steps\' AS steps FROM protocol_runs WHERE accession_id = ?', [runId]);
  const state = runState(db, runId);
  if (state.lease !== lease) throw new RecoveryRefusedError('resume', 'already-recovered', `run ${runId} holds lease ${state.lease}, not ${lease}`, runId);
  const next = (state.checkpointStep ?? 0) + 1;
  execute({ runId, name: row.name, lease, steps: Number(row.steps) || 8, stepMs, next, intervalMs });
  return { runId, name: row.name, next, steps: Number(row.steps) || 8 };
}

function execute(run) {
  executor = run;
  run.pulse = startPulse(db, run.runId, {
    lease: run.lease,
    intervalMs: run.intervalMs,
    onLost: (error) => fenced(run, error),
    onError: (error) => post('warning', { message: `heartbeat: ${error.message}` }),
  });
  post('progress', { runId: run.runId, name: run.name, step: run.next, steps: run.steps, lease: run.lease });
  run.timer = setTimeout(() => doStep(run), run.stepMs);
}

function doStep(run) {
  if (executor !== run) return;
  const step = run.next;
  try {
    withBusyRetry(() =>
      db.transaction('IMMEDIATE', () => {
        // The step's effect…
        db.exec({ sql: 'INSERT INTO example_step_log (run_id, step, lease, done_at) VALUES (?, ?, ?, ?)', bind: [run.runId, step, run.lease, Date.now()] });
        // …and its checkpoint, fenced: refused (and the effect rolled back) if the run was taken over.
        checkpoint(db, run.runId, step, { next_step: step + 1, wells_done: step * 12 }, { lease: run.lease });
        if (step === run.steps) {
          db.exec({
            sql: `UPDATE protocol_runs SET status = CASE WHEN status = upper(status) THEN 'COMPLETED' ELSE 'completed' END,
                    end_time = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                  WHERE accession_id = ?`,
            bind: [run.runId],
          });
        }
      }),
    );
  } catch (error) {
    if (error instanceof RecoveryRefusedError) return fenced(run, error);
    post('warning', { message: `step ${step}: ${error.message}; trying again` });
    run.timer = setTimeout(() => doStep(run), Math.min(run.stepMs, 500));
    return;
  }
  if (step === run.steps) {
    finish(run);
    post('completed', { runId: run.runId, name: run.name, steps: run.steps });
    return;
  }
  run.next = step + 1;
  post('progress', { runId: run.runId, name: run.name, step: run.next, steps: run.steps, lease: run.lease });
  run.timer = setTimeout(() => doStep(run), run.stepMs);
}

function finish(run) {
  clearTimeout(run.timer);
  run.pulse?.stop();
  if (executor === run) executor = null;
}

function fenced(run, error) {
  if (executor !== run) return;
  finish(run);
  post('fenced', { runId: run.runId, name: run.name, reason: error.reason, message: error.message, step: run.next });
}

function query({ sql, bind }) {
  return db.selectObjects(sql, bind ?? []);
}

const handlers = {
  open,
  scan,
  start,
  resume,
  recover: ({ runId, action, thresholdMs, lease }) => recover(db, runId, action, { thresholdMs, lease }),
  query,
};

onmessage = async ({ data }) => {
  const { id, op, args } = data;
  try {
    if (op === 'open' && !hostSchema) hostSchema = await (await fetch(new URL('../../sql/protocol_runs.sql', import.meta.url))).text();
    const result = await handlers[op](args ?? {});
    postMessage({ id, ok: true, result });
  } catch (e) {
    postMessage({ id, ok: false, error: { message: String(e?.message ?? e), reason: e?.reason ?? null, code: e?.code ?? null, name: e?.name } });
  }
};
post('ready');
