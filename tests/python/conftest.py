"""Shared helpers of the Python client tests (run by `make test-python`).

The tests import the *installed* package (make installs bindings/python into
a venv of Debian's /usr/bin/python3 and runs pytest with it).
"""

import re
import sqlite3
from pathlib import Path

import pytest
import run_recovery

ROOT = Path(__file__).resolve().parents[2]

# The host schema of ../shared/spec.md, unchanged (shared by every test).
SCHEMA = (ROOT / "sql" / "protocol_runs.sql").read_text()

PROTOCOL = "f" * 32


def cargo_version():
    """`version` of the [package] table of the repository's Cargo.toml."""
    section = None
    for line in (ROOT / "Cargo.toml").read_text().splitlines():
        line = line.strip()
        m = re.match(r"^\[([^\]]+)\]$", line)
        if m:
            section = m.group(1)
        m = re.match(r'^version\s*=\s*"([^"]+)"', line)
        if section == "package" and m:
            return m.group(1)
    raise AssertionError("no [package] version in Cargo.toml")


@pytest.fixture
def conn(tmp_path):
    """A connection to a fresh database file with run_recovery loaded and the schema created."""
    c = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    run_recovery.load(c)
    c.executescript(SCHEMA)
    yield c
    c.close()
