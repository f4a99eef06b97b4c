"""The recovery scenario, end to end, from Python's sqlite3 module (Debian's, SQLite 3.40.1).

Two executors died before install (their runs keep an old lastHeartbeat; install
stamps only runs that have none); two runs start after install and stay alive.
"""

import json
import sqlite3
import time

import pytest
import run_recovery

from conftest import PROTOCOL

DEAD_RESUME = "a" * 32  # died at step 2; will be resumed
DEAD_FAIL = "b" * 32  # died; newer database, UPPERCASE status; will be failed
DEAD_DISMISS = "c" * 32  # died; will be dismissed
LIVE_1 = "d" * 32  # queued -> preparing -> running after install
LIVE_2 = "e" * 32  # inserted as running after install


def now_ms():
    return int(time.time() * 1000)


def meta(conn, run_id):
    (text,) = conn.execute(
        "SELECT properties_json FROM protocol_runs WHERE accession_id = ?", (run_id,)
    ).fetchone()
    return json.loads(text)


def row(conn, run_id, *cols):
    return conn.execute(
        f"SELECT {', '.join(cols)} FROM protocol_runs WHERE accession_id = ?", (run_id,)
    ).fetchone()


def insert(conn, run_id, status, props):
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
        "top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, ?)",
        (run_id, f"run {run_id[0]}", status, None if props is None else json.dumps(props), PROTOCOL),
    )


def orphan_ids(conn, sql="SELECT run_id FROM orphaned_runs"):
    return [r[0] for r in conn.execute(sql)]


def test_recovery_scenario(conn):
    t0 = now_ms()
    # -- executors that died long ago (seeded before install) -------------------
    insert(
        conn,
        DEAD_RESUME,
        "running",
        {
            "operator": "ana",
            "deck": {"slots": 3},
            "lastHeartbeat": t0 - 600_000,
            "lease": 1,
            "checkpointStep": 2,
            "checkpointState": {"plate": "P1", "well": "B3"},
        },
    )
    insert(conn, DEAD_FAIL, "RUNNING", {"operator": "bo", "lastHeartbeat": t0 - 900_000})
    insert(conn, DEAD_DISMISS, "paused", {"operator": "cy", "lastHeartbeat": t0 - 300_000})

    # -- install ------------------------------------------------------------------
    cfg = json.loads(conn.execute("SELECT run_recovery_install()").fetchone()[0])
    assert cfg["table"] == "protocol_runs"
    assert cfg["stale_after_ms"] == 30000
    assert json.loads(conn.execute("SELECT run_recovery_config()").fetchone()[0]) == cfg
    # Install stamps only live runs without a heartbeat: the dead keep theirs.
    assert meta(conn, DEAD_RESUME)["lastHeartbeat"] == t0 - 600_000

    # -- runs start: every transition into a live status stamps a heartbeat -------
    insert(conn, LIVE_1, "queued", {"operator": "dee"})
    assert "lastHeartbeat" not in meta(conn, LIVE_1)  # queued: nobody holds it yet
    conn.execute("UPDATE protocol_runs SET status = 'preparing' WHERE accession_id = ?", (LIVE_1,))
    m = meta(conn, LIVE_1)
    assert m["lastHeartbeat"] >= t0 and m["lease"] == 1 and m["operator"] == "dee"
    conn.execute("UPDATE protocol_runs SET status = 'running' WHERE accession_id = ?", (LIVE_1,))
    insert(conn, LIVE_2, "running", None)
    assert meta(conn, LIVE_2)["lastHeartbeat"] >= t0
    assert meta(conn, LIVE_2)["lease"] == 1

    # -- heartbeats and checkpoints -----------------------------------------------
    before = meta(conn, LIVE_1)["lastHeartbeat"]
    (hb,) = conn.execute("SELECT run_heartbeat(?)", (LIVE_1,)).fetchone()
    assert hb >= before and meta(conn, LIVE_1)["lastHeartbeat"] == hb
    (hb2,) = conn.execute(
        "SELECT run_checkpoint(?, 1, json_object('well', 'A1'), 1)", (LIVE_1,)
    ).fetchone()
    m = meta(conn, LIVE_1)
    assert hb2 >= hb and m["lastHeartbeat"] == hb2
    assert m["checkpointStep"] == 1 and m["checkpointState"] == {"well": "A1"}
    assert m["operator"] == "dee"  # the app's key survives
    conn.execute("SELECT run_heartbeat(?, 1)", (LIVE_2,))

    # -- find the orphans: table-valued function and pure-SQL view agree ----------
    rows = conn.execute(
        "SELECT run_id, status, last_heartbeat, age_ms, checkpoint_step, checkpoint_state, "
        "lease, resumes, dismissed FROM orphaned_runs"
    ).fetchall()
    assert [r[0] for r in rows] == [DEAD_FAIL, DEAD_RESUME, DEAD_DISMISS]  # oldest first
    by_id = {r[0]: r for r in rows}
    r = by_id[DEAD_RESUME]
    assert r[1] == "running" and r[2] == t0 - 600_000 and r[3] >= 600_000
    assert r[4] == 2 and json.loads(r[5]) == {"plate": "P1", "well": "B3"}
    assert (r[6], r[7], r[8]) == (1, 0, 0)
    assert by_id[DEAD_FAIL][1] == "RUNNING"
    assert orphan_ids(conn, "SELECT run_id FROM run_recovery_orphans ORDER BY age_ms DESC, run_id") == [
        DEAD_FAIL,
        DEAD_RESUME,
        DEAD_DISMISS,
    ]
    # The live runs go stale too once their executor stops beating: seen from a minute on.
    later = orphan_ids(conn, f"SELECT run_id FROM orphaned_runs(30000, {now_ms() + 60_000})")
    assert set(later) == {DEAD_FAIL, DEAD_RESUME, DEAD_DISMISS, LIVE_1, LIVE_2}

    # A live run is never taken away from its executor.
    with pytest.raises(sqlite3.OperationalError, match=r"recover_run: .* is still alive"):
        conn.execute("SELECT recover_run(?, 'resume')", (LIVE_1,))
    assert meta(conn, LIVE_1)["lease"] == 1

    # -- fail one (UPPERCASE row: written back in its case) -----------------------
    out = json.loads(conn.execute("SELECT recover_run(?, 'fail')", (DEAD_FAIL,)).fetchone()[0])
    assert out["action"] == "fail" and out["status"] == "FAILED" and out["lease"] == 2
    status, end_time = row(conn, DEAD_FAIL, "status", "end_time")
    assert status == "FAILED" and end_time is not None
    m = meta(conn, DEAD_FAIL)
    assert m["lease"] == 2 and m["operator"] == "bo"
    assert [e["action"] for e in m["recoveryLog"]] == ["fail"]
    with pytest.raises(sqlite3.OperationalError, match=r"recover_run: run 'b+' was already recovered by another client \(fail"):
        conn.execute("SELECT recover_run(?, 'fail')", (DEAD_FAIL,))

    # -- resume one from its checkpoint -------------------------------------------
    stale_copy = json.dumps(meta(conn, DEAD_RESUME))  # what the dead executor still holds
    out = json.loads(conn.execute("SELECT recover_run(?, 'resume')", (DEAD_RESUME,)).fetchone()[0])
    assert out["action"] == "resume"
    assert out["lease"] == 2
    assert out["checkpoint_step"] == 2
    assert out["checkpoint_state"] == {"plate": "P1", "well": "B3"}
    assert out["resumes"] == 1
    assert row(conn, DEAD_RESUME, "status") == ("running",)  # no invented transition
    m = meta(conn, DEAD_RESUME)
    assert m["lease"] == 2 and m["resumes"] == 1 and m["lastHeartbeat"] >= t0
    assert m["operator"] == "ana" and m["deck"] == {"slots": 3}  # app keys kept
    assert orphan_ids(conn) == [DEAD_DISMISS]

    # -- the old executor wakes up: its writes are refused ------------------------
    with pytest.raises(sqlite3.OperationalError, match=r"run_heartbeat: stale lease 1 .*found lease 2"):
        conn.execute("SELECT run_heartbeat(?, 1)", (DEAD_RESUME,))
    with pytest.raises(sqlite3.OperationalError, match=r"run_checkpoint: stale lease 1"):
        conn.execute("SELECT run_checkpoint(?, 3, '{}', 1)", (DEAD_RESUME,))
    # ... and a plain UPDATE writing back its stale copy (lease 1) is refused by the trigger.
    with pytest.raises(sqlite3.IntegrityError, match=r"run_recovery_lease_guard: stale write refused"):
        conn.execute(
            "UPDATE protocol_runs SET properties_json = ? WHERE accession_id = ?",
            (stale_copy, DEAD_RESUME),
        )
    assert meta(conn, DEAD_RESUME) == m  # untouched
    # The new executor (lease 2) carries on.
    (hb,) = conn.execute("SELECT run_checkpoint(?, 3, '{\"well\":\"B4\"}', 2)", (DEAD_RESUME,)).fetchone()
    m = meta(conn, DEAD_RESUME)
    assert m["checkpointStep"] == 3 and m["lastHeartbeat"] == hb and m["lease"] == 2

    # -- the app rewrites its metadata and drops the recovery keys: merged back ---
    conn.execute(
        "UPDATE protocol_runs SET properties_json = json_object('operator', 'ana', 'note', 'plate re-seated') "
        "WHERE accession_id = ?",
        (DEAD_RESUME,),
    )
    merged = meta(conn, DEAD_RESUME)
    assert merged["operator"] == "ana" and merged["note"] == "plate re-seated"
    for key in ("lastHeartbeat", "lease", "resumes", "checkpointStep", "checkpointState", "recoveryLog"):
        assert merged[key] == m[key], key
    conn.execute(
        "UPDATE protocol_runs SET properties_json = json_remove(properties_json, '$.lease', '$.lastHeartbeat') "
        "WHERE accession_id = ?",
        (DEAD_RESUME,),
    )
    again = meta(conn, DEAD_RESUME)
    assert again["lease"] == 2 and again["lastHeartbeat"] == m["lastHeartbeat"]
    assert again["note"] == "plate re-seated"

    # -- dismiss the last orphan: hidden until it heartbeats again ----------------
    out = json.loads(conn.execute("SELECT recover_run(?, 'dismiss')", (DEAD_DISMISS,)).fetchone()[0])
    assert out["action"] == "dismiss" and out["status"] == "paused"
    assert orphan_ids(conn) == []
    assert orphan_ids(conn, "SELECT run_id FROM run_recovery_orphans") == []
    assert orphan_ids(conn, "SELECT run_id FROM orphaned_runs WHERE include_dismissed = 1") == [DEAD_DISMISS]
    assert meta(conn, DEAD_DISMISS)["operator"] == "cy"


def test_errors_name_the_function_and_value(conn):
    with pytest.raises(sqlite3.OperationalError, match=r"run_heartbeat: run_recovery is not installed"):
        conn.execute("SELECT run_heartbeat('x')")
    conn.execute("SELECT run_recovery_install()")
    with pytest.raises(sqlite3.OperationalError, match=r"run_heartbeat: no run with accession_id 'nope'"):
        conn.execute("SELECT run_heartbeat('nope')")
    with pytest.raises(sqlite3.OperationalError, match=r"recover_run: unknown action 'revive'"):
        conn.execute("SELECT recover_run('nope', 'revive')")
    insert(conn, LIVE_1, "completed", {"a": 1})
    with pytest.raises(sqlite3.OperationalError, match=r"run_heartbeat: run '.*' is not live, found status 'completed'"):
        conn.execute("SELECT run_heartbeat(?)", (LIVE_1,))


def test_writers_cannot_run_from_a_view_of_an_untrusted_file(conn):
    """Functions that write are DIRECTONLY: a view in the database file cannot call them."""
    conn.execute("SELECT run_recovery_install()")
    insert(conn, LIVE_2, "running", None)
    conn.execute(f"CREATE VIEW sneaky AS SELECT run_heartbeat('{LIVE_2}')")
    with pytest.raises(sqlite3.OperationalError, match=r"unsafe use of run_heartbeat"):
        conn.execute("SELECT * FROM sneaky").fetchall()
