// Compiled (not run) by unit.test.mjs with tsc --noEmit: bindings/web's
// declarations are valid and describe the package as the README uses it.
import sqlite3InitModule from '@sqlite.org/sqlite-wasm';
import {
  install, heartbeat, checkpoint, orphans, recover, startPulse, runState, config,
  RecoveryRefusedError, refusalOf, INSTALL_SQL, SCHEMA_VERSION, DEFAULT_CONFIG,
  type Orphan, type RecoveryOutcome, type PulseHandle, type RunRecoveryConfig,
} from '../../../bindings/web/index.js';
import { RunRecoveryDialog, formatAge } from '../../../bindings/web/dialog.js';

export async function worker(runId: string): Promise<void> {
  const sqlite3 = await sqlite3InitModule();
  const db = new sqlite3.oo1.OpfsDb('/runs.db', 'c');
  const cfg: RunRecoveryConfig = install(db);
  const again: RunRecoveryConfig | null = config(db);
  const threshold: number = cfg.stale_after_ms + DEFAULT_CONFIG.max_resumes + SCHEMA_VERSION + INSTALL_SQL.length + (again ? 0 : 1);
  heartbeat(db, runId, { lease: 1 });
  checkpoint(db, runId, 3, { well: 'C4' }, { lease: 1 });
  const found: Orphan[] = orphans(db, { thresholdMs: threshold, includeDismissed: false });
  const out: RecoveryOutcome = recover(db, found[0].runId, 'resume', { lease: found[0].lease });
  const next: number = (out.checkpointStep ?? 0) + 1 + out.lease;
  const pulse: PulseHandle = startPulse(db, runId, {
    lease: out.lease,
    intervalMs: next,
    onLost: (e: RecoveryRefusedError) => console.log(e.reason, e.action),
  });
  const end = await pulse.done;
  if (end.reason === 'lost') console.log(end.error.reason);
  pulse.stop();
  try {
    heartbeat(db, runId);
  } catch (e) {
    const r = refusalOf(e, runId);
    if (r && r.reason === 'stale-lease') console.log(r.message);
  }
  console.log(runState(db, runId)?.dismissed);
}

export function page(): void {
  const dialog = document.querySelector('run-recovery-dialog')!;
  const same: RunRecoveryDialog = dialog;
  same.recover = async (runId, action, orphan) => ({ ...orphan, action, runId });
  dialog.addEventListener('run-recovery-decision', (e) => console.log(e.detail.outcome.lease, e.detail.action));
  dialog.addEventListener('run-recovery-refused', (e) => console.log(e.detail.reason));
  dialog.show([]);
  console.log(formatAge(1000), dialog.open);
}
