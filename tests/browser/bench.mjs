// make bench-web: the browser's numbers, printed, not asserted (see bindings/web/README.md).
//  1. per operation on OPFS through bindings/web against the same work in
//     hand-written SQL in the same page (examples/web/bench.html), both VFSes;
//  2. page load to recovery dialog shown, when an orphan exists.
import { server, launch, profileDir, openExample, query, stopAll, until, dialogOf, waitFor } from './harness.mjs';

const RUNS = Number(process.env.BENCH_RUNS || 10000);
try {
  const srv = await server();
  const b = await launch(profileDir('bench'));
  const version = (await b.browser.version());
  console.log(`Chromium ${version}, headless, Debian's /usr/bin/chromium; ${RUNS} runs`);
  for (const vfs of ['opfs-sahpool', 'opfs']) {
    const page = await b.context.newPage();
    await page.goto(`${srv.url}bench.html?vfs=${vfs}&runs=${RUNS}`);
    await until(page, () => window.benchResult, { timeout: 300000 });
    const r = await page.evaluate(() => window.benchResult);
    if (r.error) throw new Error(r.error);
    console.log((await page.locator('#out').textContent()).trim());
    await page.close();
  }

  // Page load to dialog: one orphan (a run whose tab was closed), the example reloaded 7 times.
  const params = { threshold_ms: 1000, step_ms: 200, steps: 50 };
  const a = await openExample(b.context, srv.url, params);
  await a.getByRole('button', { name: 'Start run' }).click();
  await waitFor('two checkpoints', async () => (await query(a, "SELECT max(checkpoint_step) AS s FROM run_recovery_runs WHERE live"))[0].s >= 2);
  await a.close({ runBeforeUnload: false });
  await new Promise((r) => setTimeout(r, params.threshold_ms + 800)); // the user is away
  const page = await b.context.newPage();
  const times = [];
  for (let i = 0; i < 7; i++) {
    await page.goto(`${srv.url}?${new URLSearchParams(params)}`);
    await dialogOf(page).waitFor({ timeout: 10000 });
    times.push(await page.evaluate(() => performance.getEntriesByName('run-recovery-dialog-shown')[0].startTime));
  }
  times.sort((x, y) => x - y);
  console.log(`page load to dialog shown (navigation start to showModal, opfs): median ${times[3].toFixed(0)} ms, min ${times[0].toFixed(0)}, max ${times[6].toFixed(0)} (7 loads)`);
  await b.close();
} finally {
  await stopAll();
}
