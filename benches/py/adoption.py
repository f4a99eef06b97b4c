#!/usr/bin/env python3
"""What adopting run_recovery costs an app, per heartbeat, per app write and
per orphan scan, against the same work hand-written on a database WITHOUT
run_recovery; and the pure-SQL actions against the functions (heartbeat,
resume). Prints one table per host with each target of issue 10, the
figure and met/missed. Under the app-write rows, for reading them: the
floors (a database without run_recovery with one trigger doing only what
no JSON-reading guard can skip), the same writes inside a transaction, and
with more lookaside memory on both connections. Nothing is asserted:
figures are printed.

Run by `make bench` on two hosts, the same script:
  * Debian's /usr/bin/python3 with its system SQLite 3.40.1;
  * the same Python with LD_LIBRARY_PATH pointing at the SQLite that rusqlite
    bundles (3.53, built as a shared library by mk/bench.mk).
Both load the real dist/run_recovery.so.

Method: every contender runs in the same process, in interleaved rounds (the
order rotates each round), timed in thread CPU time (time.thread_time: other
processes on the machine do not count); a figure is the median of the
per-round ratios. The heartbeat and app-write rows run in BENCH_PROCESSES
processes one after the other, and their figure is the median of the
processes' (the figures move more between processes than between the
rounds of one). WAL, synchronous=NORMAL, ~600 B of app metadata with the
recovery keys after the app's keys, 3,000 runs (a tenth live) for writes.

    /usr/bin/python3 benches/py/adoption.py [LIBRARY]
    BENCH_ROUNDS (default 21), BENCH_PROCESSES (default 9: the heartbeat and
    app-write rows, each the median of that many processes run one after
    the other), BENCH_SIZES (default 10000,100000,1000000)
"""

import ctypes
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "dist", "run_recovery.so")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "21"))
# The heartbeat and app-write rows run in this many processes, one after the
# other; each row's figure is the median of theirs (see writes()).
PROCESSES = int(os.environ.get("BENCH_PROCESSES", "9"))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "10000,100000,1000000").split(",") if x]
CACHE = os.path.join(ROOT, "target", "bench-py")
RUNS, BATCH = 3000, 200
LIVE = ["preparing", "running", "pausing", "paused", "resuming", "canceling", "intervening", "requires_intervention"]
SPELLINGS = [v for s in LIVE for v in (s, s.upper(), s[0].upper() + s[1:])]
IN_LIVE = ", ".join(f"'{s}'" for s in SPELLINGS)
# The app's hand-written heartbeat, and the pure-SQL heartbeat action.
HAND_HEARTBEAT = ("UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?) "
                  "WHERE accession_id = ?")
ACTION_HEARTBEAT = "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?, 'heartbeat', 1)"
# The keys the lease guard compares between the old and the new metadata.
GUARDED_KEYS = ["lease", "resumes", "checkpointStep", "checkpointState", "dismissedHeartbeat", "recoveryLog"]
NOTES = ("Serial dilution across columns 1-12, mix 3x at 50 uL, change tips between columns; "
         "reader at 600 nm after 10 min shake; operator checks the reservoir volumes. ")


def now_ms():
    return int(time.time() * 1000)


def read(name):
    with open(os.path.join(ROOT, "sql", name), encoding="utf-8") as f:
        return f.read()


def app_keys(rng, small=False):
    return {
        "protocol": "ELISA v%d" % rng.randrange(1, 9),
        "operator": rng.choice(["ana", "bo", "cy", "dee"]),
        "plate": {"barcode": "P%06d" % rng.randrange(10**6), "wells": 96},
        "notes": "" if small else NOTES * 3,
    }


def load(db):
    db.enable_load_extension(True)
    db.load_extension(LIB.rsplit(".", 1)[0])
    db.enable_load_extension(False)


def fresh(path):
    for s in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(path + s):
            os.remove(path + s)


def open_db(path, lookaside=None):
    """A connection in WAL mode; `lookaside`, if not None, is its number of
    lookaside slots (see set_lookaside), else SQLite's default."""
    db = sqlite3.connect(path, isolation_level=None)
    if lookaside is not None:
        set_lookaside(db, path, lookaside)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def set_lookaside(db, path, slots):
    """Give the connection `slots` lookaside slots of 1,200 bytes (0: no
    lookaside; SQLite's default is 48 kB in all). The Python module has no call for it, so this
    reaches the connection's sqlite3 pointer (CPython 3's Connection object
    starts with it after its object header) and checks it is this
    connection's before calling sqlite3_db_config(SQLITE_DBCONFIG_LOOKASIDE)."""
    lib = ctypes.CDLL("libsqlite3.so.0")  # the one the sqlite3 module loaded (LD_LIBRARY_PATH too)
    ptr = ctypes.c_void_p.from_address(id(db) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    lib.sqlite3_db_filename.restype = ctypes.c_char_p
    # No statement may run first: SQLite refuses to resize lookaside while
    # any of it is in use (a statement in Python's cache holds some).
    if lib.sqlite3_db_filename(ctypes.c_void_p(ptr), b"main").decode() != os.path.realpath(path):
        raise RuntimeError("set_lookaside: not this connection's sqlite3 pointer")
    rc = lib.sqlite3_db_config(ctypes.c_void_p(ptr), 1001, None, ctypes.c_int(1200), ctypes.c_int(slots))
    if rc != 0:
        raise RuntimeError(f"set_lookaside: sqlite3_db_config returned {rc}")


def runs_db(path, installed, lookaside=None):
    """RUNS runs, a tenth live (RUNNING), recovery keys after the app's. On
    an installed database the runs are inserted after install, as an app's
    runs are, so they go live through the stamp trigger."""
    fresh(path)
    db = open_db(path, lookaside)
    db.executescript(read("protocol_runs.sql"))
    if installed:
        load(db)
        db.execute("SELECT run_recovery_install()").fetchone()
    rng = random.Random(7)
    now = now_ms()
    live = []
    db.execute("BEGIN")
    for i in range(RUNS):
        rid = "%032x" % (i * 2654435761)
        is_live = i % 10 == 0
        m = app_keys(rng)
        m.update({"lastHeartbeat": now - 1000, "lease": 1, "checkpointStep": 3})
        db.execute(
            "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
            "top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, 'p')",
            (rid, "run %d" % i, "RUNNING" if is_live else "COMPLETED", json.dumps(m, separators=(",", ":"))),
        )
        if is_live:
            live.append(rid)
    db.execute("COMMIT")
    return db, live


def history_db(n, all_stale):
    """n runs, 100 live: 20 stale (or all 100), the rest heartbeating; cached."""
    os.makedirs(CACHE, exist_ok=True)
    small = all_stale  # the hard case of issue 10: all live runs stale, small metadata
    path = os.path.join(CACHE, f"history-v2-{n}-{'all' if all_stale else '20'}.db")
    if os.path.exists(path):
        return path
    tmp = path + ".tmp"
    fresh(tmp)
    db = sqlite3.connect(tmp, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(read("protocol_runs.sql"))
    rng = random.Random(n)
    build = now_ms()
    every = max(n // 100, 1)
    live = 0
    db.execute("BEGIN")
    for i in range(n):
        m = app_keys(rng, small)
        if i % every == 0 and live < 100:
            live += 1
            status = ["running", "RUNNING", "paused", "PAUSED", "preparing"][live % 5]
            stale = all_stale or live % 5 == 0
            # The live ones that heartbeat are marked: keep_alive() stamps them
            # before each measurement, however old the cache.
            m.update({"lease": 1, "checkpointStep": 4, "lastHeartbeat": build - 3_600_000})
            if not stale:
                m["benchAlive"] = 1
        else:
            status = ["completed", "COMPLETED", "failed", "FAILED", "cancelled"][rng.randrange(5)]
            m.update({"lease": 1, "lastHeartbeat": build - 86_400_000 - rng.randrange(86_400_000 * 365)})
        db.execute(
            "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
            "top_level_protocol_definition_accession_id) VALUES (?, ?, ?, ?, 'p')",
            ("%032x" % (i * 2654435761), "run %d" % i, status, json.dumps(m, separators=(",", ":"))),
        )
    db.execute("COMMIT")
    db.close()
    os.rename(tmp, path)
    return path


def keep_alive(db):
    """Stamps the heartbeating live runs of a history database with now."""
    db.execute(
        f"UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?) "
        f"WHERE status IN ({IN_LIVE}) AND properties_json ->> '$.benchAlive' = 1",
        (now_ms(),),
    )


def compare(contenders, ops):
    """Median per-op time and median per-round ratio to contender 0, per contender."""
    for _, f in contenders:
        f()
    times = [[] for _ in contenders]
    for r in range(ROUNDS):
        for j in range(len(contenders)):
            v = (r + j) % len(contenders)
            t = time.thread_time()
            contenders[v][1]()
            times[v].append((time.thread_time() - t) / ops)
    return times


def ratio(times, a, b):
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


class Table:
    """Rows of (what, figure, unit, limit); a row with a limit is a target.
    A row measured in several processes also has its lowest and highest
    figure, and its figure is their median."""

    def __init__(self, host):
        self.host = host
        self.rows = []

    def target(self, what, figure, limit, unit="x"):
        self.rows.append({"what": what, "figure": figure, "unit": unit, "limit": limit})

    def info(self, what, figure, unit="x"):
        self.rows.append({"what": what, "figure": figure, "unit": unit, "limit": None})

    def merge(self, runs):
        """Append the rows of `runs` (one list of rows per process, the same
        rows in each): each row's median, lowest and highest figure."""
        for rows in zip(*runs):
            figs = [r["figure"] for r in rows]
            row = dict(rows[0], figure=statistics.median(figs), low=min(figs), high=max(figs))
            self.rows.append(row)

    @staticmethod
    def num(figure, unit):
        return f"{figure:.1f}" if unit == "µs" else f"{figure:.3f}"

    def print(self):
        print(f"\n== adoption cost on {self.host} ({ROUNDS} rounds, thread CPU time) ==")
        if any("low" in r for r in self.rows):
            print(f"(a figure with a range: the median of {PROCESSES} processes, lowest-highest in brackets)")
        cells = []
        for r in self.rows:
            unit = "x" if r["unit"] == "x" else " " + r["unit"]
            fig = self.num(r["figure"], r["unit"]) + unit
            if "low" in r:
                fig += f" ({self.num(r['low'], r['unit'])}-{self.num(r['high'], r['unit'])})"
            if r["limit"] is None:
                cells.append((r["what"], fig, "", ""))
            else:
                cells.append((r["what"], fig, f"<= {r['limit']}{unit}", "met" if r["figure"] <= r["limit"] else "MISSED"))
        w = max(len(c[0]) for c in cells)
        f = max(len(c[1]) for c in cells)
        for what, fig, limit, verdict in cells:
            print(f"{what:<{w}}  {fig:>{f}}  {limit:>10}  {verdict}")


def loop(db, sql, ids, params, n=BATCH):
    state = {"i": 0}

    def run():
        for _ in range(n):
            state["i"] = (state["i"] + 1) % len(ids)
            db.execute(sql, params(ids[state["i"]])).fetchall()
    return run


def floor_meta_trigger(db):
    """The metadata floor: one trigger that does only what any guard reading
    the recovery keys out of the old and the new metadata must (both texts
    validated, the recovery keys of each read with one json_extract, the new
    heartbeat's presence); its body never runs for the benchmark's writes."""
    meta, keys = '"properties_json"', ", ".join(f"'$.{k}'" for k in GUARDED_KEYS)
    db.execute(
        f"CREATE TRIGGER floor_meta AFTER UPDATE OF {meta} ON protocol_runs "
        f"WHEN NOT (json_valid(NEW.{meta}) AND json_valid(OLD.{meta}) "
        f"AND json_extract(NEW.{meta}, {keys}) IS json_extract(OLD.{meta}, {keys}) "
        f"AND json_type(NEW.{meta}, '$.lastHeartbeat') IS NOT NULL) BEGIN SELECT 1; END")


def in_processes(script, flag, n):
    """Runs `script LIB flag` n times, one after the other, and returns what
    each printed on stdout, read as JSON."""
    runs = []
    for i in range(n):
        out = subprocess.run([sys.executable, os.path.abspath(script), LIB, flag],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
        print(f"  {os.path.basename(script)}: process {i + 1} of {n} done", file=sys.stderr)
    return runs


def read_modify_write(db, ids):
    """BATCH of the app's own metadata writes: read the text, edit a key in
    Python, write it back with json.dumps (which puts a space after every
    colon and comma)."""
    state = {"i": 0}

    def run():
        for _ in range(BATCH):
            state["i"] = (state["i"] + 1) % len(ids)
            rid = ids[state["i"]]
            text = db.execute("SELECT properties_json FROM protocol_runs WHERE accession_id = ?", (rid,)).fetchone()[0]
            m = json.loads(text)
            m["operator"] = random.choice(["ana", "bo", "cy"])
            db.execute("UPDATE protocol_runs SET properties_json = ? WHERE accession_id = ?", (json.dumps(m), rid))
    return run


def heartbeats(table, tmp):
    plain, pids = runs_db(os.path.join(tmp, "plain.db"), False)
    inst, ids = runs_db(os.path.join(tmp, "installed.db"), True)
    hand = HAND_HEARTBEAT
    t = compare([
        ("hand, without", loop(plain, hand, pids, lambda r: (now_ms(), r))),
        ("hand, installed", loop(inst, hand, ids, lambda r: (now_ms(), r))),
        ("run_heartbeat", loop(inst, "SELECT run_heartbeat(?, 1)", ids, lambda r: (r,))),
        ("action", loop(inst, ACTION_HEARTBEAT, ids, lambda r: (r,))),
    ], BATCH)
    table.info("hand-written json_set heartbeat WITHOUT run_recovery", statistics.median(t[0]) * 1e6, "µs")
    table.target("run_heartbeat(id, lease) / hand-written heartbeat without run_recovery", ratio(t, 2, 0), 1.25)
    table.target("run_heartbeat(id, lease) / hand-written heartbeat, installed", ratio(t, 2, 1), 1.10)
    table.target("action heartbeat / hand-written heartbeat without run_recovery", ratio(t, 3, 0), 1.25)
    table.info("hand-written heartbeat: installed / without (the triggers' tax)", ratio(t, 1, 0))
    table.target("action heartbeat / hand-written heartbeat, installed (issue 8)", ratio(t, 3, 1), 1.3)
    table.info("action heartbeat / run_heartbeat(id, lease)", ratio(t, 3, 2))

    # The app's own writes: read, edit in app code, write back; and a status-only write.
    rmw = read_modify_write

    def status_writes(db, ids):
        state = {"i": 0, "k": 0}

        def run():
            for _ in range(BATCH):
                state["i"] = (state["i"] + 1) % len(ids)
                state["k"] += 1
                db.execute("UPDATE protocol_runs SET status = ? WHERE accession_id = ?",
                           ("PAUSED" if state["k"] % 2 else "RUNNING", ids[state["i"]]))
        return run

    # The floors: a third database without run_recovery, with one trigger
    # that does only the part a design that reads the recovery keys from
    # the metadata cannot avoid (for an app write: both texts parsed, the
    # recovery keys read from each; for a status write: entering a trigger
    # program at all). Its WHEN is false for these writes, so its body never
    # runs.
    floor, fids = runs_db(os.path.join(tmp, "floor.db"), False)
    floor_meta_trigger(floor)
    floor.execute("CREATE TRIGGER floor_status AFTER UPDATE OF status ON protocol_runs WHEN 0 BEGIN SELECT 1; END")
    t = compare([("without", rmw(plain, pids)), ("installed", rmw(inst, ids)), ("floor", rmw(floor, fids))], BATCH)
    # The write rules of schema 7 and later (null, REPLACE, stale copies)
    # run on every app write; the tax may rise to 1.20 for them.
    table.target("app read-modify-write of its metadata: installed / without", ratio(t, 1, 0), 1.20)
    table.info("  floor: a trigger that only compares the recovery keys of both texts / without",
               ratio(t, 2, 0))
    t = compare([("without", status_writes(plain, pids)), ("installed", status_writes(inst, ids)),
                 ("floor", status_writes(floor, fids))], BATCH)
    table.target("app status-only write (RUNNING <-> PAUSED): installed / without", ratio(t, 1, 0), 1.05)
    table.info("  floor: an AFTER UPDATE OF status trigger whose WHEN is 0 / without", ratio(t, 2, 0))
    floor.close()

    # The same two app writes, each batch inside one transaction (as Python's
    # default isolation_level and most ORMs write): there every write on the
    # installed database opens a statement journal, so that the guard's
    # RAISE(ABORT) can undo that write alone (BENCHMARKS.md).
    def in_transaction(db, run):
        def wrapped():
            db.execute("BEGIN")
            run()
            db.execute("COMMIT")
        return wrapped
    t = compare([("without", in_transaction(plain, rmw(plain, pids))),
                 ("installed", in_transaction(inst, rmw(inst, ids)))], BATCH)
    table.info("  inside a transaction: read-modify-write", ratio(t, 1, 0))
    t = compare([("without", in_transaction(plain, status_writes(plain, pids))),
                 ("installed", in_transaction(inst, status_writes(inst, ids)))], BATCH)
    table.info("  inside a transaction: status-only write", ratio(t, 1, 0))
    for db in (plain, inst):
        db.close()

    # The same two app writes with 1,000 lookaside slots on both connections.
    # Every cached statement that writes the metadata or the status holds
    # its compiled trigger programs (a few hundred small allocations), and
    # SQLite's default lookaside (48 kB) is full once a few are cached: the
    # installed connection's small allocations then go to malloc, the plain
    # one's do not (BENCHMARKS.md, "Where the cost goes").
    plain, pids = runs_db(os.path.join(tmp, "plain-la.db"), False, lookaside=1000)
    inst, ids = runs_db(os.path.join(tmp, "installed-la.db"), True, lookaside=1000)
    for db, rids in ((plain, pids), (inst, ids)):
        loop(db, hand, rids, lambda r: (now_ms(), r))()
    loop(inst, "SELECT run_heartbeat(?, 1)", ids, lambda r: (r,))()
    t = compare([("without", rmw(plain, pids)), ("installed", rmw(inst, ids))], BATCH)
    table.info("  with 1,000 lookaside slots on both connections: read-modify-write", ratio(t, 1, 0))
    t = compare([("without", status_writes(plain, pids)), ("installed", status_writes(inst, ids))], BATCH)
    table.info("  with 1,000 lookaside slots on both connections: status-only write", ratio(t, 1, 0))
    for db in (plain, inst):
        db.close()


def resumes(table, tmp):
    """A resume through the actions against recover_run: each op backdates
    one orphan with a plain write, then resumes it (both pay the backdate)."""
    db, ids = runs_db(os.path.join(tmp, "resume.db"), True)
    db.execute("SELECT run_recovery_install('{\"max_resumes\": 1000000000}')").fetchone()
    half = len(ids) // 2
    back = "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', 1000) WHERE accession_id = ?"
    db.execute("INSERT OR REPLACE INTO run_recovery_settings (key, value) VALUES ('allow_backdating', '1')")

    def resume(sql, run_ids):
        state = {"i": 0}

        def run():
            for _ in range(BATCH // 4):
                state["i"] = (state["i"] + 1) % len(run_ids)
                rid = run_ids[state["i"]]
                db.execute(back, (rid,))
                db.execute(sql, (rid,)).fetchall()
        return run
    t = compare([
        ("recover_run", resume("SELECT recover_run(?, 'resume')", ids[:half])),
        ("action", resume("INSERT INTO run_recovery_actions (run_id, action) VALUES (?, 'resume')", ids[half:])),
    ], BATCH // 4)
    table.info("resume: backdate + action / backdate + recover_run", ratio(t, 1, 0))
    db.close()


def orphans(table):
    hand = (f"SELECT accession_id, name, status, properties_json ->> '$.lastHeartbeat', "
            f"properties_json ->> '$.checkpointStep' FROM protocol_runs "
            f"WHERE status IN ({IN_LIVE}) AND properties_json ->> '$.lastHeartbeat' < ?")
    facts = "run_id, name, status, last_heartbeat, checkpoint_step"
    # All ten columns of the view (what SELECT * returns), hand-written.
    p = "properties_json"
    hand10 = (f"SELECT accession_id, name, status, {p} ->> '$.lastHeartbeat', ?1 - coalesce({p} ->> '$.lastHeartbeat', 0), "
              f"{p} ->> '$.checkpointStep', {p} -> '$.checkpointState', coalesce({p} ->> '$.lease', 1), "
              f"coalesce({p} ->> '$.resumes', 0), coalesce({p} ->> '$.dismissedHeartbeat' = {p} ->> '$.lastHeartbeat', 0) "
              f"FROM protocol_runs WHERE status IN ({IN_LIVE}) AND {p} ->> '$.lastHeartbeat' < ?1 - 30000")
    for all_stale in (False, True):
        for n in SIZES:
            src = history_db(n, all_stale)
            path = src + ".installed"
            if not os.path.exists(path):
                with open(src, "rb") as a, open(path, "wb") as b:
                    b.write(a.read())
                db = sqlite3.connect(path, isolation_level=None)
                load(db)
                db.execute("SELECT run_recovery_install()").fetchone()
                db.close()
            plain = sqlite3.connect(src, isolation_level=None)
            inst = sqlite3.connect(path, isolation_level=None)
            load(inst)
            # The cached copy may carry an older install: bring it to this build's.
            inst.execute("SELECT run_recovery_install()").fetchone()
            keep_alive(plain)
            keep_alive(inst)
            expect = 100 if all_stale else 20
            qs = [
                ("hand", lambda: plain.execute(hand, (now_ms() - 30000,)).fetchall()),
                ("tvf", lambda: inst.execute(f"SELECT {facts} FROM orphaned_runs").fetchall()),
                ("view", lambda: inst.execute(f"SELECT {facts} FROM run_recovery_orphans").fetchall()),
                ("hand, ten columns", lambda: plain.execute(hand10, (now_ms(),)).fetchall()),
                ("tvf *", lambda: inst.execute("SELECT * FROM orphaned_runs").fetchall()),
                ("view *", lambda: inst.execute("SELECT * FROM run_recovery_orphans").fetchall()),
            ]
            for name, q in qs:
                got = len(q())
                if got != expect:
                    raise SystemExit(f"{name} found {got} orphans at {n} runs, expected {expect}")
            batch = 20

            def rep(q):
                def run():
                    for _ in range(batch):
                        q()
                return run
            t = compare([(name, rep(q)) for name, q in qs], batch)
            which = "every live run stale, small metadata" if all_stale else "20 of 100 live runs stale"
            table.target(f"orphaned_runs / hand-written, {n} runs, {which}", ratio(t, 1, 0), 1.3)
            table.target(f"run_recovery_orphans / hand-written, {n} runs, {which}", ratio(t, 2, 0), 1.3)
            table.target(f"SELECT * FROM orphaned_runs / hand-written ten columns, {n} runs, {which}", ratio(t, 4, 3), 1.3)
            table.target(f"SELECT * FROM run_recovery_orphans / hand-written ten columns, {n} runs, {which}", ratio(t, 5, 3), 1.3)
            if n == max(SIZES):
                table.target(f"orphaned_runs at {n} runs, {which}", statistics.median(t[1]) * 1e3, 1.0, "ms")
            plain.close()
            inst.close()


def writes(table):
    """The heartbeat and app-write rows, in PROCESSES processes one after the
    other (each its own databases and 21 rounds), merged into medians: the
    figures move more between processes than between the rounds of one."""
    if PROCESSES <= 1:
        with tempfile.TemporaryDirectory(prefix="run-recovery-adoption-") as tmp:
            heartbeats(table, tmp)
        return
    table.merge(in_processes(__file__, "--writes-json", PROCESSES))


def main():
    host = f"SQLite {sqlite3.sqlite_version} (Python {sys.version.split()[0]})"
    table = Table(host)
    if "--writes-json" in sys.argv:
        with tempfile.TemporaryDirectory(prefix="run-recovery-adoption-") as tmp:
            heartbeats(table, tmp)
        print(json.dumps(table.rows))
        return
    writes(table)
    with tempfile.TemporaryDirectory(prefix="run-recovery-adoption-") as tmp:
        resumes(table, tmp)
    orphans(table)
    table.print()


if __name__ == "__main__":
    main()
