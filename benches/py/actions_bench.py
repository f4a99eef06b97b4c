#!/usr/bin/env python3
"""The pure-SQL actions on Debian's SQLite 3.40 (`/usr/bin/python3`).

Side by side in one process, in interleaved rounds (the order rotates), on
WAL files with synchronous=NORMAL and ~600 B of app metadata with the
recovery keys after the app's keys:
  * baseline: the hand-written json_set heartbeat on a database WITHOUT run_recovery;
  * the same UPDATE on an installed database;
  * SELECT run_heartbeat(id, 1)  (dist/run_recovery.so loaded);
  * INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (id, 'heartbeat', 1);
and a resume through the actions against recover_run. Prints medians of the
per-round ratios, in thread CPU time (time.thread_time: other processes on
the machine do not count). Nothing is asserted.

    /usr/bin/python3 benches/py/actions_bench.py [LIBRARY]     (make bench)
"""

import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "dist", "run_recovery.so")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "21"))
RUNS, BATCH = 3000, 300


def read(name):
    with open(os.path.join(ROOT, "sql", name), encoding="utf-8") as f:
        return f.read()


def metadata(rng, now):
    app = {
        "protocol": "ELISA v%d" % rng.randrange(1, 9),
        "operator": rng.choice(["ana", "bo", "cy", "dee"]),
        "plate": {"barcode": "P%06d" % rng.randrange(10**6), "wells": 96},
        "notes": "Serial dilution across columns 1-12, mix 3x at 50 uL, change tips between columns; "
        "reader at 600 nm after 10 min shake; operator checks the reservoir volumes. " * 3,
    }
    app.update({"lastHeartbeat": now - 1000, "lease": 1, "checkpointStep": 3})
    return json.dumps(app, separators=(",", ":"))


def make(path, installed, config="{}"):
    for s in ("", "-wal", "-shm"):
        if os.path.exists(path + s):
            os.remove(path + s)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(read("protocol_runs.sql"))
    rng = random.Random(7)
    now = int(time.time() * 1000)
    live = []
    db.execute("BEGIN")
    for i in range(RUNS):
        rid = "%032x" % (i * 2654435761)
        is_live = i % 10 == 0
        status = "RUNNING" if is_live else ["COMPLETED", "FAILED", "completed"][i % 3]
        db.execute(
            "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
            "top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, 'p')",
            (rid, "run %d" % i, status, metadata(rng, now)),
        )
        if is_live:
            live.append(rid)
    db.execute("COMMIT")
    if installed:
        db.enable_load_extension(True)
        db.load_extension(LIB.rsplit(".", 1)[0])
        db.execute("SELECT run_recovery_install(?)", (config,)).fetchone()
    return db, live


def batch(db, sql, ids, params, ops=BATCH, before=None):
    def run(state={"i": 0}):
        t = time.thread_time()
        for _ in range(ops):
            state["i"] = (state["i"] + 1) % len(ids)
            rid = ids[state["i"]]
            if before:
                db.execute(before, (rid,))
            db.execute(sql, params(rid)).fetchall()
        return (time.thread_time() - t) / ops
    return run


def compare(title, variants):
    for _, f in variants:
        f()  # warm-up
    times = [[] for _ in variants]
    for r in range(ROUNDS):
        for j in range(len(variants)):
            v = (r + j) % len(variants)
            times[v].append(variants[v][1]())
    print(f"\n== {title} (SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {ROUNDS} rounds) ==")
    for v, (name, _) in enumerate(variants):
        ratios = [times[v][r] / times[0][r] for r in range(ROUNDS)]
        print(f"{name:<66} {statistics.median(times[v]) * 1e6:8.1f} µs  {statistics.median(ratios):6.3f}"
              f"  [{min(ratios):.2f}..{max(ratios):.2f}]")
    return times


def ratio(times, a, b):
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def main():
    tmp = tempfile.mkdtemp(prefix="run-recovery-bench-")
    plain, pids = make(os.path.join(tmp, "plain.db"), False)
    inst, ids = make(os.path.join(tmp, "installed.db"), True)
    hand = "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?) WHERE accession_id = ?"
    now = lambda: int(time.time() * 1000)  # noqa: E731
    t = compare("heartbeat, WAL file, synchronous=NORMAL", [
        ("hand-written json_set UPDATE, WITHOUT run_recovery (baseline)", batch(plain, hand, pids, lambda r: (now(), r))),
        ("hand-written json_set UPDATE, installed", batch(inst, hand, ids, lambda r: (now(), r))),
        ("SELECT run_heartbeat(id, 1)", batch(inst, "SELECT run_heartbeat(?, 1)", ids, lambda r: (r,))),
        ("INSERT INTO run_recovery_actions … 'heartbeat', lease 1",
         batch(inst, "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?, 'heartbeat', 1)", ids, lambda r: (r,))),
    ])
    print(f"action heartbeat / hand-written UPDATE on the installed database: {ratio(t, 3, 1):.3f} (target <= 1.3)")
    print(f"action heartbeat / hand-written UPDATE without run_recovery:     {ratio(t, 3, 0):.3f}")
    print(f"action heartbeat / run_heartbeat:                                 {ratio(t, 3, 2):.3f}")
    res, rids = make(os.path.join(tmp, "resume.db"), True, '{"max_resumes": 1000000000}')
    half = len(rids) // 2
    back = "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', 1000) WHERE accession_id = ?"
    compare("resume (each op: backdate the orphan, then resume it), WAL file", [
        ("backdate + SELECT recover_run(id, 'resume') (baseline)",
         batch(res, "SELECT recover_run(?, 'resume')", rids[:half], lambda r: (r,), BATCH // 3, back)),
        ("backdate + INSERT INTO run_recovery_actions … 'resume'",
         batch(res, "INSERT INTO run_recovery_actions (run_id, action) VALUES (?, 'resume')", rids[half:], lambda r: (r,), BATCH // 3, back)),
    ])
    for db in (plain, inst, res):
        db.close()


if __name__ == "__main__":
    main()
