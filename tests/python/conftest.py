"""Shared helpers of the Python client tests (run by `make test-python`).

The tests import the *installed* package (make installs bindings/python into
a venv of Debian's /usr/bin/python3 and runs pytest with it).
"""

import sqlite3
import sys
from pathlib import Path

import pytest
import run_recovery

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from cargo_version import cargo_version  # noqa: E402  (the repository's one reader)

# The host schema (sql/protocol_runs.sql), shared by the tests of every language.
SCHEMA = (ROOT / "sql" / "protocol_runs.sql").read_text()

PROTOCOL = "f" * 32


@pytest.fixture
def conn(tmp_path):
    """A connection to a fresh database file with run_recovery loaded and the schema created."""
    c = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    run_recovery.load(c)
    c.executescript(SCHEMA)
    yield c
    c.close()
