"""The recovery scenario from a Python that cannot load extensions at all.

Runs with the `python3` first on PATH (here pyenv's CPython, whose sqlite3
module is built without enable_load_extension) and only the standard library:
sql/install.sql gives it the pure-SQL layer, and every action goes through
INSERT INTO run_recovery_actions; the outcome is read from run_recovery_runs.

    python3 tests/python_plain/test_actions.py      (make test-python-plain)
"""

import json
import os
import sqlite3
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(name):
    with open(os.path.join(ROOT, "sql", name), encoding="utf-8") as f:
        return f.read()


class PlainPythonActions(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "runs.db")
        # Autocommit; transactions are written out where the test needs one.
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = wal")
        self.db.executescript(read("protocol_runs.sql"))
        self.db.executescript(read("install.sql"))

    def tearDown(self):
        self.db.close()
        self.dir.cleanup()

    def act(self, run_id, action, lease=None, step=None, state=None, threshold_ms=None, db=None):
        (db or self.db).execute(
            "INSERT INTO run_recovery_actions (run_id, action, lease, step, state, threshold_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, action, lease, step, state, threshold_ms),
        )

    def run_row(self, run_id, db=None):
        cur = (db or self.db).execute("SELECT * FROM run_recovery_runs WHERE run_id = ?", (run_id,))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        return dict(zip(names, row)) if row else None

    def backdate(self, run_id, ms):
        # Aging a run on purpose: the settings allow plain writes to move
        # lastHeartbeat back (without it the guard keeps the newer one).
        self.db.execute(
            "INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')"
        )
        self.db.execute(
            "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', "
            "json_extract(properties_json, '$.lastHeartbeat') - ?) WHERE accession_id = ?",
            (ms, run_id),
        )

    def refused(self, pattern, *args, **kw):
        with self.assertRaises(sqlite3.DatabaseError) as e:
            self.act(*args, **kw)
        self.assertIn(pattern, str(e.exception))

    def test_this_python_has_no_extension(self):
        # make test-python-plain sets REQUIRE_NO_LOAD: the point is a Python
        # that could not load the extension even if it wanted to.
        if os.environ.get("REQUIRE_NO_LOAD"):
            self.assertFalse(hasattr(self.db, "enable_load_extension"),
                             "this Python can load extensions; run it with one that cannot")
        with self.assertRaises(sqlite3.OperationalError):
            self.db.execute("SELECT run_heartbeat('x')")
        print(f"python {os.sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
              f"enable_load_extension: {hasattr(self.db, 'enable_load_extension')}")

    def test_the_whole_scenario(self):
        db = self.db
        db.execute(
            "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
            "top_level_protocol_definition_accession_id) VALUES "
            "('r1', 'ELISA plate 1', 'running', '{\"operator\":\"ana\"}', 'p'), "
            "('r2', 'PCR setup', 'RUNNING', NULL, 'p'), "
            "('r3', 'Cell count', 'Paused', NULL, 'p')"
        )
        # Start: stamped by the trigger; heartbeat and checkpoint with lease 1.
        self.assertEqual(self.run_row("r1")["lease"], 1)
        self.act("r1", "heartbeat", lease=1)
        self.act("r1", "checkpoint", lease=1, step=3, state=json.dumps({"well": "C4"}))
        self.refused("run_recovery_actions: resume: run is still alive", "r1", "resume")
        # The executor dies; the heartbeat goes stale.
        for r in ("r1", "r2", "r3"):
            self.backdate(r, 45000)
        orphans = [r[0] for r in db.execute("SELECT run_id FROM run_recovery_orphans ORDER BY run_id")]
        self.assertEqual(orphans, ["r1", "r2", "r3"])
        # Resume in one transaction with reading the outcome.
        db.execute("BEGIN IMMEDIATE")
        self.act("r1", "resume")
        out = self.run_row("r1")
        db.execute("COMMIT")
        self.assertEqual((out["lease"], out["resumes"], out["checkpoint_step"]), (2, 1, 3))
        self.assertEqual(json.loads(out["checkpoint_state"]), {"well": "C4"})
        # A second client, on its own connection, lost the race.
        other = sqlite3.connect(self.path, isolation_level=None)
        try:
            with self.assertRaises(sqlite3.DatabaseError) as e:
                self.act("r1", "resume", db=other)
            self.assertIn("run_recovery_actions: resume: run was already recovered by another client", str(e.exception))
        finally:
            other.close()
        # The old lease is refused: action and plain write alike; nothing changes.
        before = db.execute("SELECT properties_json FROM protocol_runs WHERE accession_id = 'r1'").fetchone()
        self.refused("run_recovery_actions: heartbeat: stale lease", "r1", "heartbeat", lease=1)
        with self.assertRaises(sqlite3.IntegrityError) as e:
            db.execute("UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lease', 1) "
                       "WHERE accession_id = 'r1'")
        self.assertIn("run_recovery_lease_guard: stale write refused", str(e.exception))
        after = db.execute("SELECT properties_json FROM protocol_runs WHERE accession_id = 'r1'").fetchone()
        self.assertEqual(before, after)
        self.act("r1", "checkpoint", lease=2, step=4)
        # Fail: in the row's case, end_time set.
        self.act("r2", "fail")
        status, end_time = db.execute("SELECT status, end_time FROM protocol_runs WHERE accession_id = 'r2'").fetchone()
        self.assertEqual(status, "FAILED")
        self.assertRegex(end_time, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # Dismiss: hidden until it heartbeats.
        self.act("r3", "dismiss")
        self.assertEqual(db.execute("SELECT count(*) FROM run_recovery_orphans").fetchone()[0], 0)
        self.refused("run_recovery_actions: dismiss: run was already dismissed", "r3", "dismiss")
        self.act("r3", "heartbeat", lease=1)
        self.assertEqual(self.run_row("r3")["dismissed"], 0)
        # Bad input is refused by name.
        self.refused("run_recovery_actions: unknown action", "r3", "restart")
        self.refused("run_recovery_actions: checkpoint: step must be an integer >= 0", "r3", "checkpoint", step=-1)
        self.refused("run_recovery_actions: checkpoint: state must be valid JSON", "r3", "checkpoint", step=1, state="plate 1")
        self.refused("run_recovery_actions: heartbeat: lease must be an integer", "r3", "heartbeat", lease=1.5)
        self.refused("run_recovery_actions: fail: no such run", "zz", "fail")
        self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
