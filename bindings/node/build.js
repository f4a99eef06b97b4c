'use strict';
// Build step of the Node package: copies the loadable library built by
// `make loadable` (dist/run_recovery.so, or $RUN_RECOVERY_LOADABLE) into lib/,
// and checks that package.json carries the version of the repository's
// Cargo.toml (one version for the crate, run_recovery_version() and this
// package). `node build.js --set-version` writes Cargo's version into package.json.

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const SUFFIX = { darwin: 'dylib', win32: 'dll' }[process.platform] || 'so';

// The crate's version, from the repository's one reader of Cargo.toml
// (scripts/cargo_version.py; $PYTHON or python3 runs it).
function cargoVersion() {
  const script = path.join(root, 'scripts', 'cargo_version.py');
  const python = process.env.PYTHON || 'python3';
  return execFileSync(python, [script], { encoding: 'utf8' }).trim();
}

function main() {
  const want = cargoVersion();
  const pkgFile = path.join(here, 'package.json');
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
  if (pkg.version !== want) {
    if (process.argv.includes('--set-version')) {
      pkg.version = want;
      fs.writeFileSync(pkgFile, JSON.stringify(pkg, null, 2) + '\n');
      console.log(`run-recovery build: package.json version set to ${want}`);
    } else {
      console.error(
        `run-recovery build: bindings/node/package.json has version ${pkg.version} but Cargo.toml has ${want}; ` +
          'run `node bindings/node/build.js --set-version`',
      );
      process.exit(1);
    }
  }
  const src = process.env.RUN_RECOVERY_LOADABLE || path.join(root, 'dist', `run_recovery.${SUFFIX}`);
  if (!fs.existsSync(src)) {
    console.error(`run-recovery build: ${src} is missing; run \`make loadable\` first`);
    process.exit(1);
  }
  fs.mkdirSync(path.join(here, 'lib'), { recursive: true });
  fs.copyFileSync(src, path.join(here, 'lib', `run_recovery.${SUFFIX}`));
}

module.exports = { cargoVersion };

if (require.main === module) main();
