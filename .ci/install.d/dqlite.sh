#!/usr/bin/env bash
# What `make test-dqlite` needs: Debian's dqlite node (`dqlite-demo`, package
# go-dqlite), Go 1.19, and go-dqlite's sources with their dependencies under
# /usr/share/gocode, so tools/dqlite builds offline in GOPATH mode.
# Runs as root on a fresh Debian 12; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

need=()
command -v dqlite-demo >/dev/null || need+=(go-dqlite)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/canonical/go-dqlite/driver ] || need+=(golang-github-canonical-go-dqlite-dev)
[ -x /usr/bin/python3 ] || need+=(python3)
# libfaketime: the clock-skew part of test-dqlite runs one node with its clock ahead.
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || need+=(faketime)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}"
else
  echo "dqlite.sh: dqlite-demo, go, go-dqlite sources and libfaketime present"
fi
