// The benchmark behind bench.html: per operation, through bindings/web and
// through the same work written by hand in SQL, on one OPFS database of
// `runs` runs (1 % live, a tenth of those orphaned). Interleaved rounds,
// medians; each write is its own transaction (autocommit), as in the app.
import sqlite3InitModule from './node_modules/@sqlite.org/sqlite-wasm/dist/index.mjs';
import { install, heartbeat, checkpoint, orphans } from '../../bindings/web/index.js';

const log = (line) => postMessage({ type: 'log', line });
const NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

onmessage = async ({ data: { vfs, runs, rounds, iters } }) => {
  try {
    postMessage({ type: 'done', result: await bench(vfs, runs, rounds, iters) });
  } catch (e) {
    postMessage({ type: 'error', message: String(e?.stack ?? e) });
  }
};

async function bench(vfs, runs, rounds, iters) {
  const sqlite3 = await sqlite3InitModule({ print: () => {}, printErr: () => {} });
  const file = `/bench-${runs}.db`;
  let db;
  if (vfs === 'opfs-sahpool') {
    const pool = await sqlite3.installOpfsSAHPoolVfs({ name: 'run-recovery-bench' });
    pool.unlink(file);
    db = new pool.OpfsSAHPoolDb(file);
  } else {
    db = new sqlite3.oo1.OpfsDb(`file:${file}?delete-before-open=1`, 'c');
  }
  const schema = await (await fetch(new URL('../../sql/protocol_runs.sql', import.meta.url))).text();
  const t0 = performance.now();
  db.exec(schema);
  install(db);
  const live = [];
  db.transaction(() => {
    const st = db.prepare(
      "INSERT INTO protocol_runs (accession_id, name, status, properties_json, top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, 'proto')",
    );
    const now = Date.now();
    for (let i = 0; i < runs; i++) {
      const id = `run-${String(i).padStart(6, '0')}`;
      const isLive = i % 100 === 0;
      const orphan = isLive && i % 1000 === 0;
      const meta = { operator: 'bench', lastHeartbeat: now - (orphan ? 600000 : isLive ? 0 : 86400000), lease: 1, checkpointStep: i % 8 };
      st.bind([id, `plate ${i}`, isLive ? 'running' : 'completed', JSON.stringify(meta)]).stepReset();
      if (isLive && !orphan) live.push(id);
    }
    st.finalize();
    // Going live stamped a fresh heartbeat (the insert trigger): age the orphans by a plain
    // write, which the settings allow on purpose (allow_backdating).
    db.exec("INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')");
    db.exec(`UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ${NOW} - 600000)
              WHERE status = 'running' AND CAST(substr(accession_id, 5) AS INTEGER) % 1000 = 0`);
  });
  log(`SQLite ${sqlite3.version.libVersion} on ${vfs}: ${runs} runs (${live.length} live and heartbeating, ${runs / 1000} orphans) built in ${(performance.now() - t0).toFixed(0)} ms`);

  // The hand-written baselines: what an app would write without run_recovery's actions.
  const hbHand = db.prepare(
    `UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ${NOW})
      WHERE accession_id = ? AND status IN ('running', 'RUNNING') AND properties_json ->> '$.lease' = ?`,
  );
  const cpHand = db.prepare(
    `UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.checkpointStep', ?, '$.checkpointState', json(?), '$.lastHeartbeat', ${NOW})
      WHERE accession_id = ? AND status IN ('running', 'RUNNING') AND properties_json ->> '$.lease' = ?`,
  );
  const scanHand = db.prepare(
    `SELECT accession_id, name, status, properties_json ->> '$.lastHeartbeat' AS last_heartbeat,
            properties_json ->> '$.checkpointStep' AS checkpoint_step, properties_json -> '$.checkpointState' AS checkpoint_state
       FROM protocol_runs WHERE status IN ('running', 'RUNNING') AND properties_json ->> '$.lastHeartbeat' < ${NOW} - 30000
      ORDER BY properties_json ->> '$.lastHeartbeat'`,
  );
  let step = 100; // past every seeded checkpoint: checkpoints never go backwards
  const ops = {
    heartbeat: {
      web: (id) => heartbeat(db, id, { lease: 1 }),
      hand: (id) => hbHand.bind([id, 1]).stepReset(),
    },
    checkpoint: {
      web: (id) => checkpoint(db, id, ++step, { well: step }, { lease: 1 }),
      hand: (id) => cpHand.bind([++step, JSON.stringify({ well: step }), id, 1]).stepReset(),
    },
    'orphan scan': {
      web: () => {
        if (orphans(db).length !== runs / 1000) throw new Error('orphans: wrong count');
      },
      hand: () => {
        let n = 0;
        while (scanHand.step()) n++;
        scanHand.reset();
        if (n !== runs / 1000) throw new Error(`hand scan: wrong count ${n}`);
      },
    },
  };
  const result = { vfs, sqlite: sqlite3.version.libVersion, runs, ops: {} };
  for (const [name, { web, hand }] of Object.entries(ops)) {
    const times = { web: [], hand: [] };
    for (let r = 0; r < rounds; r++) {
      for (const [kind, fn] of r % 2 ? [['hand', hand], ['web', web]] : [['web', web], ['hand', hand]]) {
        const s = performance.now();
        for (let i = 0; i < iters; i++) fn(live[i % live.length]);
        times[kind].push((performance.now() - s) / iters);
      }
    }
    const median = (a) => a.sort((x, y) => x - y)[a.length >> 1];
    const w = median(times.web);
    const h = median(times.hand);
    result.ops[name] = { webMs: w, handMs: h, ratio: w / h };
    log(`${name.padEnd(12)} bindings/web ${w.toFixed(3).padStart(8)} ms   hand-written SQL ${h.toFixed(3).padStart(8)} ms   ratio ${(w / h).toFixed(2)}`);
  }
  hbHand.finalize();
  cpHand.finalize();
  scanHand.finalize();
  db.close();
  return result;
}
