'use strict';
// run_recovery loaded into better-sqlite3 (its own bundled SQLite) through the
// bindings/node package, running the recovery scenario end to end.
// Run by `make test-node` (node --test).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const runRecovery = require(path.join(ROOT, 'bindings', 'node'));

// The addon must really have been compiled here (node-gyp, offline): no
// prebuilt binary can be downloaded, and `npm ci` may skip install scripts.
const ADDON = path.join(__dirname, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node');
const Database = require('better-sqlite3');

// The host schema (sql/protocol_runs.sql), shared by the tests of every language.
const SCHEMA = require('fs').readFileSync(path.join(__dirname, '..', '..', 'sql', 'protocol_runs.sql'), 'utf8');

const DEAD_RESUME = 'a'.repeat(32);
const DEAD_FAIL = 'b'.repeat(32);
const DEAD_DISMISS = 'c'.repeat(32);
const LIVE_1 = 'd'.repeat(32);
const LIVE_2 = 'e'.repeat(32);

// The crate's version, read by the repository's one reader of Cargo.toml.
const { cargoVersion } = require(path.join(ROOT, 'bindings', 'node', 'build.js'));

function openDb() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'run-recovery-node-'));
  const db = new Database(path.join(dir, 'runs.db'));
  runRecovery.load(db);
  db.exec(SCHEMA);
  return db;
}

const one = (db, sql, ...args) => db.prepare(sql).pluck().get(...args);
const meta = (db, id) => JSON.parse(one(db, 'SELECT properties_json FROM protocol_runs WHERE accession_id = ?', id));
const ids = (db, sql = 'SELECT run_id FROM orphaned_runs') => db.prepare(sql).pluck().all();
function insert(db, id, status, props) {
  db.prepare(
    `INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id)
     VALUES (?, ?, ?, ?, ?)`,
  ).run(id, `run ${id[0]}`, status, props === null ? null : JSON.stringify(props), 'f'.repeat(32));
}

test('better-sqlite3 was built from source here and bundles its own SQLite', () => {
  assert.ok(fs.existsSync(ADDON), `better-sqlite3's addon was not built: ${ADDON} is missing (see .ci/install.d/clients.sh)`);
  const db = new Database(':memory:');
  const v = one(db, 'SELECT sqlite_version()');
  console.log(`node ${process.version}, better-sqlite3 ${require('better-sqlite3/package.json').version}, bundled SQLite ${v}`);
  assert.match(v, /^3\.(5[3-9]|[6-9]\d)\./, `expected better-sqlite3 12.x's SQLite 3.53+, found ${v}`);
});

test('versions: run_recovery_version() is v + Cargo.toml version = the Node package version', () => {
  const db = new Database(':memory:');
  runRecovery.load(db);
  const want = cargoVersion();
  assert.equal(one(db, 'SELECT run_recovery_version()'), `v${want}`);
  assert.equal(runRecovery.version, want);
  assert.equal(require(path.join(ROOT, 'bindings', 'node', 'package.json')).version, want);
  const debug = JSON.parse(one(db, 'SELECT run_recovery_debug()'));
  assert.equal(debug.sqlite, one(db, 'SELECT sqlite_version()'), 'runs on the host SQLite');
  assert.equal(debug.build, 'loadable');
});

test('getLoadablePath() names the library in the package; load() rejects a non-database', () => {
  const p = runRecovery.getLoadablePath();
  assert.equal(path.dirname(p), path.join(ROOT, 'bindings', 'node', 'lib'));
  assert.equal(fs.readFileSync(p).subarray(0, 4).toString('latin1'), '\x7fELF');
  // The same path works with the plain better-sqlite3 API.
  const db = new Database(':memory:');
  db.loadExtension(p);
  assert.equal(one(db, "SELECT count(*) FROM pragma_module_list WHERE name = 'orphaned_runs'"), 1);
  assert.throws(() => runRecovery.load({}), /run-recovery\.load: expected a database with loadExtension/);
  assert.throws(() => new Database(':memory:').loadExtension(p + '.nope'), /run_recovery\.so\.nope/);
});

test('the recovery scenario', () => {
  const db = openDb();
  const t0 = Date.now();
  // Executors that died long ago, seeded before install (install stamps only runs without a heartbeat).
  insert(db, DEAD_RESUME, 'running', {
    operator: 'ana',
    deck: { slots: 3 },
    lastHeartbeat: t0 - 600_000,
    lease: 1,
    checkpointStep: 2,
    checkpointState: { plate: 'P1', well: 'B3' },
  });
  insert(db, DEAD_FAIL, 'RUNNING', { operator: 'bo', lastHeartbeat: t0 - 900_000 });
  insert(db, DEAD_DISMISS, 'paused', { operator: 'cy', lastHeartbeat: t0 - 300_000 });

  const cfg = JSON.parse(one(db, 'SELECT run_recovery_install()'));
  assert.equal(cfg.table, 'protocol_runs');
  assert.equal(cfg.stale_after_ms, 30000);
  assert.equal(meta(db, DEAD_RESUME).lastHeartbeat, t0 - 600_000);

  // Runs start: every transition into a live status stamps a heartbeat.
  insert(db, LIVE_1, 'queued', { operator: 'dee' });
  assert.equal(meta(db, LIVE_1).lastHeartbeat, undefined);
  db.prepare("UPDATE protocol_runs SET status = 'running' WHERE accession_id = ?").run(LIVE_1);
  assert.ok(meta(db, LIVE_1).lastHeartbeat >= t0);
  assert.equal(meta(db, LIVE_1).lease, 1);
  insert(db, LIVE_2, 'running', null);
  assert.ok(meta(db, LIVE_2).lastHeartbeat >= t0);

  // Heartbeat and checkpoint.
  const hb = one(db, 'SELECT run_heartbeat(?, 1)', LIVE_1);
  assert.equal(meta(db, LIVE_1).lastHeartbeat, hb);
  const hb2 = one(db, "SELECT run_checkpoint(?, 1, json_object('well', 'A1'))", LIVE_1);
  const m1 = meta(db, LIVE_1);
  assert.ok(hb2 >= hb);
  assert.deepEqual([m1.checkpointStep, m1.checkpointState, m1.operator], [1, { well: 'A1' }, 'dee']);

  // Orphans: table-valued function and view, oldest first.
  const rows = db.prepare('SELECT * FROM orphaned_runs').all();
  assert.deepEqual(rows.map((r) => r.run_id), [DEAD_FAIL, DEAD_RESUME, DEAD_DISMISS]);
  const r = rows[1];
  assert.equal(r.last_heartbeat, t0 - 600_000);
  assert.ok(r.age_ms >= 600_000);
  assert.equal(r.checkpoint_step, 2);
  assert.deepEqual(JSON.parse(r.checkpoint_state), { plate: 'P1', well: 'B3' });
  assert.deepEqual([r.lease, r.resumes, r.dismissed], [1, 0, 0]);
  assert.deepEqual(ids(db, 'SELECT run_id FROM run_recovery_orphans ORDER BY age_ms DESC, run_id'), [DEAD_FAIL, DEAD_RESUME, DEAD_DISMISS]);
  assert.deepEqual(
    new Set(ids(db, `SELECT run_id FROM orphaned_runs(30000, ${Date.now() + 60_000})`)),
    new Set([DEAD_FAIL, DEAD_RESUME, DEAD_DISMISS, LIVE_1, LIVE_2]),
  );
  assert.throws(() => one(db, "SELECT recover_run(?, 'resume')", LIVE_1), /recover_run: run '.*' is still alive/);

  // Fail one: written back in the row's case.
  const failed = JSON.parse(one(db, "SELECT recover_run(?, 'fail')", DEAD_FAIL));
  assert.deepEqual([failed.action, failed.status, failed.lease], ['fail', 'FAILED', 2]);
  const fr = db.prepare('SELECT status, end_time FROM protocol_runs WHERE accession_id = ?').get(DEAD_FAIL);
  assert.equal(fr.status, 'FAILED');
  assert.ok(fr.end_time);
  assert.equal(meta(db, DEAD_FAIL).operator, 'bo');

  // Resume one from its checkpoint.
  const staleCopy = JSON.stringify(meta(db, DEAD_RESUME));
  const out = JSON.parse(one(db, "SELECT recover_run(?, 'resume')", DEAD_RESUME));
  assert.equal(out.lease, 2);
  assert.equal(out.checkpoint_step, 2);
  assert.deepEqual(out.checkpoint_state, { plate: 'P1', well: 'B3' });
  assert.equal(one(db, 'SELECT status FROM protocol_runs WHERE accession_id = ?', DEAD_RESUME), 'running');
  const m = meta(db, DEAD_RESUME);
  assert.deepEqual([m.lease, m.resumes, m.operator, m.deck], [2, 1, 'ana', { slots: 3 }]);
  assert.deepEqual(ids(db), [DEAD_DISMISS]);

  // The old executor wakes up with lease 1: refused by the function and by the trigger.
  assert.throws(() => one(db, 'SELECT run_heartbeat(?, 1)', DEAD_RESUME), /run_heartbeat: stale lease 1 .*found lease 2/);
  assert.throws(
    () => db.prepare('UPDATE protocol_runs SET properties_json = ? WHERE accession_id = ?').run(staleCopy, DEAD_RESUME),
    (e) => e.code === 'SQLITE_CONSTRAINT_TRIGGER' && /run_recovery_lease_guard: stale write refused/.test(e.message),
  );
  assert.deepEqual(meta(db, DEAD_RESUME), m);
  assert.ok(one(db, 'SELECT run_heartbeat(?, 2)', DEAD_RESUME) >= m.lastHeartbeat);

  // The app rewrites its metadata without the recovery keys: merged back, its own keys kept.
  const before = meta(db, DEAD_RESUME);
  db.prepare(
    "UPDATE protocol_runs SET properties_json = json_object('operator', 'ana', 'note', 'plate re-seated') WHERE accession_id = ?",
  ).run(DEAD_RESUME);
  const merged = meta(db, DEAD_RESUME);
  assert.equal(merged.note, 'plate re-seated');
  assert.equal(merged.operator, 'ana');
  for (const k of ['lastHeartbeat', 'lease', 'resumes', 'checkpointStep', 'checkpointState', 'recoveryLog']) {
    assert.deepEqual(merged[k], before[k], k);
  }

  // Dismiss: hidden until it heartbeats again.
  assert.equal(JSON.parse(one(db, "SELECT recover_run(?, 'dismiss')", DEAD_DISMISS)).action, 'dismiss');
  assert.deepEqual(ids(db), []);
  assert.deepEqual(ids(db, 'SELECT run_id FROM orphaned_runs WHERE include_dismissed = 1'), [DEAD_DISMISS]);
  db.close();
});

test('errors name the function and the value', () => {
  const db = openDb();
  assert.throws(() => one(db, "SELECT run_heartbeat('x')"), /run_heartbeat: run_recovery is not installed/);
  one(db, 'SELECT run_recovery_install()');
  assert.throws(() => one(db, "SELECT run_heartbeat('nope')"), /run_heartbeat: no run with accession_id 'nope'/);
  assert.throws(() => one(db, "SELECT recover_run('nope', 'revive')"), /recover_run: unknown action 'revive'/);
  db.close();
});
