#!/usr/bin/env bash
# What the client tests need (make test-python, test-node, test-wasm).
# Runs as root on a fresh Debian 12 (Node 20 + npm preinstalled); idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

# Python package: built offline with Debian's setuptools + wheel into a venv;
# better-sqlite3's addon: compiled by node-gyp with g++ and make.
need=()
/usr/bin/python3 -c 'import setuptools, wheel' 2>/dev/null || need+=(python3-setuptools python3-wheel)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "clients.sh: node and npm are required (Node 20+)" >&2; exit 1; }

# node-gyp needs the Node headers and must not download them (no network but
# the registries): use the ones the nodejs package installs under /usr.
if [ ! -f /usr/include/node/node.h ] || [ ! -f /usr/include/node/node_version.h ]; then
  echo "clients.sh: Node headers missing under /usr/include/node (node-gyp cannot download them here)" >&2
  exit 1
fi
export npm_config_nodedir=/usr npm_config_build_from_source=true npm_config_python=/usr/bin/python3

addon=tests/node/node_modules/better-sqlite3/build/Release/better_sqlite3.node
if [ -f "$addon" ] && [ tests/node/node_modules/.package-lock.json -nt tests/node/package-lock.json ]; then
  echo "clients.sh: tests/node up to date"
else
  (cd tests/node && npm ci --no-audit --no-fund --foreground-scripts)
fi
if [ ! -f "$addon" ]; then
  # npm skipped the install script: build the addon with npm's own node-gyp.
  echo "clients.sh: better-sqlite3's addon was not built by npm ci; running node-gyp"
  gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
  (cd tests/node/node_modules/better-sqlite3 && node "$gyp" rebuild --release)
fi
(cd tests/node && node -e "require('better-sqlite3')(':memory:').close()")

if [ -d tests/wasm/node_modules/@sqlite.org/sqlite-wasm ] && [ tests/wasm/node_modules/.package-lock.json -nt tests/wasm/package-lock.json ]; then
  echo "clients.sh: tests/wasm up to date"
else
  (cd tests/wasm && npm ci --no-audit --no-fund)
fi
