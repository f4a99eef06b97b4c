// What the browser tests share: the example's server, and Debian's chromium on
// a persistent profile, started by us (so we hold its pid and can SIGKILL it)
// and driven by playwright-core over CDP. Everything started here is stopped
// by stopAll(), which the tests call in after() hooks, also on failure.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from '../../examples/web/server.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const TARGET = path.join(ROOT, 'target', 'browser');

const started = []; // cleanups, newest first
// The process groups of the browsers we started (each is detached, so a signal
// that ends this process does not reach it): a SIGTERM or SIGINT that ends the
// tests before their after() hooks (make's time limit, a Ctrl-C) kills them first.
const groups = new Set();
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.once(sig, () => {
    for (const pgid of groups) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    process.exit(128 + os.constants.signals[sig]);
  });
}

export function onStop(fn) {
  started.unshift(fn);
}

export async function stopAll() {
  while (started.length) {
    const fn = started.shift();
    try {
      await fn();
    } catch (e) {
      console.error('cleanup:', e.message);
    }
  }
}

/** Runs `fn`; whatever it started (browsers, profiles) is stopped when it ends, passed or failed. */
export async function scoped(fn) {
  const before = new Set(started);
  try {
    return await fn();
  } finally {
    for (const stop of started.filter((f) => !before.has(f))) {
      started.splice(started.indexOf(stop), 1);
      try {
        await stop();
      } catch (e) {
        console.error('cleanup:', e.message);
      }
    }
  }
}

/** The example's server on a free port, for the whole test file (OPFS origin = host + port). */
export async function server() {
  const s = await startServer({ port: 0 });
  onStop(() => new Promise((resolve) => { s.server.closeAllConnections?.(); s.server.close(resolve); }));
  return s;
}

export function profileDir(name) {
  fs.mkdirSync(TARGET, { recursive: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `run-recovery-browser-${name}-`));
  onStop(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Launches chromium (headless) on `profile` in its own process group and
 * connects playwright to it. Returns { browser, context, pid, kill(signal) }.
 */
export async function launch(profile) {
  const args = [
    '--headless',
    '--no-sandbox',
    `--user-data-dir=${profile}`,
    '--remote-debugging-port=0',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-extensions',
    '--disable-component-update',
    '--disable-background-networking',
    '--disable-sync',
    '--password-store=basic',
    '--use-mock-keychain',
    '--window-size=1100,800',
    'about:blank',
  ];
  const proc = spawn(CHROMIUM, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let exited = false;
  groups.add(proc.pid);
  proc.on('exit', () => (exited = true));
  const killGroup = (signal) => {
    try {
      process.kill(-proc.pid, signal);
    } catch {
      /* already gone */
    }
    if (signal === 'SIGKILL') groups.delete(proc.pid); // nothing of it is left to kill
  };
  onStop(async () => {
    killGroup('SIGKILL');
    if (!exited) await new Promise((r) => { proc.once('exit', r); setTimeout(r, 5000); });
  });
  const ws = await new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`chromium did not start within 30 s:\n${err}`)), 30000);
    proc.stderr.on('data', (d) => {
      err += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`chromium exited (${code ?? sig}) before it listened:\n${err}`));
    });
  });
  proc.stderr.resume();
  // noDefaults: no focus emulation, which would keep every page "visible" (a
  // capture) and so never frozen: tabs behind the active one are hidden, as in a user's browser.
  const browser = await chromium.connectOverCDP(ws, { noDefaults: true });
  const context = browser.contexts()[0];
  return {
    browser,
    context,
    pid: proc.pid,
    get exited() {
      return exited;
    },
    /** SIGKILL the browser process itself (a crash), then reap what is left of its group. */
    async crash() {
      process.kill(proc.pid, 'SIGKILL');
      if (!exited) await new Promise((r) => proc.once('exit', r));
      await browser.close().catch(() => {});
      killGroup('SIGKILL');
    },
    async close() {
      await browser.close().catch(() => {});
      killGroup('SIGTERM');
      if (!exited) await new Promise((r) => { proc.once('exit', r); setTimeout(r, 5000); });
      killGroup('SIGKILL');
    },
  };
}

/** Waits until `fn()` is truthy (polls); fails with `what` after `timeoutMs`. */
export async function waitFor(what, fn, { timeoutMs = 20000, everyMs = 100 } = {}) {
  const until = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Runs SQL in the page's database worker (the example's window.runRecoveryExample.query). */
export function query(page, sql, bind = []) {
  return page.evaluate(([s, b]) => window.runRecoveryExample.query(s, b), [sql, bind]);
}

/** Opens the example in a new page and waits until it scanned for orphans. */
export async function openExample(context, url, params = {}) {
  const page = await context.newPage();
  page.on('console', (m) => {
    // (opfs-sahpool logs its refused access handles itself: expected in the one-tab-at-a-time test)
    if (m.type() === 'error' && !/NoModificationAllowedError|removeVfs\(\) failed/.test(m.text())) console.error(`[page ${page.url().split('?')[1] ?? ''}] ${m.text()}`);
  });
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  const q = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  await page.goto(`${url}?${q}`);
  await until(page, () => document.body.dataset.scanned === '1' || document.body.dataset.state === 'locked' || document.body.dataset.state === 'error', { timeout: 30000 });
  return page;
}

/**
 * page.waitForFunction polling every 100 ms: the default polls on animation
 * frames, which a hidden tab does not get (the browser is driven without
 * focus emulation, so background tabs are really hidden, as a user's are).
 */
export function until(page, fn, { timeout = 20000, arg } = {}) {
  return page.waitForFunction(fn, arg, { polling: 100, timeout });
}

export function dialogOf(page) {
  return page.getByRole('dialog', { name: 'A protocol run was interrupted' });
}
