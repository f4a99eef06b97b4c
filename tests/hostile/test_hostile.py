"""The hostile campaign (cases.json) on Debian's SQLite 3.40.1.

Each case is played twice: with sql/install.sql applied by a client that has
no extension, and with the loadable library and run_recovery_install().
Run by `make test-hostile` with /usr/bin/python3; see README.md here.
"""

import json
import os
import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = (ROOT / "sql" / "protocol_runs.sql").read_text()
INSTALL = (ROOT / "sql" / "install.sql").read_text()
SETUP = (Path(__file__).parent / "setup.sql").read_text()
SPEC = json.loads((Path(__file__).parent / "cases.json").read_text())
LOADABLE = os.environ.get("RUN_RECOVERY_LOADABLE", str(ROOT / "dist" / "run_recovery.so"))
M = "(SELECT properties_json FROM protocol_runs WHERE accession_id = 'r')"
B = "(SELECT m FROM temp.hostile_before)"


def expand(sql):
    # M and B as whole words only (not inside names or strings such as 'Run r').
    import re
    return re.sub(r"\bB\b", B, re.sub(r"\bM\b", M, sql))


def connect(mode, path):
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript(SCHEMA)
    if mode == "plain":
        c.executescript(INSTALL)
    else:
        if not hasattr(c, "enable_load_extension"):
            pytest.fail("this Python cannot load extensions: run with Debian's /usr/bin/python3")
        c.enable_load_extension(True)
        c.load_extension(LOADABLE)  # Python 3.11: the entry point comes from the name
        c.execute("SELECT run_recovery_install()").fetchone()
    c.executescript(SETUP)
    return c


def snapshot(c):
    return c.execute("SELECT * FROM protocol_runs ORDER BY accession_id").fetchall()


@pytest.mark.parametrize("mode", ["plain", "loadable"])
@pytest.mark.parametrize("case", SPEC["cases"], ids=[c["id"] for c in SPEC["cases"]])
def test_hostile(case, mode, tmp_path):
    if case.get("needs") == "functions" and mode == "plain":
        pytest.skip("needs the extension's functions")
    c = connect(mode, str(tmp_path / "runs.db"))
    try:
        for sql in case.get("pre", []):
            c.execute(expand(sql)).fetchall()
        *first, last = case["write"]
        for sql in first:
            c.execute(expand(sql)).fetchall()
        c.execute("CREATE TEMP TABLE hostile_before AS SELECT properties_json AS m FROM protocol_runs WHERE accession_id = 'r'")
        before = snapshot(c)
        expect = case["expect"]
        try:
            c.execute(expand(last)).fetchall()
            error = None
        except sqlite3.Error as e:
            error = str(e)
        if expect == "ok" or (expect == "any" and error is None):
            assert error is None, f"{case['id']}: refused: {error}"
        elif expect == "any":
            assert snapshot(c) == before, f"{case['id']}: a refused write changed the table"
        else:
            want = expect.split(":", 1)[1]
            assert error is not None, f"{case['id']}: accepted, expected a refusal containing {want!r}"
            assert want in error, f"{case['id']}: {error!r} does not contain {want!r}"
            assert snapshot(c) == before, f"{case['id']}: a refused write changed the table"
        checks = list(case["check"])
        if case.get("keeps", True):
            checks += SPEC["keeps"]
            if case.get("keeps_app", True):
                checks += SPEC["keeps_app"]
        for chk in checks:
            got = c.execute("SELECT " + expand(chk)).fetchone()[0]
            assert got == 1, f"{case['id']} ({mode}): {chk} is {got!r}; metadata now {c.execute('SELECT ' + M).fetchone()[0]}"
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        c.close()


def test_the_campaign_has_at_least_forty_cases_in_every_class():
    classes = {}
    for case in SPEC["cases"]:
        classes.setdefault(case["class"], []).append(case["id"])
    assert len(SPEC["cases"]) >= 40
    assert len({c["id"] for c in SPEC["cases"]}) == len(SPEC["cases"]), "ids are unique"
    assert all(len(ids) >= 3 for ids in classes.values()), classes


def test_trusted_schema_off_on_3_40_refuses_install_and_changes_nothing(tmp_path):
    # SQLite 3.40 lets no trigger call a JSON function under
    # trusted_schema=OFF, so the guard could not run: install says so.
    c = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    c.executescript(SCHEMA)
    c.enable_load_extension(True)
    c.load_extension(LOADABLE)
    c.execute("PRAGMA trusted_schema = OFF")
    before = c.execute("SELECT name FROM sqlite_schema ORDER BY name").fetchall()
    with pytest.raises(sqlite3.Error) as e:
        c.execute("SELECT run_recovery_install()").fetchone()
    if sqlite3.sqlite_version_info >= (3, 53, 0):
        pytest.skip("this SQLite allows JSON functions in triggers")
    msg = str(e.value)
    assert msg.startswith("run_recovery_install: this connection has PRAGMA trusted_schema=OFF, and SQLite 3.40"), msg
    assert "unsafe use of json" in msg and "trusted_schema=ON" in msg, msg
    assert c.execute("SELECT name FROM sqlite_schema ORDER BY name").fetchall() == before
    # With trusted_schema back ON, install and writes work.
    c.execute("PRAGMA trusted_schema = ON")
    c.execute("SELECT run_recovery_install()").fetchone()
    c.execute("INSERT INTO protocol_runs (accession_id, status, top_level_protocol_definition_accession_id) VALUES ('r', 'running', 'p')")
    c.close()
