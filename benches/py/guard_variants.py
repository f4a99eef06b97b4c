#!/usr/bin/env python3
"""The lease guard's trade-off between heartbeats and an app's own writes
(BENCHMARKS.md, "The lease guard's trade-off").

The guard (`run_recovery_lease_guard`) first tries a string test that lets a
write through when it changed only the digits of a last `lastHeartbeat`
key (every heartbeat), then a JSON test (both texts parsed, the recovery
keys compared). This script installs run_recovery, rewrites the guard's
`WHEN` into a few variants, each on its own database, and times a
hand-written heartbeat and the app's read-modify-write (read, edit in
Python, write back with `json.dumps`) on each, and the pure-SQL heartbeat
action on each installed one, against the same work on a database without
run_recovery (for the action: the hand-written heartbeat there):

  installed        the guard as install.sql writes it
  colon first      the string test behind a 1-byte test of where the
                   heartbeat's colon must be (most app writes fail there;
                   not adopted)
  no string test   the JSON test alone (what an app write pays at least,
                   and what every heartbeat then pays too)
  floor            no run_recovery; one trigger with only the JSON test
  sorts after first  (only when named in BENCH_VARIANTS) the string test
                   behind NEW > OLD: a heartbeat that moves forward sorts
                   after the old text
  new text only    (only when named) the string test without its check
                   that OLD's tail holds no comma (unsafe: OLD's tail may
                   hide other keys)

    /usr/bin/python3 benches/py/guard_variants.py [LIBRARY]
    LD_LIBRARY_PATH=target/sqlite-bundled /usr/bin/python3 benches/py/guard_variants.py
    BENCH_PROCESSES (default 5): the median of that many processes
    BENCH_VARIANTS: the columns, comma-separated (default: installed,colon
    first,no string test,floor)
    BENCH_LOOKASIDE: every connection's lookaside slots (0: none; unset:
    SQLite's default, 48 kB). On 3.53 the installed connection's default
    lookaside is full of its cached statements' trigger programs, and the
    app write's small allocations go to malloc (BENCHMARKS.md).

Nothing is asserted: figures are printed (`make bench-guard`).
"""

import json
import os
import sqlite3
import statistics
import sys
import tempfile

import adoption as a

PROCESSES = int(os.environ.get("BENCH_PROCESSES", "5"))
LOOKASIDE = int(os.environ["BENCH_LOOKASIDE"]) if os.environ.get("BENCH_LOOKASIDE") else None
META = "`properties_json`"
# The guard's two branches, as install.sql writes them (a change to the
# generator that moves them makes the script stop, not measure something else).
STRING_TEST = "    WHEN (CAST(substr(CAST(NEW."
COLON_TEST = f"substr(CAST(NEW.{META} AS BLOB), -15, 1) = X'3A' AND "
JSON_TEST = "    WHEN NEW."


def guard_sql(db):
    sql = db.execute("SELECT sql FROM sqlite_schema WHERE name = 'run_recovery_lease_guard'").fetchone()[0]
    if sql.count(STRING_TEST) != 1 or sql.count(JSON_TEST) != 1:
        raise SystemExit("guard_variants: the lease guard's WHEN no longer has the two branches this script rewrites")
    return sql


def rewrite(db, variant):
    sql = guard_sql(db)
    i, j = sql.index(STRING_TEST), sql.index(JSON_TEST)
    if variant == "no string test":
        sql = sql[:i] + sql[j:]
    elif variant == "sorts after first":
        sql = sql[:i] + f"    WHEN (NEW.{META} > OLD.{META} AND " + sql[i + len("    WHEN ("):]
    elif variant == "new text only":
        comma = f" AND instr(substr(CAST(OLD.{META} AS BLOB), -14), X'2C') = 0"
        if sql.count(comma) != 1:
            raise SystemExit("guard_variants: the string test's comma check moved")
        sql = sql.replace(comma, "")
    elif variant == "colon first":
        sql = sql[:i] + "    WHEN (" + COLON_TEST + sql[i + len("    WHEN ("):]
    db.execute("DROP TRIGGER run_recovery_lease_guard")
    db.execute(sql)


def heartbeat(db, ids):
    return a.loop(db, a.HAND_HEARTBEAT, ids, lambda r: (a.now_ms(), r))


def action_heartbeat(db, ids):
    """The pure-SQL heartbeat action, which writes the metadata through the
    guard too; on the database without run_recovery, the hand-written
    heartbeat it is measured against (the floor database has no actions)."""
    if not db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'run_recovery_actions'").fetchone():
        return heartbeat(db, ids)
    return a.loop(db, a.ACTION_HEARTBEAT, ids, lambda r: (r,))


VARIANTS = os.environ.get("BENCH_VARIANTS", "installed,colon first,no string test,floor").split(",")


def one_process():
    """{workload: {variant: ratio to the database without run_recovery}}."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="run-recovery-guard-") as tmp:
        dbs = [("without",) + a.runs_db(os.path.join(tmp, "without.db"), False, LOOKASIDE)]
        for v in VARIANTS:
            db, ids = a.runs_db(os.path.join(tmp, v.replace(" ", "-") + ".db"), v != "floor", LOOKASIDE)
            if v == "floor":
                a.floor_meta_trigger(db)
            elif v != "installed":
                rewrite(db, v)
            dbs.append((v, db, ids))
        for name, work in (("hand-written heartbeat", heartbeat), ("action heartbeat", action_heartbeat),
                           ("app read-modify-write", a.read_modify_write)):
            runs = [(v, db, ids) for v, db, ids in dbs if name != "action heartbeat" or v != "floor"]
            t = a.compare([(v, work(db, ids)) for v, db, ids in runs], a.BATCH)
            out[name] = {v: a.ratio(t, k, 0) for k, (v, _, _) in enumerate(runs) if k > 0}
        for _, db, _ in dbs:
            db.close()
    return out


def main():
    if "--json" in sys.argv:
        print(json.dumps(one_process()))
        return
    runs = a.in_processes(__file__, "--json", PROCESSES)
    slots = "SQLite's default lookaside" if LOOKASIDE is None else f"{LOOKASIDE} lookaside slots"
    print(f"\n== the lease guard's variants on SQLite {sqlite3.sqlite_version}, {slots}: installed / without "
          f"run_recovery (median of {PROCESSES} processes, lowest-highest) ==")
    print(f"{'':<24}" + "".join(f"{v:>27}" for v in VARIANTS))
    for work in runs[0]:
        cells = []
        for v in VARIANTS:
            if v not in runs[0][work]:
                cells.append("-")
                continue
            figs = [r[work][v] for r in runs]
            cells.append(f"{statistics.median(figs):.3f} ({min(figs):.3f}-{max(figs):.3f})")
        print(f"{work:<24}" + "".join(f"{c:>27}" for c in cells))


if __name__ == "__main__":
    main()
