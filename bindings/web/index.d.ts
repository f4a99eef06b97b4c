// Types for @run-recovery/web (bindings/web). The database is any
// @sqlite.org/sqlite-wasm oo1 database: sqlite3.oo1.DB, OpfsDb, OpfsSAHPoolDb.
import type { Database } from '@sqlite.org/sqlite-wasm';

/** The default install script (sql/install.sql), as the package ships it. */
export declare const INSTALL_SQL: string;
/** The schema_version INSTALL_SQL writes. */
export declare const SCHEMA_VERSION: number;
/** sha256 (hex) of INSTALL_SQL. */
export declare const INSTALL_SQL_SHA256: string;
/** The config INSTALL_SQL installs. */
export declare const DEFAULT_CONFIG: Readonly<RunRecoveryConfig>;

export type RecoveryAction = 'resume' | 'fail' | 'dismiss';
export declare const ACTIONS: readonly RecoveryAction[];

export interface RunRecoveryConfig {
  table: string;
  id_column: string;
  status_column: string;
  metadata_column: string;
  name_column?: string;
  end_time_column?: string;
  updated_at_column?: string;
  stale_after_ms: number;
  live_statuses: string[];
  max_resumes: number;
}

export type RunId = string | number;

/** A run's recovery state, as run_recovery_runs has it. */
export interface RunState {
  runId: RunId;
  name: string | null;
  status: string;
  live?: boolean;
  /** Unix epoch ms of the last sign of life. */
  lastHeartbeat: number | null;
  ageMs: number | null;
  /** The last step the executor completed. */
  checkpointStep: number | null;
  /** What the next step needs (parsed JSON). */
  checkpointState: unknown;
  /** The fencing token: bumped by every resume and fail. */
  lease: number;
  resumes: number;
  dismissed: boolean;
}

/** An orphan: a live run whose heartbeat is older than the threshold. */
export type Orphan = RunState;

/** What recover() did, read in the same transaction. */
export interface RecoveryOutcome extends RunState {
  action: RecoveryAction;
}

export type RefusalReason =
  | 'stale-lease'
  | 'already-recovered'
  | 'still-alive'
  | 'not-live'
  | 'no-such-run'
  | 'too-many-resumes'
  | 'bad-argument'
  | 'not-json-object'
  | 'unknown-action'
  | 'refused';

/** A write the database refused; `message` is the database's own text. */
export declare class RecoveryRefusedError extends Error {
  readonly name: 'RecoveryRefusedError';
  readonly action: 'heartbeat' | 'checkpoint' | RecoveryAction | 'write';
  readonly reason: RefusalReason;
  readonly runId: RunId | null;
}

/** The RecoveryRefusedError for an error raised by run_recovery's triggers, or null. */
export declare function refusalOf(error: unknown, runId?: RunId | null): RecoveryRefusedError | null;

/**
 * Installs or upgrades the pure-SQL layer (idempotent). Only the default
 * config is shipped: `config` may be omitted or repeat default values.
 */
export declare function install(db: Database, config?: Partial<RunRecoveryConfig>): RunRecoveryConfig;
/** The installed config, or null when run_recovery is not installed. */
export declare function config(db: Database): RunRecoveryConfig | null;

export interface LeaseOption {
  /** Fencing: act only while the run still holds this lease. */
  lease?: number;
}

/** Stamps a heartbeat. Throws RecoveryRefusedError (stale-lease, not-live, no-such-run). */
export declare function heartbeat(db: Database, runId: RunId, options?: LeaseOption): void;
/**
 * Records `step` done and `state` (any JSON value) with a heartbeat; call it in
 * the same transaction as the step's own writes. Throws RecoveryRefusedError.
 */
export declare function checkpoint(db: Database, runId: RunId, step: number, state?: unknown, options?: LeaseOption): void;

export interface OrphansOptions {
  /** Default: the installed stale_after_ms (30000). */
  thresholdMs?: number;
  includeDismissed?: boolean;
}
/** Live runs whose heartbeat is older than the threshold, oldest first. */
export declare function orphans(db: Database, options?: OrphansOptions): Orphan[];
/** The SELECT orphans() runs (for EXPLAIN QUERY PLAN). */
export declare function orphansSql(db: Database): string;
/** One run's recovery state, or null. */
export declare function runState(db: Database, runId: RunId): RunState | null;

export interface RecoverOptions extends LeaseOption {
  /** The threshold the run must be stale by (default: the installed one). */
  thresholdMs?: number;
}
/** Resume, fail or dismiss an orphan, atomically. Throws RecoveryRefusedError. */
export declare function recover(db: Database, runId: RunId, action: RecoveryAction, options?: RecoverOptions): RecoveryOutcome;

export interface PulseOptions extends LeaseOption {
  /** Default: a sixth of the installed threshold. */
  intervalMs?: number;
  /** The database refused a heartbeat: the run was taken over or ended. The pulse has stopped. */
  onLost?: (error: RecoveryRefusedError) => void;
  /** Any other error (e.g. SQLITE_BUSY); the pulse goes on. */
  onError?: (error: unknown) => void;
}
export interface PulseHandle {
  readonly runId: RunId;
  readonly lease: number | undefined;
  readonly running: boolean;
  readonly beats: number;
  readonly lastError: unknown;
  /** Resolves when the pulse stops: by stop(), or because the lease was lost. */
  readonly done: Promise<{ reason: 'stopped' } | { reason: 'lost'; error: RecoveryRefusedError }>;
  stop(): void;
}
/** Heartbeats now and every intervalMs, from the Worker that owns the database. */
export declare function startPulse(db: Database, runId: RunId, options?: PulseOptions): PulseHandle;
