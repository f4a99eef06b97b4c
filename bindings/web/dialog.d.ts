// Types for <run-recovery-dialog> (bindings/web/dialog.js). Importing the module defines the element.
import type { Orphan, RecoveryAction, RecoveryOutcome, RefusalReason, RunId } from './index.js';

export interface RunRecoveryDecisionDetail {
  runId: RunId;
  action: RecoveryAction;
  outcome: RecoveryOutcome;
  orphan: Orphan;
}
export interface RunRecoveryRefusedDetail {
  runId: RunId;
  action: RecoveryAction;
  reason: RefusalReason;
  message: string;
  orphan: Orphan;
}

export declare class RunRecoveryDialog extends HTMLElement {
  /** Performs a decision (in the Worker that owns the database); resolves to the outcome, or rejects with an error carrying `reason`. */
  recover: ((runId: RunId, action: RecoveryAction, orphan: Orphan) => RecoveryOutcome | Promise<RecoveryOutcome>) | null;
  readonly orphans: Orphan[];
  readonly open: boolean;
  /** Opens the modal for these orphans (nothing for an empty list). */
  show(orphans: Orphan[]): void;
  close(): void;
}

export declare function formatAge(ms: number): string;
export declare function refusalText(action: RecoveryAction, reason: RefusalReason | null, message?: string): string;

declare global {
  interface HTMLElementTagNameMap {
    'run-recovery-dialog': RunRecoveryDialog;
  }
  interface HTMLElementEventMap {
    'run-recovery-decision': CustomEvent<RunRecoveryDecisionDetail>;
    'run-recovery-refused': CustomEvent<RunRecoveryRefusedDetail>;
    'run-recovery-error': CustomEvent<{ runId: RunId; action: RecoveryAction; error: unknown }>;
    'run-recovery-open': CustomEvent<{ orphans: Orphan[] }>;
    'run-recovery-close': CustomEvent<{ undecided: Orphan[] }>;
  }
}
