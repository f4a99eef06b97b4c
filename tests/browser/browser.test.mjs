// The browser app's recovery, in a real browser: Debian's chromium (headless,
// persistent profile, started by the harness so it can be SIGKILLed) driving
// examples/web, whose database lives in OPFS and is owned by a module Worker.
// Each test has its own profile (its own OPFS) and browser; one server for the
// file (the port is part of the OPFS origin). Run by `make test-browser`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { server, launch, profileDir, openExample, query, stopAll, scoped, waitFor, until, dialogOf, TARGET } from './harness.mjs';

after(stopAll);

const srv = await server();
const URL_ = srv.url;

// Quick settings: a run that misses 2 s of heartbeats is an orphan (the page pulses every 500 ms).
const QUICK = { threshold_ms: 2000, step_ms: 300, steps: 8 };

async function runRow(page, runId) {
  const [row] = await query(
    page,
    `SELECT p.status, p.end_time, r.live, r.last_heartbeat, r.age_ms, r.checkpoint_step, r.lease, r.resumes, r.dismissed
       FROM protocol_runs p JOIN run_recovery_runs r ON r.run_id = p.accession_id WHERE p.accession_id = ?`,
    [runId],
  );
  return row;
}

async function onlyRunId(page) {
  const rows = await query(page, 'SELECT accession_id AS id FROM protocol_runs');
  assert.equal(rows.length, 1, `one run expected, found ${rows.length}`);
  return rows[0].id;
}

/** Starts a run in `page` and waits until its checkpoint reached `step`. */
async function startAndReach(page, step) {
  await page.getByRole('button', { name: 'Start run' }).click();
  await page.getByText(/step \d+ of \d+/).waitFor();
  const runId = await waitFor('the run row', async () => (await query(page, 'SELECT accession_id AS id FROM protocol_runs'))[0]?.id);
  await waitFor(`checkpoint ${step}`, async () => (await runRow(page, runId)).checkpoint_step >= step);
  return runId;
}

/** Waits (on the wall clock: the user is away) until a heartbeat at `lastHeartbeat` is older than the threshold. */
async function awayUntilStale(lastHeartbeat, thresholdMs) {
  const until = lastHeartbeat + thresholdMs + 300;
  while (Date.now() < until) await new Promise((r) => setTimeout(r, Math.min(200, until - Date.now())));
}

/** Every step of the run done exactly once. */
async function assertExactlyOnce(page, runId, steps) {
  const log = await query(page, 'SELECT step, count(*) AS n, group_concat(lease) AS leases FROM example_step_log WHERE run_id = ? GROUP BY step ORDER BY step', [runId]);
  assert.deepEqual(
    log.map((r) => [r.step, r.n]),
    Array.from({ length: steps }, (_, i) => [i + 1, 1]),
    `every step exactly once: ${JSON.stringify(log)}`,
  );
  return log;
}

async function integrityOk(page) {
  const rows = await query(page, 'PRAGMA integrity_check');
  assert.deepEqual(rows.map((r) => Object.values(r)[0]), ['ok']);
}

test('the tab is closed mid-run: reopened after the threshold, the dialog offers the run at its step, Resume completes it', () => scoped(async () => {
  const b = await launch(profileDir('closed'));
  const a = await openExample(b.context, URL_, QUICK);
  const runId = await startAndReach(a, 3);
  const before = await runRow(a, runId);
  await a.close({ runBeforeUnload: false }); // no unload handlers: the tab is just gone
  await awayUntilStale(before.last_heartbeat + 600, QUICK.threshold_ms); // + a pulse that may have landed after the read

  const t0 = Date.now();
  const page = await b.context.newPage();
  await page.goto(`${URL_}?${new URLSearchParams(QUICK)}`);
  const dialog = dialogOf(page);
  await dialog.waitFor({ timeout: 10000 });
  console.log(`# dialog shown ${Date.now() - t0} ms after navigation started (page load to dialog)`);
  const state = await runRow(page, runId);
  assert.ok(state.checkpoint_step >= 3, `checkpoint kept: ${state.checkpoint_step}`);
  assert.equal(state.live, 1);

  // What the person reads: the run, its status, when it was last seen, the step it reached.
  const row = dialog.getByRole('group', { name: 'Serial dilution, plate 1' });
  await row.waitFor();
  const text = await row.innerText();
  assert.match(text, /running/i);
  assert.match(text, /last seen \d+ seconds? ago/);
  assert.match(text, new RegExp(`after step ${state.checkpoint_step}\\b`));
  // A real modal: focus moved into it, on the first decision.
  assert.equal(await page.evaluate(() => document.activeElement?.localName), 'run-recovery-dialog');
  assert.equal(await page.evaluate(() => document.activeElement.shadowRoot.activeElement?.textContent), 'Resume');

  // The screenshot for the docs (2x), and the dialog at 200 % zoom (a 550 px wide
  // viewport): it fits without horizontal scrolling and every decision is on screen.
  fs.mkdirSync(TARGET, { recursive: true });
  const cdp = await b.context.newCDPSession(page);
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 960, height: 600, deviceScaleFactor: 2, mobile: false });
  await page.screenshot({ path: path.join(TARGET, 'dialog.png') });
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: 550, height: 400, deviceScaleFactor: 2, mobile: false });
  await page.screenshot({ path: path.join(TARGET, 'dialog-200-percent.png') });
  const fit = await page.evaluate(() => {
    const d = document.querySelector('run-recovery-dialog').shadowRoot.querySelector('dialog');
    const r = d.getBoundingClientRect();
    return { overflow: d.scrollWidth - d.clientWidth, left: r.left, right: r.right, width: innerWidth };
  });
  assert.ok(fit.overflow <= 0 && fit.left >= 0 && fit.right <= fit.width, `fits at 200 %: ${JSON.stringify(fit)}`);
  for (const name of ['Resume', 'Mark as failed', 'Dismiss']) assert.ok(await row.getByRole('button', { name, exact: true }).isVisible());
  await cdp.send('Emulation.clearDeviceMetricsOverride');

  await row.getByRole('button', { name: 'Resume', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
  await page.getByText('Run completed').waitFor({ timeout: 30000 });

  const done = await runRow(page, runId);
  assert.equal(done.status, 'completed');
  assert.equal(done.lease, 2);
  assert.equal(done.resumes, 1);
  const log = await assertExactlyOnce(page, runId, QUICK.steps);
  for (const r of log) assert.equal(r.leases, r.step <= state.checkpoint_step ? '1' : '2', `step ${r.step} by the right executor`);
  await integrityOk(page);
  await b.close();
}));

test('the browser is SIGKILLed mid-run: relaunched on the same profile, Mark as failed ends the run (UPPERCASE database), no dialog on reload', () => scoped(async () => {
  const profile = profileDir('killed');
  const params = { ...QUICK, status_case: 'upper' };
  let b = await launch(profile);
  const a = await openExample(b.context, URL_, params);
  const runId = await startAndReach(a, 2);
  assert.equal((await runRow(a, runId)).status, 'RUNNING');
  const before = await runRow(a, runId);
  await b.crash(); // SIGKILL to the browser process: no unload, no goodbye
  assert.ok(b.exited);
  await awayUntilStale(before.last_heartbeat + 600, QUICK.threshold_ms);

  b = await launch(profile);
  const page = await openExample(b.context, URL_, params);
  const dialog = dialogOf(page);
  await dialog.waitFor({ timeout: 10000 });
  const row = dialog.getByRole('group', { name: 'Serial dilution, plate 1' });
  assert.match(await row.innerText(), /after step \d+/);
  await row.getByRole('button', { name: 'Mark as failed', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });

  const failed = await runRow(page, runId);
  assert.equal(failed.status, 'FAILED');
  assert.ok(failed.end_time, 'end_time set');
  assert.equal(failed.live, 0);
  assert.equal(failed.lease, 2); // 1 -> 2: the executor that died is fenced
  await integrityOk(page);

  await page.reload();
  await until(page, () => document.body.dataset.scanned === '1');
  await until(page, () => Number(document.body.dataset.scans) >= 2); // a periodic rescan too
  assert.equal(await dialog.isVisible(), false, 'no dialog for a failed run');
  await b.close();
}));

test('Dismiss hides the orphan until it heartbeats again; keyboard (Tab stays inside, Escape dismisses); a run that comes back to life is refused with a message', () => scoped(async () => {
  const b = await launch(profileDir('dismiss'));
  const a = await openExample(b.context, URL_, QUICK);
  const runId = await startAndReach(a, 2);
  const before = await runRow(a, runId);
  await a.close({ runBeforeUnload: false });
  await awayUntilStale(before.last_heartbeat + 600, QUICK.threshold_ms);

  const page = await openExample(b.context, URL_, QUICK);
  const dialog = dialogOf(page);
  await dialog.waitFor({ timeout: 10000 });
  // Tab and Shift+Tab cycle through the three decisions and never leave the dialog.
  const focused = () => page.evaluate(() => {
    const host = document.activeElement;
    return host?.localName === 'run-recovery-dialog' ? host.shadowRoot.activeElement?.textContent : `outside: ${host?.localName}`;
  });
  const seen = [];
  for (let i = 0; i < 4; i++) {
    await page.keyboard.press('Tab');
    seen.push(await focused());
  }
  assert.deepEqual(seen, ['Mark as failed', 'Dismiss', 'Resume', 'Mark as failed']);
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Shift+Tab');
  assert.equal(await focused(), 'Dismiss');

  await dialog.getByRole('button', { name: 'Dismiss', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await runRow(page, runId)).dismissed, 1);
  await page.reload();
  await until(page, () => Number(document.body.dataset.scans) >= 2);
  assert.equal(await dialog.isVisible(), false, 'a dismissed orphan is not offered again');

  // Its executor comes back for one heartbeat (lease 1) and dies again: offered again.
  await query(page, "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?, 'heartbeat', 1)", [runId]);
  assert.equal((await runRow(page, runId)).dismissed, 0);
  await dialog.waitFor({ timeout: 15000 }); // the page's periodic scan finds it once it is stale again
  // Escape = dismiss.
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  const after = await runRow(page, runId);
  assert.equal(after.dismissed, 1);
  assert.equal(after.status, 'running', 'dismiss changes no status');

  // Offered again, and while the dialog is open its executor comes back to life
  // (heartbeats every 300 ms): Resume is refused with a message, not a crash.
  await query(page, "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?, 'heartbeat', 1)", [runId]);
  await dialog.waitFor({ timeout: 15000 });
  let alive = true;
  const pulse = (async () => {
    while (alive) {
      await query(page, "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?, 'heartbeat', 1)", [runId]);
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  try {
    await dialog.getByRole('button', { name: 'Resume', exact: true }).click();
    await dialog.getByText('This run is alive again').waitFor();
  } finally {
    alive = false;
    await pulse;
  }
  const untouched = await runRow(page, runId);
  assert.equal(untouched.lease, 1, 'nothing changed');
  assert.equal(untouched.resumes, 0);
  await dialog.getByRole('button', { name: 'Close', exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
  await b.close();
}));

test('a live run is never offered: not to a second page while it runs, not after a reload while it runs; opfs-sahpool says the database is open in another tab', () => scoped(async () => {
  const b = await launch(profileDir('live'));
  const params = { threshold_ms: 3000, step_ms: 400, steps: 40 };
  const a = await openExample(b.context, URL_, params);
  const runId = await startAndReach(a, 1);

  const second = await openExample(b.context, URL_, params);
  await until(second, () => Number(document.body.dataset.scans) >= 3, { timeout: 15000 }); // 3 scans over >= 3 s
  assert.equal(await dialogOf(second).isVisible(), false);
  await second.getByText(/is running in another tab or window/).waitFor();
  assert.ok((await runRow(second, runId)).checkpoint_step >= 3, 'the run went on meanwhile');
  assert.equal(await dialogOf(a).isVisible(), false);

  // A reload of the running page: the run's last heartbeat is fresh, so it is not offered.
  await a.reload();
  await until(a, () => document.body.dataset.scanned === '1');
  assert.equal(await dialogOf(a).isVisible(), false);
  const after = await runRow(a, runId);
  assert.ok(after.age_ms < params.threshold_ms, `fresh heartbeat (${after.age_ms} ms)`);
  await a.close();
  await second.close();

  // The one-tab-at-a-time VFS: the second tab says so plainly.
  const p1 = await openExample(b.context, URL_, { vfs: 'opfs-sahpool' });
  assert.equal(await p1.evaluate(() => document.body.dataset.state), 'idle');
  const p2 = await openExample(b.context, URL_, { vfs: 'opfs-sahpool' });
  assert.equal(await p2.evaluate(() => document.body.dataset.state), 'locked');
  await p2.getByText('This database is open in another tab.').waitFor();
  await p2.getByText(/only one tab at a time can use/).waitFor();
  assert.equal(await p2.getByRole('button', { name: 'Start run' }).isDisabled(), true);
  await b.close();
}));

/**
 * Freezes a page between two of its worker's writes. A freeze that lands
 * inside a write leaves the OPFS file held by a stopped worker, so no other
 * tab can read it until the page thaws: a different case from this test's
 * (Chrome's own freezing spares a page that holds a Web Lock another page
 * waits for, but an OPFS access handle is not one). If `probe`, a page that
 * scans every second, makes no two scans in 5 s, thaw and freeze again.
 * Returns the number of freezes it took.
 */
async function freezeBetweenWrites(cdp, probe) {
  for (let attempt = 1; ; attempt++) {
    await cdp.send('Page.setWebLifecycleState', { state: 'frozen' });
    const scans = await probe.evaluate(() => Number(document.body.dataset.scans ?? 0));
    try {
      await until(probe, (n) => Number(document.body.dataset.scans ?? 0) >= n + 2, { timeout: 5000, arg: scans });
      return attempt;
    } catch (e) {
      if (attempt >= 5) throw e;
      console.error(`# froze inside a write (try ${attempt}): thawing, freezing again`);
      await cdp.send('Page.setWebLifecycleState', { state: 'active' });
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

test('the zombie: a frozen page whose run is resumed elsewhere wakes up, its writes are refused and it stops with a message', () => scoped(async () => {
  const b = await launch(profileDir('zombie'));
  const params = { threshold_ms: 2000, step_ms: 400, steps: 10 };
  const zombie = await openExample(b.context, URL_, params);
  const runId = await startAndReach(zombie, 2);
  // Two other tabs, open while it runs: both end up offering the orphan.
  const rescuer = await openExample(b.context, URL_, params);
  const late = await openExample(b.context, URL_, params);
  const cdp = await b.context.newCDPSession(zombie);
  await freezeBetweenWrites(cdp, rescuer); // its worker stops too: no steps, no heartbeats
  await dialogOf(rescuer).waitFor({ timeout: 15000 });
  await dialogOf(late).waitFor({ timeout: 15000 });
  const frozenAt = await runRow(rescuer, runId);
  assert.ok(frozenAt.age_ms > params.threshold_ms, 'no heartbeat while frozen');

  await rescuer.bringToFront();
  await dialogOf(rescuer).getByRole('button', { name: 'Resume', exact: true }).click();
  await dialogOf(rescuer).waitFor({ state: 'hidden' });
  await waitFor('the rescuer to make progress', async () => (await runRow(rescuer, runId)).checkpoint_step > frozenAt.checkpoint_step);

  // The other tab decides too late: a clear message, not a crash.
  await late.bringToFront();
  await dialogOf(late).getByRole('button', { name: 'Resume', exact: true }).click();
  await dialogOf(late).getByText(/alive again|already took this run over/).waitFor();
  await dialogOf(late).getByRole('button', { name: 'Close', exact: true }).click();
  await dialogOf(late).waitFor({ state: 'hidden' });
  assert.equal((await runRow(late, runId)).resumes, 1, 'resumed once');

  // The zombie wakes: its next step and its pulse carry lease 1 and are refused.
  await cdp.send('Page.setWebLifecycleState', { state: 'active' });
  await until(zombie, () => document.body.dataset.state === 'fenced', { timeout: 15000 });
  await zombie.bringToFront();
  await zombie.getByText(/taken over by another tab/).waitFor();

  await rescuer.bringToFront();
  await rescuer.getByText('Run completed').waitFor({ timeout: 30000 });
  const log = await assertExactlyOnce(rescuer, runId, params.steps);
  for (const r of log) assert.equal(r.leases, r.step <= frozenAt.checkpoint_step ? '1' : '2', `step ${r.step} by the right executor`);
  const done = await runRow(rescuer, runId);
  assert.equal(done.status, 'completed');
  assert.equal(done.lease, 2);
  await integrityOk(rescuer);
  await b.close();
}));
