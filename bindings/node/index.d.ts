/** Absolute path of the run_recovery loadable library shipped in this package. */
export function getLoadablePath(): string;
/** Loads run_recovery into a database that has loadExtension(path) (better-sqlite3, node:sqlite). */
export function load(db: { loadExtension(path: string): unknown }): void;
/** The package version: the run_recovery crate's version (run_recovery_version() without the 'v'). */
export const version: string;
