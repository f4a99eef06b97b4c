#!/usr/bin/env python3
"""How much of SQLite's lookaside memory the statements of an app hold once
run_recovery is installed, and how many of each write's small allocations
then go to malloc (BENCHMARKS.md, "Where the cost goes").

Drives libsqlite3.so.0 through ctypes (the Python module reports neither),
with sql/install.sql applied as a client without the extension would:

    /usr/bin/python3 benches/py/lookaside.py                      # Debian's 3.40
    LD_LIBRARY_PATH=target/sqlite-bundled /usr/bin/python3 benches/py/lookaside.py

Prints, per database (without run_recovery / installed):
  * the small allocations a prepared statement keeps while it is cached
    (measured on a connection whose lookaside is large enough for all);
  * with SQLite's default lookaside and the app's four statements cached,
    the allocations per write served by lookaside and those that missed
    because every slot was taken. Nothing is asserted: figures are printed.
"""

import ctypes
import json
import os
import shutil
import tempfile

from adoption import read

lib = ctypes.CDLL("libsqlite3.so.0")
lib.sqlite3_libversion.restype = ctypes.c_char_p
lib.sqlite3_column_text.restype = ctypes.c_char_p
lib.sqlite3_errmsg.restype = ctypes.c_char_p
P = ctypes.c_void_p
TRANSIENT = P(-1)
USED, HIT, MISS_FULL = 0, 4, 6
SQLITE_DBCONFIG_LOOKASIDE = 1001

READ = "SELECT properties_json FROM protocol_runs WHERE accession_id = ?1"
WRITE = "UPDATE protocol_runs SET properties_json = ?1 WHERE accession_id = ?2"
BEAT = "UPDATE protocol_runs SET properties_json = json_set(properties_json, '$.lastHeartbeat', ?1) WHERE accession_id = ?2"
STATUS = "UPDATE protocol_runs SET status = ?1 WHERE accession_id = ?2"
RUNS = 300


TMP = tempfile.mkdtemp(prefix="run-recovery-lookaside-")


class Db:
    count = 0

    def __init__(self, installed, slots=None):
        self.db = P()
        Db.count += 1
        path = os.path.join(TMP, f"{Db.count}.db")
        if lib.sqlite3_open_v2(path.encode(), ctypes.byref(self.db), 6, None) != 0:
            raise RuntimeError(f"cannot open {path}")
        if slots:
            rc = lib.sqlite3_db_config(self.db, SQLITE_DBCONFIG_LOOKASIDE, None, ctypes.c_int(1200), ctypes.c_int(slots))
            if rc != 0:
                raise RuntimeError(f"sqlite3_db_config(LOOKASIDE) returned {rc}")
        self.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        self.exec(read("protocol_runs.sql"))
        if installed:
            self.exec(read("install.sql"))
        meta = {"protocol": "ELISA v1", "operator": "ana", "plate": {"barcode": "P000001", "wells": 96},
                "notes": "serial dilution " * 30, "lastHeartbeat": 1796000000000, "lease": 1, "checkpointStep": 3}
        self.exec("BEGIN")
        for i in range(RUNS):
            self.exec("INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
                      f"top_level_protocol_definition_accession_id) VALUES ('r{i}', 'run', 'RUNNING', "
                      f"'{json.dumps(meta)}', 'p')")
        self.exec("COMMIT")
        self.stmts = {}

    def exec(self, sql):
        err = ctypes.c_char_p()
        if lib.sqlite3_exec(self.db, sql.encode(), None, None, ctypes.byref(err)) != 0:
            raise RuntimeError(err.value.decode())

    def status(self, op, reset=False):
        cur, hi = ctypes.c_int(), ctypes.c_int()
        lib.sqlite3_db_status(self.db, op, ctypes.byref(cur), ctypes.byref(hi), 1 if reset else 0)
        return cur.value, hi.value

    def prepare(self, sql):
        st = P()
        if lib.sqlite3_prepare_v2(self.db, sql.encode(), -1, ctypes.byref(st), None) != 0:
            raise RuntimeError(lib.sqlite3_errmsg(self.db).decode())
        self.stmts[sql] = st
        return st

    def run(self, sql, *args):
        st = self.stmts.get(sql) or self.prepare(sql)
        for i, a in enumerate(args, 1):
            if isinstance(a, int):
                lib.sqlite3_bind_int64(st, i, ctypes.c_int64(a))
            else:
                lib.sqlite3_bind_text(st, i, a.encode(), -1, TRANSIENT)
        rc = lib.sqlite3_step(st)
        out = lib.sqlite3_column_text(st, 0) if rc == 100 else None
        if rc not in (100, 101):
            raise RuntimeError(lib.sqlite3_errmsg(self.db).decode())
        lib.sqlite3_reset(st)
        return out


def held(installed, sql):
    db = Db(installed, slots=5000)
    before = db.status(USED)[0]
    db.prepare(sql)
    return db.status(USED)[0] - before


def writes(db, n):
    """The app's loop: read, edit, write back; a heartbeat; a status write."""
    out = {}
    for what in ("read-modify-write", "heartbeat", "status write"):
        db.status(HIT, reset=True)
        db.status(MISS_FULL, reset=True)
        for k in range(n):
            rid = f"r{k % RUNS}"
            if what == "read-modify-write":
                m = json.loads(db.run(READ, rid))
                m["operator"] = "bo" if k % 2 else "ana"
                db.run(WRITE, json.dumps(m), rid)
            elif what == "heartbeat":
                db.run(BEAT, 1796000000000 + k, rid)
            else:
                db.run(STATUS, "PAUSED" if k % 2 else "RUNNING", rid)
        out[what] = (db.status(HIT)[1] / n, db.status(MISS_FULL)[1] / n)
    return out


def main():
    print(f"SQLite {lib.sqlite3_libversion().decode()}")
    if Db(False, slots=5000).status(USED)[1] == 0:
        print("this build has no lookaside: every small allocation is a malloc, with or without run_recovery")
        return
    print("\nsmall allocations a cached statement keeps (lookaside large enough for all)")
    for name, sql in (("metadata write", WRITE), ("heartbeat", BEAT), ("status write", STATUS)):
        print(f"  {name:<16} without run_recovery {held(False, sql):>4}   installed {held(True, sql):>4}")
    print("\nper write, default lookaside, the four statements cached: served by lookaside / went to malloc")
    for installed in (False, True):
        db = Db(installed)
        writes(db, 300)  # prepares and caches the four statements
        slots = db.status(USED)
        for what, (hit, miss) in writes(db, 300).items():
            print(f"  {'installed' if installed else 'without run_recovery':<21} {what:<18} "
                  f"{hit:5.1f} / {miss:4.1f}   (slots in use {slots[0]}, most ever {slots[1]})")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
