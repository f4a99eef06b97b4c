"""A real Alembic migration on a database with run_recovery installed.

The seed app's backend stack (SQLAlchemy 2.1.9 + Alembic 1.20.1 from PyPI,
tests/migration/requirements.txt), the extension loaded on every connection
from a SQLAlchemy ``connect`` event, and the migration SQLite needs most
often: ``op.batch_alter_table('protocol_runs', recreate='always')`` adding
one column, which rebuilds the table (create, copy, drop, rename).

Each way of running it must end with the fence in force and nothing lost,
or with every function refusing until install runs again; never with the
functions carrying on over an unfenced table.
"""

import sqlite3
import time
from pathlib import Path

import pytest
import run_recovery
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from run_recovery.migration import MigrationError, table_rebuild

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = (ROOT / "sql" / "protocol_runs.sql").read_text()

ENV_PY = """
from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

MIGRATION = '''
"""add operator_note to protocol_runs"""
import sqlalchemy as sa
from alembic import op
from run_recovery.migration import table_rebuild

revision = "0001"
down_revision = None


def add_column():
    with op.batch_alter_table("protocol_runs", recreate="always") as batch:
        batch.add_column(sa.Column("operator_note", sa.Text()))


def upgrade():
    if op.get_context().config.attributes["helper"]:
        with table_rebuild(op.get_bind()):
            add_column()
    else:
        add_column()
'''


def seed(path):
    """Two runs; r1 resumed once (lease 2) and checkpointed by its new executor."""
    c = sqlite3.connect(path, isolation_level=None)
    run_recovery.load(c)
    c.executescript(SCHEMA)
    c.execute("SELECT run_recovery_install()")
    c.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
        "top_level_protocol_definition_accession_id) VALUES "
        "('r1', 'ELISA', 'running', '{\"operator\":\"ana\",\"od\":0.12345678901234567890}', 'p'), "
        "('r2', 'PCR', 'running', NULL, 'p')"
    )
    time.sleep(0.005)
    c.execute("SELECT recover_run('r1', 'resume', 0)")
    c.execute("""SELECT run_checkpoint('r1', 3, '{"well":"B7"}', 2)""")
    c.close()


def state(path):
    """Every row, and the names of run_recovery's objects, read without the extension."""
    c = sqlite3.connect(path)
    try:
        rows = c.execute(
            "SELECT accession_id, status, properties_json FROM protocol_runs ORDER BY 1"
        ).fetchall()
        objects = [
            r[0]
            for r in c.execute(
                "SELECT name FROM sqlite_schema WHERE name LIKE 'run_recovery%' ORDER BY 1"
            )
        ]
        return rows, objects
    finally:
        c.close()


def engine_for(path):
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _load(dbapi_connection, _record):
        run_recovery.load(dbapi_connection)

    return engine


def upgrade(tmp_path, engine, helper, legacy_alter_table):
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True, exist_ok=True)
    (scripts / "env.py").write_text(ENV_PY)
    (scripts / "script.py.mako").write_text("")
    (scripts / "versions" / "0001_operator_note.py").write_text(MIGRATION)
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts))
    cfg.attributes["helper"] = helper
    with engine.begin() as conn:
        conn.exec_driver_sql(f"PRAGMA legacy_alter_table = {'ON' if legacy_alter_table else 'OFF'}")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def functions(path):
    """A fresh connection with the extension: (heartbeat of r1's executor, error or None)."""
    c = sqlite3.connect(path, isolation_level=None)
    run_recovery.load(c)
    try:
        return c.execute("SELECT run_heartbeat('r1', 2)").fetchone()[0], None
    except sqlite3.Error as e:
        return None, str(e)
    finally:
        c.close()


def assert_fenced(path):
    """The old executor (lease 1) is refused by the functions and by plain SQL."""
    c = sqlite3.connect(path, isolation_level=None)
    run_recovery.load(c)
    try:
        with pytest.raises(sqlite3.Error, match="stale lease 1"):
            c.execute("SELECT run_heartbeat('r1', 1)")
        with pytest.raises(sqlite3.Error, match="older lease"):
            c.execute(
                "UPDATE protocol_runs SET properties_json = json_set(properties_json, "
                "'$.lease', 1) WHERE accession_id = 'r1'"
            )
    finally:
        c.close()


def recovery_keys(rows):
    import json

    out = {}
    for run_id, status, meta in rows:
        m = json.loads(meta) if meta else {}
        out[run_id] = (
            status,
            m.get("lease"),
            m.get("resumes"),
            m.get("checkpointStep"),
            m.get("checkpointState"),
            m.get("operator"),
        )
    return out


def test_with_table_rebuild_the_migration_runs_and_the_fence_stays(tmp_path):
    path = tmp_path / "runs.db"
    seed(path)
    rows, objects = state(path)
    upgrade(tmp_path, engine_for(path), helper=True, legacy_alter_table=False)
    rows_after, objects_after = state(path)
    assert objects_after == objects
    assert recovery_keys(rows_after) == recovery_keys(rows)
    assert recovery_keys(rows_after)["r1"][1:5] == (2, 1, 3, {"well": "B7"})
    # Every digit of the app's number is still there.
    assert '"od":0.12345678901234567890' in dict((r[0], r[2]) for r in rows_after)["r1"]
    c = sqlite3.connect(path)
    assert "operator_note" in [r[1] for r in c.execute("PRAGMA table_info(protocol_runs)")]
    c.close()
    hb, err = functions(path)
    assert err is None and hb > 1_700_000_000_000
    assert_fenced(path)


def test_with_legacy_alter_table_on_the_functions_refuse_until_install_runs_again(tmp_path):
    path = tmp_path / "runs.db"
    seed(path)
    rows, objects = state(path)
    upgrade(tmp_path, engine_for(path), helper=False, legacy_alter_table=True)
    rows_after, objects_after = state(path)
    # The rebuild dropped the table's triggers: the views are left.
    assert set(objects_after) < set(objects)
    assert "run_recovery_lease_guard" not in objects_after
    hb, err = functions(path)
    assert hb is None
    assert "missing: trigger run_recovery_stamp_insert" in err
    assert "run SELECT run_recovery_install() again" in err
    assert recovery_keys(rows_after) == recovery_keys(rows)
    c = sqlite3.connect(path, isolation_level=None)
    run_recovery.load(c)
    c.execute("SELECT run_recovery_install()")
    c.close()
    assert state(path)[1] == objects
    assert recovery_keys(state(path)[0]) == recovery_keys(rows)
    assert_fenced(path)


def test_with_legacy_alter_table_off_the_rename_is_refused_and_nothing_is_lost(tmp_path):
    path = tmp_path / "runs.db"
    seed(path)
    rows, objects = state(path)
    with pytest.raises(sa.exc.OperationalError, match="no such table: main.protocol_runs"):
        upgrade(tmp_path, engine_for(path), helper=False, legacy_alter_table=False)
    rows_after, objects_after = state(path)
    assert rows_after == rows
    assert objects_after == objects
    hb, err = functions(path)
    assert err is None and hb > 1_700_000_000_000
    assert_fenced(path)


def test_table_rebuild_without_the_extension_refuses_and_drops_nothing(tmp_path):
    path = tmp_path / "runs.db"
    seed(path)
    rows, objects = state(path)
    c = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(MigrationError, match="extension is not loaded on this connection"):
        with table_rebuild(c):
            pytest.fail("the body must not run")
    c.close()
    assert state(path) == (rows, objects)


def test_a_failed_body_puts_the_install_back(tmp_path):
    path = tmp_path / "runs.db"
    seed(path)
    rows, objects = state(path)
    c = sqlite3.connect(path, isolation_level=None)
    run_recovery.load(c)
    with pytest.raises(RuntimeError, match="migration broke"):
        with table_rebuild(c):
            assert [r for r in state(path)[1] if r != "run_recovery_settings"] == [
                "run_recovery_replaced"
            ]
            raise RuntimeError("migration broke")
    c.close()
    assert state(path) == (rows, objects)
    assert_fenced(path)


def test_table_rebuild_on_a_database_without_run_recovery_just_runs_the_body(tmp_path):
    path = tmp_path / "plain.db"
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript(SCHEMA)
    ran = []
    with table_rebuild(c):
        ran.append(1)
    assert ran == [1]
    assert c.execute("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'run_recovery%'").fetchone() == (0,)
    c.close()
