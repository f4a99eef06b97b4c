"""The connection as the app opened it, on Debian's SQLite 3.40 (issue 21):
the library loaded twice, a load that fails, the pulse through the caller's
VFS, and non-ASCII statuses under the one case rule.
"""

import json
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import run_recovery

from conftest import PROTOCOL, SCHEMA


def add(c, run_id, status, meta=None):
    c.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
        "top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, ?)",
        (run_id, run_id, status, meta, PROTOCOL),
    )


def stamps(c, run_id):
    pulses = json.loads(c.execute("SELECT run_recovery_debug()").fetchone()[0])["pulses"]
    return pulses.get(run_id, {}).get("stamps", -1)


def wait_for(what, cond, seconds=20):
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_loading_twice_keeps_running_pulses(conn):
    conn.execute("SELECT run_recovery_install()")
    add(conn, "r1", "running")
    conn.execute("SELECT run_heartbeat_every('r1', 20)")
    run_recovery.load(conn)
    after = stamps(conn, "r1")
    assert after >= 0, "the pulse is still known after the second load"
    wait_for("more stamps", lambda: stamps(conn, "r1") >= after + 3)
    assert conn.execute("SELECT run_heartbeat_stop('r1')").fetchone() == (1,)


def test_a_failed_load_leaves_the_process_and_the_connection_usable(tmp_path):
    # In a child process: before the fix the close crashed it (SIGSEGV).
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"Z" * 8192)
    script = textwrap.dedent(
        f"""
        import sqlite3, run_recovery
        c = sqlite3.connect({str(junk)!r})
        try:
            run_recovery.load(c)
        except sqlite3.Error as e:
            print("refused:", e)
        for sql in ("SELECT run_recovery_version()", "SELECT run_heartbeat('r')"):
            try:
                c.execute(sql)
            except sqlite3.Error as e:
                print("call:", e)
        c.close()
        print("closed")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "refused: error during initialization: file is not a database", lines
    assert lines[1:3] == [
        "call: no such function: run_recovery_version",
        "call: no such function: run_heartbeat",
    ], lines
    assert lines[-1] == "closed"


def test_the_pulse_waits_for_the_callers_exclusive_transaction_under_its_vfs(tmp_path):
    path = tmp_path / "dot.db"
    c = sqlite3.connect(f"file:{path}?vfs=unix-dotfile", uri=True, isolation_level=None)
    run_recovery.load(c)
    c.executescript(SCHEMA)
    c.execute("SELECT run_recovery_install()")
    add(c, "r1", "running")
    c.execute("PRAGMA busy_timeout = 30000")
    c.execute("SELECT run_heartbeat_every('r1', 10)")
    wait_for("stamps", lambda: stamps(c, "r1") >= 2)
    c.execute("BEGIN EXCLUSIVE")
    held = stamps(c, "r1")
    time.sleep(0.3)
    assert stamps(c, "r1") == held, "a stamp landed inside the caller's exclusive transaction"
    c.execute("UPDATE protocol_runs SET name = 'in the transaction' WHERE accession_id = 'r1'")
    c.execute("COMMIT")
    wait_for("a stamp after the commit", lambda: stamps(c, "r1") > held)
    assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    c.execute("SELECT run_heartbeat_stop('r1')")
    c.close()


@pytest.mark.parametrize(
    "status, live",
    [("LÄUFT", 1), ("läuft", 1), ("Läuft", 1), ("lÄuft", 0), ("İŞLEM", 1), ("İşlem", 1)],
)
def test_one_case_rule_for_non_ascii_statuses(conn, status, live):
    conn.execute("""SELECT run_recovery_install('{"live_statuses":["Läuft","İşlem"]}')""")
    add(conn, "r", status, "{}")
    stamped = conn.execute("SELECT properties_json ->> '$.lease' FROM protocol_runs").fetchone()[0]
    view = conn.execute("SELECT live FROM run_recovery_runs WHERE run_id = 'r'").fetchone()[0]
    assert (stamped is not None, view) == (bool(live), live)
    if live:
        assert conn.execute("SELECT run_heartbeat('r') > 0").fetchone() == (1,)
        assert [r[0] for r in conn.execute("SELECT run_id FROM orphaned_runs(0, 4102444800000)")] == ["r"]
    else:
        with pytest.raises(sqlite3.Error, match="is not live"):
            conn.execute("SELECT run_heartbeat('r')")
        with pytest.raises(sqlite3.Error, match="is not live"):
            conn.execute("SELECT recover_run('r', 'fail', 0)")
