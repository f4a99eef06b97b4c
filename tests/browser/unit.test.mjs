// bindings/web under Node with the in-memory SQLite WASM database
// (@sqlite.org/sqlite-wasm 3.53.4-build2): every function of the package, its
// refusals, and that the install it ships is sql/install.sql. Run by `make test-web`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sqlite3InitModule from '@sqlite.org/sqlite-wasm';
import * as rr from '../../bindings/web/index.js';
import { generate } from '../../bindings/web/build.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const SCHEMA = fs.readFileSync(path.join(ROOT, 'sql', 'protocol_runs.sql'), 'utf8');
const quiet = { print: () => {}, printErr: () => {} };
const sqlite3 = await sqlite3InitModule(quiet);
sqlite3.config.warn = () => {}; // oo1 warns on every failed step: refusals are expected here

function fresh() {
  const db = new sqlite3.oo1.DB(':memory:');
  db.exec(SCHEMA);
  rr.install(db);
  return db;
}

function addRun(db, id, { status = 'running', meta = '{"operator":"ana"}', name = `run ${id}` } = {}) {
  db.exec({
    sql: "INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, 'p')",
    bind: [id, name, status, meta],
  });
}

/** Moves the run's heartbeat `ms` into the past (as if its executor died that long ago). */
function age(db, id, ms) {
  // On purpose: the settings let plain writes move lastHeartbeat back.
  db.exec("INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')");
  db.exec({
    sql: "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', (properties_json ->> '$.lastHeartbeat') - ?) WHERE accession_id = ?",
    bind: [ms, id],
  });
}

const meta = (db, id) => JSON.parse(db.selectValue('SELECT properties_json FROM protocol_runs WHERE accession_id = ?', [id]));

test('the install shipped in the package is sql/install.sql, as build.mjs generates it', () => {
  const shipped = fs.readFileSync(path.join(ROOT, 'bindings', 'web', 'install-sql.js'), 'utf8');
  const sql = fs.readFileSync(path.join(ROOT, 'sql', 'install.sql'), 'utf8');
  assert.ok(shipped === generate(sql), 'bindings/web/install-sql.js differs from sql/install.sql: run `node bindings/web/build.mjs` (make test-web does)');
  assert.equal(rr.INSTALL_SQL, sql);
  assert.equal(rr.SCHEMA_VERSION, Number(/'schema_version', '(\d+)'/.exec(sql)[1]));
});

test('install: idempotent, returns the effective config, stamps live runs; other configs are refused with a way out', () => {
  const db = new sqlite3.oo1.DB(':memory:');
  db.exec(SCHEMA);
  addRun(db, 'before', { meta: '{"operator":"bo"}' });
  const cfg = rr.install(db);
  assert.equal(cfg.stale_after_ms, 30000);
  assert.deepEqual(rr.install(db, { stale_after_ms: 30000, table: 'protocol_runs' }), cfg);
  assert.deepEqual(rr.config(db), cfg);
  assert.equal(db.selectValue("SELECT value FROM run_recovery_settings WHERE key = 'schema_version'"), String(rr.SCHEMA_VERSION));
  const m = meta(db, 'before');
  assert.equal(m.operator, 'bo');
  assert.equal(m.lease, 1);
  assert.ok(m.lastHeartbeat > 1.7e12);
  // Installed already: nothing is written (the schema cookie does not move); a changed trigger is rewritten.
  const cookie = () => db.selectValue('PRAGMA schema_version');
  const c0 = cookie();
  rr.install(db);
  assert.equal(cookie(), c0, 'an up-to-date install writes nothing');
  db.exec('DROP TRIGGER run_recovery_lease_guard; CREATE TRIGGER run_recovery_lease_guard BEFORE UPDATE ON protocol_runs BEGIN SELECT 1; END;');
  rr.install(db);
  assert.ok(rr.INSTALL_SQL.includes(db.selectValue("SELECT sql FROM sqlite_schema WHERE name = 'run_recovery_lease_guard'")), 'reinstalled');
  assert.throws(() => rr.install(db, { stale_after_ms: 5000 }), /default config only; found stale_after_ms=5000.*run_recovery_install/s);
  assert.throws(() => rr.install(db, { table: 'runs' }), /default config only/);
  // A database installed with another config (by the extension) is left as it is.
  db.exec(`UPDATE run_recovery_settings SET value = json_set(value, '$.stale_after_ms', 5000) WHERE key = 'config'`);
  assert.throws(() => rr.install(db), /another config/);
  db.close();
});

test('functions before install say how to install', () => {
  const db = new sqlite3.oo1.DB(':memory:');
  db.exec(SCHEMA);
  assert.throws(() => rr.heartbeat(db, 'x'), /not installed.*install\(db\)/);
  assert.throws(() => rr.orphans(db), /not installed.*install\(db\)/);
  db.close();
});

test('heartbeat and checkpoint: fenced by the lease, checkpoint state kept as JSON, refusals are RecoveryRefusedError', () => {
  const db = fresh();
  addRun(db, 'r1');
  const t0 = meta(db, 'r1').lastHeartbeat;
  rr.heartbeat(db, 'r1', { lease: 1 });
  rr.checkpoint(db, 'r1', 3, { plate: 'P1', next_well: 'C4' }, { lease: 1 });
  const s = rr.runState(db, 'r1');
  assert.equal(s.checkpointStep, 3);
  assert.deepEqual(s.checkpointState, { plate: 'P1', next_well: 'C4' });
  assert.ok(s.lastHeartbeat >= t0);
  assert.equal(meta(db, 'r1').operator, 'ana', 'the app keys are kept');

  const refused = (fn, reason, action) => {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof rr.RecoveryRefusedError, `${e}`);
      assert.equal(e.reason, reason, e.message);
      assert.equal(e.action, action);
      assert.match(e.message, /^run_recovery_(actions|lease_guard): /);
      return e;
    }
    assert.fail(`not refused: expected ${reason}`);
  };
  refused(() => rr.heartbeat(db, 'r1', { lease: 2 }), 'stale-lease', 'heartbeat');
  refused(() => rr.checkpoint(db, 'r1', 4, null, { lease: 7 }), 'stale-lease', 'checkpoint');
  refused(() => rr.heartbeat(db, 'nope'), 'no-such-run', 'heartbeat');
  addRun(db, 'done', { status: 'completed' });
  refused(() => rr.heartbeat(db, 'done'), 'not-live', 'heartbeat');
  assert.throws(() => rr.heartbeat(db, 'r1', { lease: 0 }), TypeError);
  assert.throws(() => rr.checkpoint(db, 'r1', -1, null), TypeError);

  // The lease guard: a plain app write that carries an older lease.
  db.exec(`UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 2) WHERE accession_id = 'r1'`);
  let e;
  try {
    db.exec(`UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 1) WHERE accession_id = 'r1'`);
  } catch (err) {
    e = rr.refusalOf(err, 'r1');
  }
  assert.equal(e?.reason, 'stale-lease');
  assert.equal(e?.action, 'write');
  db.close();
});

test('a step and its checkpoint in one transaction: a refused checkpoint rolls the step back', () => {
  const db = fresh();
  db.exec('CREATE TABLE effects (run_id TEXT, step INTEGER)');
  addRun(db, 'r1');
  const step = (n, lease) =>
    db.transaction(() => {
      db.exec({ sql: 'INSERT INTO effects VALUES (?, ?)', bind: ['r1', n] });
      rr.checkpoint(db, 'r1', n, { next: n + 1 }, { lease });
    });
  step(1, 1);
  age(db, 'r1', 60000);
  assert.equal(rr.recover(db, 'r1', 'resume').lease, 2);
  assert.throws(() => step(2, 1), rr.RecoveryRefusedError);
  assert.equal(db.selectValue('SELECT count(*) FROM effects'), 1, 'the zombie step left nothing');
  step(2, 2);
  assert.deepEqual(db.selectObjects('SELECT step FROM effects ORDER BY step').map((r) => r.step), [1, 2]);
  db.close();
});

test('orphans: stale live runs oldest first, threshold per call, dismissed hidden, from the status index', () => {
  const db = fresh();
  addRun(db, 'fresh');
  addRun(db, 'old', { name: 'ELISA plate 1' });
  addRun(db, 'older', { status: 'PAUSED' });
  addRun(db, 'finished', { status: 'completed', meta: '{"lastHeartbeat": 1}' });
  age(db, 'old', 45000);
  age(db, 'older', 90000);
  rr.checkpoint(db, 'old', 0, null); // stamps a heartbeat too: age it again
  age(db, 'old', 45000);
  assert.deepEqual(rr.orphans(db).map((o) => o.runId), ['older', 'old']);
  assert.deepEqual(rr.orphans(db, { thresholdMs: 60000 }).map((o) => o.runId), ['older']);
  assert.deepEqual(rr.orphans(db, { thresholdMs: 0 }).map((o) => o.runId).sort(), ['fresh', 'old', 'older']);
  const [older, old] = rr.orphans(db);
  assert.equal(old.name, 'ELISA plate 1');
  assert.equal(old.checkpointStep, 0);
  assert.equal(older.status, 'PAUSED');
  assert.ok(older.ageMs >= 90000);
  assert.equal(older.lease, 1);
  assert.equal(older.dismissed, false);
  rr.recover(db, 'older', 'dismiss');
  assert.deepEqual(rr.orphans(db).map((o) => o.runId), ['old']);
  assert.deepEqual(rr.orphans(db, { includeDismissed: true }).map((o) => [o.runId, o.dismissed]), [['older', true], ['old', false]]);
  // The plan: the status index, not a scan of every run.
  const plan = db
    .selectObjects(`EXPLAIN QUERY PLAN ${rr.orphansSql(db)}`, [null, 0])
    .map((r) => r.detail)
    .join('\n');
  assert.match(plan, /ix_protocol_runs_status/, plan);
  assert.doesNotMatch(plan, /SCAN protocol_runs\b(?! USING)/, plan);
  db.close();
});

test('recover: resume hands over a new lease and the checkpoint; a second client is told it was already recovered', () => {
  const db = fresh();
  addRun(db, 'r1');
  rr.checkpoint(db, 'r1', 3, { well: 'C4' }, { lease: 1 });
  assert.throws(() => rr.recover(db, 'r1', 'resume'), (e) => e.reason === 'still-alive');
  age(db, 'r1', 45000);
  const out = rr.recover(db, 'r1', 'resume', { lease: 1 });
  assert.equal(out.action, 'resume');
  assert.equal(out.lease, 2);
  assert.equal(out.resumes, 1);
  assert.equal(out.checkpointStep, 3);
  assert.deepEqual(out.checkpointState, { well: 'C4' });
  assert.equal(out.status, 'running');
  assert.ok(out.ageMs < 1000, 'a fresh heartbeat');
  assert.throws(() => rr.recover(db, 'r1', 'resume'), (e) => e.reason === 'already-recovered');
  assert.throws(() => rr.recover(db, 'r1', 'explode'), TypeError);
  assert.throws(() => rr.recover(db, 'nope', 'resume'), (e) => e.reason === 'no-such-run');
  // Past max_resumes (3): refused, with a hint to fail it.
  for (let i = 2; i <= 3; i++) {
    age(db, 'r1', 45000);
    assert.equal(rr.recover(db, 'r1', 'resume').resumes, i);
  }
  age(db, 'r1', 45000);
  assert.throws(() => rr.recover(db, 'r1', 'resume'), (e) => e.reason === 'too-many-resumes' && /fail/.test(e.message));
  db.close();
});

test('recover: fail ends the run in the case the row uses, with end_time; dismiss changes no status', () => {
  const db = fresh();
  addRun(db, 'low');
  addRun(db, 'UP', { status: 'RUNNING' });
  addRun(db, 'd');
  for (const id of ['low', 'UP', 'd']) age(db, id, 45000);
  assert.equal(rr.recover(db, 'low', 'fail').status, 'failed');
  assert.equal(rr.recover(db, 'UP', 'fail').status, 'FAILED');
  assert.ok(db.selectValue("SELECT end_time FROM protocol_runs WHERE accession_id = 'UP'"));
  assert.equal(rr.runState(db, 'UP').lease, 2);
  // (the database says which: not live any more, or recovered by another client since its last heartbeat)
  assert.throws(() => rr.recover(db, 'UP', 'resume'), (e) => ['not-live', 'already-recovered'].includes(e.reason));
  const d = rr.recover(db, 'd', 'dismiss');
  assert.equal(d.status, 'running');
  assert.equal(d.dismissed, true);
  assert.equal(d.lease, 1);
  assert.deepEqual(rr.orphans(db), []);
  rr.heartbeat(db, 'd');
  age(db, 'd', 45000);
  assert.deepEqual(rr.orphans(db).map((o) => o.runId), ['d'], 'back once it heartbeats again');
  assert.equal(meta(db, 'low').recoveryLog.at(-1).action, 'fail');
  db.close();
});

test('startPulse: beats on its interval, stops on stop(), and stops and reports when the lease is lost', async () => {
  const db = fresh();
  addRun(db, 'r1');
  const p = rr.startPulse(db, 'r1', { intervalMs: 20, lease: 1 });
  const until = Date.now() + 5000;
  while (p.beats < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  assert.ok(p.beats >= 4, `beats: ${p.beats}`);
  p.stop();
  assert.deepEqual(await p.done, { reason: 'stopped' });
  const n = p.beats;
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(p.beats, n, 'no beat after stop()');

  let lost = null;
  const q = rr.startPulse(db, 'r1', { intervalMs: 20, lease: 1, onLost: (e) => (lost = e) });
  age(db, 'r1', 45000);
  rr.recover(db, 'r1', 'resume'); // another client takes the run over: lease 2
  const r = await q.done;
  assert.equal(r.reason, 'lost');
  assert.equal(r.error.reason, 'stale-lease');
  assert.equal(lost, r.error);
  assert.equal(q.running, false);

  // A pulse on a run that is not live any more stops at once.
  const z = rr.startPulse(db, 'nope', { intervalMs: 20 });
  assert.equal((await z.done).error.reason, 'no-such-run');
  db.close();
});

test('the TypeScript declarations (index.d.ts, dialog.d.ts) compile against the README-style use in types/check.ts', async () => {
  const { execFileSync } = await import('node:child_process');
  const tsc = path.join(HERE, 'node_modules', 'typescript', 'bin', 'tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', path.join(HERE, 'types', 'tsconfig.json')], { encoding: 'utf8' });
  } catch (e) {
    assert.fail(`tsc: ${e.stdout}${e.stderr}`);
  }
});

test('orphans() lists exactly what the installed view run_recovery_orphans lists, in the order of orphaned_runs', () => {
  const db = fresh();
  const statuses = ['running', 'RUNNING', 'Paused', 'preparing', 'REQUIRES_INTERVENTION', 'queued', 'completed', 'FAILED'];
  const metas = [
    '{}',
    null,
    'not json',
    '[1, 2]',
    '{"lastHeartbeat": 5}',
    '{"operator": "x"}',
  ];
  let n = 0;
  for (const status of statuses) {
    for (const m of metas) {
      for (const agoMs of [0, 45000, 3600000]) {
        const id = `r${String(++n).padStart(3, '0')}`;
        addRun(db, id, { status, meta: m });
        const valid = db.selectValue("SELECT CASE WHEN json_valid(properties_json) THEN json_type(properties_json) = 'object' ELSE 0 END FROM protocol_runs WHERE accession_id = ?", [id]);
        if (valid && agoMs) age(db, id, agoMs);
      }
    }
  }
  // Some dismissed, one dismissed then heartbeating again.
  for (const o of rr.orphans(db).filter((_, i) => i % 3 === 0)) {
    try {
      rr.recover(db, o.runId, 'dismiss');
    } catch (e) {
      assert.equal(e.reason, 'not-json-object', e.message); // listed (it is live and silent) but its metadata is left alone
    }
  }
  const view = db.selectObjects('SELECT run_id, dismissed FROM run_recovery_orphans ORDER BY age_ms DESC, run_id');
  assert.ok(view.length > 10, `a meaningful set: ${view.length}`);
  assert.deepEqual(rr.orphans(db).map((o) => o.runId), view.map((r) => r.run_id));
});

test('orphans: a heartbeat more than stale_after_ms ahead (a clock that was wrong) is an orphan; 20 s ahead is alive', () => {
  const db = fresh();
  addRun(db, 'wrong');
  addRun(db, 'skewed');
  db.exec("UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', (properties_json ->> '$.lastHeartbeat') + 3600000) WHERE accession_id = 'wrong'");
  db.exec("UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', (properties_json ->> '$.lastHeartbeat') + 20000) WHERE accession_id = 'skewed'");
  const found = rr.orphans(db);
  assert.deepEqual(found.map((o) => o.runId), ['wrong']);
  assert.ok(found[0].ageMs < -3000000, `ageMs ${found[0].ageMs}`);
  // The same rows as the view the install ships.
  assert.deepEqual(db.selectValues('SELECT run_id FROM run_recovery_orphans'), ['wrong']);
});

test('orphans: the live statuses in the extension\'s spellings, non-ASCII included', () => {
  const db = fresh();
  const cfg = JSON.parse(db.selectValue("SELECT value FROM run_recovery_settings WHERE key = 'config'"));
  cfg.live_statuses = ['läuft', 'İşlem'];
  db.exec({ sql: "UPDATE run_recovery_settings SET value = ? WHERE key = 'config'", bind: [JSON.stringify(cfg)] });
  const sql = rr.orphansSql(db);
  const listed = /WHERE status IN \(([^)]*)\)/.exec(sql)[1];
  for (const s of ['läuft', 'LÄUFT', 'Läuft', 'İşlem', 'İŞLEM']) assert.ok(listed.includes(`'${s}'`), `${s} in ${listed}`);
  assert.ok(!listed.includes("'lÄuft'"), listed);
});
