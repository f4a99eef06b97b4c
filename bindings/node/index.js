'use strict';
// run_recovery for Node: the path of the loadable SQLite extension shipped in
// this package, and a helper that loads it into a better-sqlite3 database.
//
//   const Database = require('better-sqlite3');
//   const runRecovery = require('run-recovery');
//   const db = new Database('runs.db');
//   runRecovery.load(db);              // or db.loadExtension(runRecovery.getLoadablePath())
//   db.prepare('SELECT run_recovery_install()').get();

const fs = require('node:fs');
const path = require('node:path');

const SUFFIX = { darwin: 'dylib', win32: 'dll' }[process.platform] || 'so';
const { version } = require('./package.json');

/** Absolute path of the run_recovery loadable library in this package. */
function getLoadablePath() {
  const file = path.join(__dirname, 'lib', `run_recovery.${SUFFIX}`);
  if (!fs.existsSync(file)) {
    throw new Error(
      `run-recovery: the loadable library ${file} is missing from the package; ` +
        'build it with `make loadable` and copy it in with `node bindings/node/build.js`',
    );
  }
  return file;
}

/**
 * Loads run_recovery into `db`: a better-sqlite3 Database (loadExtension) or a
 * node:sqlite DatabaseSync opened with { allowExtension: true } (loadExtension too).
 */
function load(db) {
  if (!db || typeof db.loadExtension !== 'function') {
    throw new TypeError(
      'run-recovery.load: expected a database with loadExtension(path) ' +
        '(better-sqlite3 Database, or node:sqlite DatabaseSync opened with allowExtension: true)',
    );
  }
  db.loadExtension(getLoadablePath());
}

module.exports = { getLoadablePath, load, version };
