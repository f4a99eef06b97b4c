#!/usr/bin/env bash
# SQL tests: tests/sql/*.sql run through the real sqlite3 shell with the extension
# loaded; each statement's output must equal the comment written beside it.
# Then the runner proves it can fail: every tests/sql/selftest/*.sql fixture
# carries a wrong expectation and must be rejected.
#   usage: tests/sql/run.sh [SQLITE3] [LIBRARY]     (make test-sql)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-/usr/bin/python3}" tests/sql/run.py "${1:-sqlite3}" "${2:-dist/run_recovery.so}"
