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

# The host schema of ../shared/spec.md, unchanged.
SCHEMA = """
CREATE TABLE protocol_runs (
  accession_id CHAR(32) NOT NULL PRIMARY KEY,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
  updated_at DATETIME,
  name VARCHAR,
  properties_json TEXT,
  start_time DATETIME,
  end_time DATETIME,
  data_directory_path VARCHAR,
  duration_ms INTEGER,
  status VARCHAR(21),
  input_parameters_json TEXT,
  resolved_assets_json TEXT,
  output_data_json TEXT,
  initial_state_json TEXT,
  final_state_json TEXT,
  created_by_user TEXT,
  top_level_protocol_definition_accession_id CHAR(32) NOT NULL,
  protocol_definition_accession_id CHAR(32),
  previous_accession_id CHAR(32)
);
CREATE INDEX ix_protocol_runs_status ON protocol_runs (status);
"""

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
