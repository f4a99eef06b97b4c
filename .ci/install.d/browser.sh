#!/usr/bin/env bash
# What the browser tests need (make test-browser, make web-demo): Debian's
# chromium (apt; playwright-core downloads no browser) and the npm packages of
# tests/browser and examples/web, from their committed package-lock.json.
# Runs as root on a fresh Debian 12 (Node 20 + npm preinstalled); idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if [ ! -x /usr/bin/chromium ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
# The /usr/bin/chromium wrapper prints a harmless "[: …: unexpected operator" first.
/usr/bin/chromium --version 2>/dev/null | tail -n 1

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "browser.sh: node and npm are required (Node 20+)" >&2; exit 1; }

# No browser download, ever: playwright-core has none, and this says so twice.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
for dir in tests/browser examples/web; do
  if [ -f "$dir/node_modules/.package-lock.json" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    echo "browser.sh: $dir up to date"
  else
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
