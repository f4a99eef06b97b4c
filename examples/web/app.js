// The page: talks to the Worker that owns the database, shows the protocol's
// progress, and on load opens <run-recovery-dialog> when runs were interrupted.
// URL query: threshold_ms (30000), step_ms (1000), steps (8), vfs (opfs | opfs-sahpool),
// status_case (lower | upper).
import '../../bindings/web/dialog.js';

const q = new URLSearchParams(location.search);
const int = (name, dflt) => {
  const v = Number.parseInt(q.get(name) ?? '', 10);
  return Number.isInteger(v) && v > 0 ? v : dflt;
};
const config = {
  thresholdMs: int('threshold_ms', 30000),
  stepMs: int('step_ms', 1000),
  steps: int('steps', 8),
  vfs: q.get('vfs') === 'opfs-sahpool' ? 'opfs-sahpool' : 'opfs',
  upper: q.get('status_case') === 'upper', // new runs stored as RUNNING (newer databases) instead of running
};
// Heartbeat often enough that a live run never looks stale: 4 beats per threshold.
config.intervalMs = Math.max(50, Math.min(5000, Math.floor(config.thresholdMs / 4)));

const $ = (id) => document.getElementById(id);
const startButton = $('start');
const statusLine = $('status');
const progress = $('progress');
const notice = $('notice');
const other = $('other');
const dialog = document.querySelector('run-recovery-dialog');

// --- the Worker, as promises -------------------------------------------------
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const pending = new Map();
let nextId = 1;
function call(op, args) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, args });
  });
}
worker.onmessage = ({ data }) => {
  if (data.id !== undefined) {
    const p = pending.get(data.id);
    pending.delete(data.id);
    if (data.ok) p.resolve(data.result);
    else p.reject(Object.assign(new Error(data.error.message), data.error));
    return;
  }
  events[data.type]?.(data);
};
worker.onerror = (e) => showNotice(`The database worker failed: ${e.message ?? 'unknown error'}`);

// --- what the page shows -----------------------------------------------------
function setState(state) {
  document.body.dataset.state = state;
}
function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}
function showProgress(step, steps) {
  progress.hidden = false;
  progress.max = steps;
  progress.value = step - 1;
}

// This tab executes one run at a time: while it does, it does not offer others
// (they are offered again once it is done, or in another tab).
let executing = false;

const events = {
  progress({ name, step, steps }) {
    executing = true;
    setState('running');
    statusLine.textContent = `${name}: step ${step} of ${steps}`;
    showProgress(step, steps);
    startButton.disabled = true;
  },
  completed({ name, steps }) {
    executing = false;
    setState('completed');
    statusLine.textContent = `Run completed: ${name}, ${steps} of ${steps} steps`;
    progress.value = steps;
    startButton.disabled = false;
    refresh();
  },
  fenced({ name, step }) {
    executing = false;
    setState('fenced');
    statusLine.textContent = `Stopped: ${name}`;
    showNotice(
      `This tab stopped running “${name}”: while it was not responding, the run was taken over by another tab ` +
        `(resumed or marked as failed there). Its writes were refused, so step ${step} was not recorded twice. Nothing else to do here.`,
    );
    startButton.disabled = false;
    refresh();
  },
  warning({ message }) {
    console.warn(message);
  },
};

function renderRecent(recent) {
  const body = $('recent').tBodies[0];
  body.replaceChildren(
    ...recent.map((r) => {
      const tr = document.createElement('tr');
      const done = r.checkpointStep ?? 0;
      for (const [text, cls] of [[r.name ?? r.runId, ''], [r.status, 'status'], [`${done} of ${r.steps || '?'} steps`, '']]) {
        const td = document.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }),
  );
}

function renderOthers(live) {
  if (!live.length) {
    other.hidden = true;
    return;
  }
  other.hidden = false;
  other.textContent = live
    .map((r) => `“${r.name}” is running in another tab or window (step ${(r.checkpointStep ?? 0) + 1} of ${r.steps || '?'}). It is alive, so it is not offered for recovery here.`)
    .join(' ');
}

// --- recovery ----------------------------------------------------------------
dialog.recover = (runId, action, orphan) => call('recover', { runId, action, thresholdMs: config.thresholdMs, lease: orphan.lease });

dialog.addEventListener('run-recovery-decision', async ({ detail: { action, outcome, orphan } }) => {
  if (action === 'resume') {
    try {
      const r = await call('resume', { runId: outcome.runId, lease: outcome.lease, stepMs: config.stepMs, intervalMs: config.intervalMs });
      showNotice('');
      statusLine.textContent = `${r.name}: step ${r.next} of ${r.steps}`;
    } catch (e) {
      showNotice(`Could not continue “${orphan.name}” here: ${e.message}`);
    }
  } else if (action === 'fail') {
    statusLine.textContent = `Marked as failed: ${orphan.name}`;
  } else {
    statusLine.textContent = `Dismissed: ${orphan.name} (it is offered again if it sends a heartbeat and stops again)`;
  }
  refresh();
});
dialog.addEventListener('run-recovery-close', () => refresh());

let scanning = false;
async function refresh({ offer = false } = {}) {
  if (scanning || document.body.dataset.state === 'locked') return;
  scanning = true;
  try {
    const s = await call('scan', { thresholdMs: config.thresholdMs });
    renderRecent(s.recent);
    renderOthers(s.live);
    if (offer && !executing && s.orphans.length && !dialog.open) dialog.show(s.orphans);
    document.body.dataset.scans = String(Number(document.body.dataset.scans ?? 0) + 1);
    return s;
  } finally {
    scanning = false;
  }
}

// --- start -------------------------------------------------------------------
startButton.addEventListener('click', async () => {
  startButton.disabled = true;
  showNotice('');
  try {
    await call('start', { steps: config.steps, stepMs: config.stepMs, intervalMs: config.intervalMs, upper: config.upper });
    refresh();
  } catch (e) {
    startButton.disabled = false;
    showNotice(`Could not start the run: ${e.message}`);
  }
});

// Another tab is in the middle of a write ("opfs" VFS: one writer at a time,
// and the worker's own retries gave up): say so and try again, for a while.
const BUSY_TRIES = 30;
const busy = (e) => /SQLITE_BUSY|database is locked/i.test(String(e?.message));
async function waitBusy() {
  statusLine.textContent = 'Another tab is writing to the database; trying again…';
  await new Promise((r) => setTimeout(r, 1000));
}

async function main() {
  $('protocol-desc').textContent = `${config.steps} steps of ${config.stepMs / 1000} s each; a checkpoint after every step. ` +
    `A run that stops sending heartbeats for ${config.thresholdMs / 1000} s is offered for recovery.`;
  let info;
  for (let attempt = 1; ; attempt++) {
    try {
      info = await call('open', { vfs: config.vfs });
      break;
    } catch (e) {
      if (e.code === 'locked' && attempt < 3) {
        await new Promise((r) => setTimeout(r, 500 * attempt)); // a reloaded tab's old worker may still hold it
        continue;
      }
      if (busy(e) && attempt < BUSY_TRIES) {
        await waitBusy();
        continue;
      }
      if (e.code === 'locked') {
        setState('locked');
        statusLine.textContent = 'This database is open in another tab.';
        showNotice(
          'This page keeps its runs in storage that only one tab at a time can use (opfs-sahpool). ' +
            'Another tab of this page has it open: continue there, or close that tab and reload this one.',
        );
        return;
      }
      setState('error');
      statusLine.textContent = 'The database could not be opened.';
      showNotice(e.message);
      throw e;
    }
  }
  $('foot').textContent = `SQLite ${info.sqliteVersion} · VFS ${info.vfs} · ${info.file}`;
  let s;
  for (let attempt = 1; ; attempt++) {
    try {
      s = (await refresh({ offer: true })) ?? { orphans: [] };
      break;
    } catch (e) {
      if (!busy(e) || attempt >= BUSY_TRIES) throw e;
      await waitBusy();
    }
  }
  setState('idle');
  startButton.disabled = false;
  statusLine.textContent = s.orphans.length ? 'Interrupted runs found: decide what happens to them.' : 'Ready. No interrupted runs.';
  document.body.dataset.scanned = '1';
  // Keep looking: a run in another tab that stops heartbeating is offered here too.
  setInterval(() => refresh({ offer: true }), Math.max(1000, Math.min(10000, Math.floor(config.thresholdMs / 2))));
}

// For tests and the curious: read the database from the console.
window.runRecoveryExample = { config, query: (sql, bind) => call('query', { sql, bind }) };
main();
