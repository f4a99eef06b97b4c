// The pure-SQL layer of run_recovery inside SQLite WASM (@sqlite.org/sqlite-wasm,
// SQLite 3.53.4), as the browser app uses it: NO extension is loaded (WASM
// cannot load one). Two ways in:
//   1. a database file prepared by run_recovery_install() in the sqlite3 shell
//      with the extension (Debian's 3.40), brought into WASM with
//      sqlite3_deserialize (and once more by writing it into WASM's file system);
//   2. sql/install.sql, the checked-in default install script, applied inside
//      WASM to a fresh protocol_runs table.
// Run by `make test-wasm` (node --test), which passes RUN_RECOVERY_LOADABLE and SQLITE3.

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sqlite3InitModule from '@sqlite.org/sqlite-wasm';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const LOADABLE = process.env.RUN_RECOVERY_LOADABLE || path.join(ROOT, 'dist', 'run_recovery.so');
const SQLITE3 = process.env.SQLITE3 || 'sqlite3';

// The spec's host schema (sql/protocol_runs.sql), shared by every test.
const SCHEMA = fs.readFileSync(path.join(ROOT, 'sql', 'protocol_runs.sql'), 'utf8');

const RESUMED = 'a'.repeat(32); // died, then resumed (lease 2)
const ORPHAN = 'b'.repeat(32); // died long ago, nobody recovered it
const NEW_RUN = 'c'.repeat(32); // started inside WASM
const NEW_UPPER = 'd'.repeat(32); // started inside WASM, UPPERCASE statuses
const PROTOCOL = 'f'.repeat(32);

const sqlite3 = await sqlite3InitModule({ print: () => {}, printErr: (...a) => console.error(...a) });
console.log(`@sqlite.org/sqlite-wasm ${JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/@sqlite.org/sqlite-wasm/package.json'), 'utf8')).version}: SQLite ${sqlite3.version.libVersion} under node ${process.version}`);

/** Rows seeded before install: install stamps only live runs without a heartbeat. */
function seedSql(now) {
  const meta = (o) => `'${JSON.stringify(o)}'`;
  return `
INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) VALUES
  ('${RESUMED}', 'run a', 'running', ${meta({ operator: 'ana', lastHeartbeat: now - 600000, lease: 1, checkpointStep: 2, checkpointState: { well: 'B3' } })}, '${PROTOCOL}'),
  ('${ORPHAN}', 'run b', 'paused', ${meta({ operator: 'bo', lastHeartbeat: now - 900000, checkpointStep: 5 })}, '${PROTOCOL}');
`;
}

/** A database file made by the sqlite3 shell with the extension: schema, seed, install, one resume. */
function preparedByInstall(now) {
  assert.ok(fs.existsSync(LOADABLE), `${LOADABLE} missing: make loadable`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'run-recovery-wasm-'));
  const file = path.join(dir, 'runs.db');
  const script = `.load ${LOADABLE}
${SCHEMA}
${seedSql(now)}
SELECT json_extract(run_recovery_install(), '$.stale_after_ms');
SELECT json_extract(recover_run('${RESUMED}', 'resume'), '$.lease');
SELECT sqlite_version();
`;
  const out = execFileSync(SQLITE3, ['-bail', file], { input: script, encoding: 'utf8' });
  const [stale, lease, version] = out.trim().split('\n');
  assert.equal(stale, '30000');
  assert.equal(lease, '2');
  console.log(`prepared with the ${SQLITE3} shell on SQLite ${version} + ${path.basename(LOADABLE)}`);
  return fs.readFileSync(file);
}

/** Opens `bytes` in WASM with sqlite3_deserialize. */
function deserialize(bytes) {
  const db = new sqlite3.oo1.DB(':memory:');
  // A Node Buffer is not accepted as is: hand over a plain Uint8Array.
  const p = sqlite3.wasm.allocFromTypedArray(new Uint8Array(bytes));
  const rc = sqlite3.capi.sqlite3_deserialize(
    db.pointer,
    'main',
    p,
    bytes.length,
    bytes.length,
    sqlite3.capi.SQLITE_DESERIALIZE_FREEONCLOSE | sqlite3.capi.SQLITE_DESERIALIZE_RESIZEABLE,
  );
  db.checkRc(rc);
  return db;
}

const meta = (db, id) =>
  JSON.parse(db.selectValue('SELECT properties_json FROM protocol_runs WHERE accession_id = ?', [id]));
const orphans = (db) => db.selectValues('SELECT run_id FROM run_recovery_orphans ORDER BY age_ms DESC, run_id');

function insert(db, id, status, props) {
  db.exec({
    sql: `INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id)
          VALUES (?, ?, ?, ?, ?)`,
    bind: [id, `run ${id[0]}`, status, props === null ? null : JSON.stringify(props), PROTOCOL],
  });
}

function assertNoExtension(db) {
  assert.equal(db.selectValue('SELECT sqlite_version()'), '3.53.4');
  assert.throws(() => db.selectValue('SELECT run_recovery_version()'), /no such function: run_recovery_version/);
  assert.throws(() => db.selectValue('SELECT * FROM orphaned_runs'), /no such table: orphaned_runs/);
}

/**
 * What the pure-SQL layer promises, on `db` holding the seeded runs after install
 * (`resumedLease`: the lease the RESUMED run holds).
 */
function checkPureSqlLayer(db, resumedLease) {
  // The orphan the executor left behind is listed by the view, with its checkpoint.
  const rows = db.selectObjects('SELECT * FROM run_recovery_orphans');
  assert.deepEqual(
    rows.map((r) => r.run_id),
    [ORPHAN],
  );
  assert.equal(rows[0].status, 'paused');
  assert.equal(rows[0].checkpoint_step, 5);
  assert.ok(rows[0].age_ms >= 900000, `age_ms ${rows[0].age_ms}`);
  assert.equal(rows[0].dismissed, 0);

  // A run going live gets its heartbeat stamped (and lease 1), lowercase or UPPERCASE.
  insert(db, NEW_RUN, 'queued', { operator: 'cy' });
  assert.equal(meta(db, NEW_RUN).lastHeartbeat, undefined, 'queued is not live');
  db.exec({ sql: "UPDATE protocol_runs SET status = 'running' WHERE accession_id = ?", bind: [NEW_RUN] });
  const m = meta(db, NEW_RUN);
  assert.equal(typeof m.lastHeartbeat, 'number');
  assert.ok(Math.abs(m.lastHeartbeat - Date.now()) < 60000, `lastHeartbeat ${m.lastHeartbeat} is not recent`);
  assert.equal(m.lease, 1);
  assert.equal(m.operator, 'cy');
  insert(db, NEW_UPPER, 'PENDING', null);
  db.exec({ sql: "UPDATE protocol_runs SET status = 'PREPARING' WHERE accession_id = ?", bind: [NEW_UPPER] });
  assert.ok(Math.abs(meta(db, NEW_UPPER).lastHeartbeat - Date.now()) < 60000);
  assert.deepEqual(orphans(db), [ORPHAN], 'a run that just started is not an orphan');

  // A write carrying an older lease than the run holds is refused (RAISE) and changes nothing.
  const held = meta(db, RESUMED);
  assert.equal(held.lease, resumedLease);
  const staleCopy = JSON.stringify({ ...held, lease: resumedLease - 1, operator: 'zombie' });
  assert.throws(
    () =>
      db.exec({
        sql: 'UPDATE protocol_runs SET properties_json = ? WHERE accession_id = ?',
        bind: [staleCopy, RESUMED],
      }),
    /run_recovery_lease_guard: stale write refused: the metadata carries an older lease than the run holds/,
  );
  assert.deepEqual(meta(db, RESUMED), held);

  // A write dropping the recovery keys gets them merged back; the app's keys are its own.
  db.exec({
    sql: "UPDATE protocol_runs SET properties_json = json_object('operator', 'ana', 'note', 'plate re-seated') WHERE accession_id = ?",
    bind: [RESUMED],
  });
  const merged = meta(db, RESUMED);
  assert.equal(merged.note, 'plate re-seated');
  assert.equal(merged.operator, 'ana');
  for (const k of ['lastHeartbeat', 'lease', 'checkpointStep', 'checkpointState']) {
    assert.deepEqual(merged[k], held[k], k);
  }
  // The app fails the orphan by hand (pure SQL): it leaves the view.
  db.exec({ sql: "UPDATE protocol_runs SET status = 'failed' WHERE accession_id = ?", bind: [ORPHAN] });
  assert.deepEqual(orphans(db), []);
}

test('a database prepared by install (sqlite3 shell + extension), deserialized into WASM', () => {
  const now = Date.now();
  const bytes = preparedByInstall(now);
  const db = deserialize(bytes);
  try {
    assertNoExtension(db);
    // What the shell's resume left: lease 2, resumes 1, the app's keys.
    const m = meta(db, RESUMED);
    assert.deepEqual([m.lease, m.resumes, m.operator, m.recoveryLog.length], [2, 1, 'ana', 1]);
    checkPureSqlLayer(db, 2);
    assert.equal(db.selectValue('PRAGMA integrity_check'), 'ok');
  } finally {
    db.close();
  }
});

test('the same file written into the WASM file system and opened by name', () => {
  const bytes = preparedByInstall(Date.now());
  const name = `/runs-${process.pid}.db`;
  sqlite3.capi.sqlite3_js_posix_create_file(name, new Uint8Array(bytes));
  const db = new sqlite3.oo1.DB(name, 'w');
  try {
    assertNoExtension(db);
    assert.deepEqual(orphans(db), [ORPHAN]);
    const cfg = JSON.parse(db.selectValue("SELECT value FROM run_recovery_settings WHERE key = 'config'"));
    assert.equal(cfg.stale_after_ms, 30000);
  } finally {
    db.close();
  }
});

test('sql/install.sql applied inside WASM on a fresh protocol_runs table', () => {
  const installSql = fs.readFileSync(path.join(ROOT, 'sql', 'install.sql'), 'utf8');
  const db = new sqlite3.oo1.DB(':memory:');
  try {
    assertNoExtension(db);
    db.exec(SCHEMA);
    db.exec(seedSql(Date.now()));
    // A run live at install time without a heartbeat is stamped by install itself.
    insert(db, 'e'.repeat(32), 'intervening', { operator: 'eve' });
    db.exec(installSql);
    const triggers = db.selectValues("SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name");
    assert.deepEqual(triggers, [
      'run_recovery_act_checkpoint',
      'run_recovery_act_dismiss',
      'run_recovery_act_fail',
      'run_recovery_act_heartbeat',
      'run_recovery_act_resume',
      'run_recovery_act_unknown',
      'run_recovery_guard_check_do',
      'run_recovery_guard_repair_do',
      'run_recovery_lease_guard',
      'run_recovery_replace_guard',
      'run_recovery_replace_keep',
      'run_recovery_stamp_do',
      'run_recovery_stamp_insert',
      'run_recovery_stamp_live',
    ]);
    const stamped = meta(db, 'e'.repeat(32));
    assert.ok(Math.abs(stamped.lastHeartbeat - Date.now()) < 60000);
    assert.equal(stamped.lease, 1);
    assert.equal(meta(db, RESUMED).lastHeartbeat < Date.now() - 500000, true, 'install keeps existing heartbeats');
    // RESUMED was never resumed here: it is an orphan holding lease 1 until the app moves it on.
    assert.deepEqual(orphans(db), [ORPHAN, RESUMED]);
    // Its new executor takes it over by hand (pure SQL: lease 2, fresh heartbeat).
    db.exec({
      sql: `UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 2,
              '$.lastHeartbeat', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) WHERE accession_id = ?`,
      bind: [RESUMED],
    });
    assert.deepEqual(orphans(db), [ORPHAN]);
    checkPureSqlLayer(db, 2);
    // Applying the script again is harmless (idempotent).
    db.exec(installSql);
    assert.equal(meta(db, RESUMED).note, 'plate re-seated');
    assert.equal(db.selectValue('PRAGMA integrity_check'), 'ok');
  } finally {
    db.close();
  }
});

// Every action through run_recovery_actions, no extension: the browser app's
// whole recovery story in SQLite WASM.
test('the whole recovery scenario through run_recovery_actions', () => {
  const installSql = fs.readFileSync(path.join(ROOT, 'sql', 'install.sql'), 'utf8');
  const db = new sqlite3.oo1.DB(':memory:');
  const act = (runId, action, extra = {}) =>
    db.exec({
      sql: 'INSERT INTO run_recovery_actions (run_id, action, lease, step, state, threshold_ms) VALUES (?, ?, ?, ?, ?, ?)',
      bind: [runId, action, extra.lease ?? null, extra.step ?? null, extra.state ?? null, extra.thresholdMs ?? null],
    });
  const run = (id) => db.selectObject('SELECT * FROM run_recovery_runs WHERE run_id = ?', [id]);
  // Aging a run on purpose: allowed by the settings (plain writes never move
  // lastHeartbeat back otherwise).
  const backdate = (id, ms) =>
    db.exec("INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')") &&
    db.exec({
      sql: "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', (properties_json ->> '$.lastHeartbeat') - ?) WHERE accession_id = ?",
      bind: [ms, id],
    });
  try {
    assertNoExtension(db);
    db.exec(SCHEMA);
    db.exec(installSql);
    const A = 'a1'.repeat(16);
    const B = 'b2'.repeat(16);
    const C = 'c3'.repeat(16);
    // Start: three runs go live (UPPERCASE database); the trigger gives each lease 1.
    for (const id of [A, B, C]) insert(db, id, 'RUNNING', { operator: 'ana' });
    assert.equal(run(A).lease, 1);
    assert.equal(run(A).live, 1);
    // Heartbeat and checkpoint, fenced with the lease.
    act(A, 'heartbeat', { lease: 1 });
    act(A, 'checkpoint', { lease: 1, step: 3, state: JSON.stringify({ plate: 'P1', well: 'C4' }) });
    assert.equal(run(A).checkpoint_step, 3);
    assert.throws(() => act(A, 'checkpoint', { lease: 1, step: 2, state: '{}' }), /run_recovery_actions: checkpoint: step is behind the committed checkpoint/);
    // Alive: nobody may take it.
    assert.throws(() => act(A, 'resume'), /run_recovery_actions: resume: run is still alive/);
    // The tab closes: the heartbeat goes stale; the orphan is listed with its checkpoint.
    for (const id of [A, B, C]) backdate(id, 45000);
    assert.deepEqual(orphans(db).sort(), [A, B, C].sort());
    // Resume: the outcome is read in the same transaction.
    db.exec('BEGIN');
    act(A, 'resume');
    const resumed = run(A);
    db.exec('COMMIT');
    assert.equal(resumed.lease, 2);
    assert.equal(resumed.resumes, 1);
    assert.equal(resumed.checkpoint_step, 3);
    assert.deepEqual(JSON.parse(resumed.checkpoint_state), { plate: 'P1', well: 'C4' });
    assert.ok(resumed.age_ms >= 0 && resumed.age_ms < 5000, `age_ms ${resumed.age_ms}`);
    // The old executor (lease 1) is refused, by the actions and by the lease guard.
    assert.throws(() => act(A, 'heartbeat', { lease: 1 }), /run_recovery_actions: heartbeat: stale lease/);
    assert.throws(() => act(A, 'checkpoint', { lease: 1, step: 4 }), /run_recovery_actions: checkpoint: stale lease/);
    assert.throws(
      () => db.exec({ sql: "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 1) WHERE accession_id = ?", bind: [A] }),
      /run_recovery_lease_guard: stale write refused/,
    );
    // The new executor carries on to the end.
    act(A, 'checkpoint', { lease: 2, step: 4, state: '{"plate":"P1","well":"D1"}' });
    db.exec({ sql: "UPDATE protocol_runs SET status = 'COMPLETED' WHERE accession_id = ?", bind: [A] });
    assert.equal(run(A).live, 0);
    // Fail: FAILED in the row's case, end_time set, lease bumped.
    act(B, 'fail');
    const failed = db.selectObject('SELECT status, end_time, properties_json FROM protocol_runs WHERE accession_id = ?', [B]);
    assert.equal(failed.status, 'FAILED');
    assert.match(failed.end_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(JSON.parse(failed.properties_json).lease, 2);
    assert.equal(JSON.parse(failed.properties_json).operator, 'ana');
    // Dismiss: hidden until it heartbeats again.
    act(C, 'dismiss');
    assert.deepEqual(orphans(db), []);
    assert.equal(run(C).dismissed, 1);
    act(C, 'heartbeat', { lease: 1 });
    assert.equal(run(C).dismissed, 0);
    // Refusals change nothing.
    const before = db.selectValues('SELECT properties_json FROM protocol_runs ORDER BY accession_id');
    assert.throws(() => act(C, 'explode'), /run_recovery_actions: unknown action/);
    assert.throws(() => act('nope', 'resume'), /run_recovery_actions: resume: no such run/);
    assert.throws(() => act(B, 'heartbeat'), /run_recovery_actions: heartbeat: run is not live/);
    assert.deepEqual(db.selectValues('SELECT properties_json FROM protocol_runs ORDER BY accession_id'), before);
    const log = JSON.parse(db.selectValue('SELECT properties_json FROM protocol_runs WHERE accession_id = ?', [A])).recoveryLog;
    assert.deepEqual(log.map((r) => [r.action, r.from, r.to, r.leaseBefore, r.leaseAfter]), [['resume', 'RUNNING', 'RUNNING', 1, 2]]);
    assert.equal(db.selectValue('PRAGMA integrity_check'), 'ok');
  } finally {
    db.close();
  }
});
