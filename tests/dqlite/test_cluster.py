#!/usr/bin/env python3
"""run_recovery on a replicated SQLite cluster (dqlite), the leader killed mid-run.

Starts three real `dqlite-demo` nodes (Debian's go-dqlite) on free loopback
ports with their data in a temporary directory, installs sql/install.sql
through tools/dqlite (run-recovery-dqlite), and plays docs/distributed.md's
scenario through the pure-SQL actions (INSERT INTO run_recovery_actions):

  1. machine A starts a run (status RUNNING), heartbeats and checkpoints;
  2. the Raft leader is killed with SIGKILL while A keeps going: A's writes
     move to the new leader, no acknowledged checkpoint is lost;
  3. A is killed; machine B (a client given only the other nodes) finds the
     orphan after the threshold, resumes it with a new lease, finishes it;
  4. A's late heartbeat and late plain metadata write (old lease) are refused;
  5. the killed node restarts, catches up, serves the same rows; integrity ok.
  Then: two clients on different nodes race to resume the same orphan, many
  rounds, exactly one wins each round. Prints the figures (not asserted).

Every process it starts is stopped at the end, also on failure (and dies with
this script even if the script is killed: PR_SET_PDEATHSIG through setpriv).

    python3 tests/dqlite/test_cluster.py --tool target/dqlite/bin/run-recovery-dqlite
"""

import argparse
import atexit
import glob
import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THRESHOLD_MS = 1500          # orphan threshold used by machine B (the installed default is 30000)
RACE_THRESHOLD_MS = 300
INTERVAL_MS = 100            # executor A: one write every 100 ms, every 3rd a checkpoint

PROCS = []                   # every process this script started, stopped in cleanup()
# Children die with this script even if it is SIGKILLed (PR_SET_PDEATHSIG, set by
# util-linux's setpriv before it execs the command; not preexec_fn: we have threads).
DEATHSIG = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"  ok: {what}")


def now_ms():
    return int(time.time() * 1000)


def wait_for(what, fn, timeout=20.0, interval=0.05):
    """Polls fn until it returns a truthy value; fails loudly on timeout."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_err = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_err})" if last_err else ""))


def spawn(args, **kw):
    p = subprocess.Popen(DEATHSIG + list(args), **kw)
    PROCS.append(p)
    return p


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 5
    for p in PROCS:
        if p.poll() is None:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for p in PROCS:
        for f in (p.stdin, p.stdout, p.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def q(s):
    return "'" + str(s).replace("'", "''") + "'"


class Tool:
    """run-recovery-dqlite, one process per call."""

    def __init__(self, path):
        self.path = path

    def run(self, cluster, *args, check_ok=True, timeout=30):
        r = subprocess.run(DEATHSIG + [self.path, "-c", ",".join(cluster), *args], capture_output=True, text=True,
                           timeout=timeout)
        if check_ok and r.returncode != 0:
            raise Failure(f"run-recovery-dqlite {' '.join(args)[:120]} failed: {r.stderr.strip()}")
        return r

    def rows(self, cluster, sql):
        out = self.run(cluster, "query", sql).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def refused(self, cluster, sql):
        """Runs sql expecting a refusal; returns the error text."""
        r = self.run(cluster, "exec", sql, check_ok=False)
        if r.returncode == 0:
            raise Failure(f"expected a refusal, but it was accepted: {sql}")
        return r.stderr.strip().split("run-recovery-dqlite: exec: ", 1)[-1]


class Lines:
    """Reads a child's stdout lines on a thread (JSON objects)."""

    def __init__(self, stream):
        self.q = queue.Queue()
        self.all = []
        self.lock = threading.Lock()
        t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        t.start()

    def _read(self, stream):
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"raw": line}
            with self.lock:
                self.all.append(obj)
            self.q.put(obj)
        self.q.put(None)

    def snapshot(self):
        with self.lock:
            return list(self.all)


class Pipe:
    """A long-lived client (run-recovery-dqlite pipe): one SQL text in, one JSON answer out."""

    def __init__(self, tool, cluster, name):
        self.name = name
        self.cluster = cluster
        self.p = spawn([tool.path, "-c", ",".join(cluster), "pipe"], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = Lines(self.p.stdout)

    def send(self, sql):
        self.p.stdin.write(json.dumps(sql) + "\n")
        self.p.stdin.flush()

    def recv(self, timeout=20):
        try:
            r = self.lines.q.get(timeout=timeout)
        except queue.Empty:
            raise Failure(f"{self.name}: no answer within {timeout}s")
        if r is None:
            raise Failure(f"{self.name}: the client exited: {self.p.stderr.read()}")
        return r

    def call(self, sql, timeout=20):
        self.send(sql)
        return self.recv(timeout)

    def ok(self, sql):
        r = self.call(sql)
        if not r["ok"]:
            raise Failure(f"{self.name}: refused: {r['error']}\n  SQL: {sql}")
        return r.get("rows") or []


class Cluster:
    def __init__(self, tool, tmp, n=3, name="cluster", env=None):
        self.tool = tool
        self.tmp = tmp
        self.name = name
        self.env = env or {}  # node index -> extra environment (a skewed clock)
        ports = free_ports(2 * n)
        self.nodes = [{"i": i, "db": f"127.0.0.1:{ports[2 * i]}", "api": f"127.0.0.1:{ports[2 * i + 1]}",
                       "proc": None} for i in range(n)]

    def addrs(self, *idx):
        return [self.nodes[i]["db"] for i in (idx or range(len(self.nodes)))]

    def start_node(self, i):
        node = self.nodes[i]
        args = ["dqlite-demo", "--db", node["db"], "--api", node["api"], "-D", os.path.join(self.tmp, self.name)]
        if i > 0:
            args += ["-j", self.nodes[0]["db"]]
        log = open(os.path.join(self.tmp, f"{self.name}-node{i}.log"), "a")
        env = dict(os.environ, **self.env.get(i, {}))
        node["proc"] = spawn(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()

    def stop(self):
        for n in self.nodes:
            if n["proc"] and n["proc"].poll() is None:
                n["proc"].terminate()
        for n in self.nodes:
            if n["proc"]:
                try:
                    n["proc"].wait(5)
                except subprocess.TimeoutExpired:
                    n["proc"].kill()
                    n["proc"].wait()

    def start(self):
        self.start_node(0)
        wait_for("node 0 to lead a cluster of one", lambda: self.leader(self.addrs(0)) == self.nodes[0]["db"])
        for i in range(1, len(self.nodes)):
            self.start_node(i)

        def voters():
            out = self.tool.run(self.addrs(0), "cluster", check_ok=False)
            rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
            return len(rows) == len(self.nodes) and all(r["role"] == "voter" for r in rows)

        wait_for("three voters", voters, timeout=30, interval=0.1)

    def leader(self, cluster=None):
        r = subprocess.run(DEATHSIG + [self.tool.path, "-c", ",".join(cluster or self.addrs()), "-timeout", "2s", "leader"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None

    def index_of(self, addr):
        return next(n["i"] for n in self.nodes if n["db"] == addr)

    def kill(self, i):
        p = self.nodes[i]["proc"]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def dump_rows(self, i, sql):
        """Reads the database as node i holds it locally (not through the leader)."""
        d = os.path.join(self.tmp, f"dump{i}-{time.monotonic_ns()}")
        self.tool.run([self.nodes[i]["db"]], "dump", self.nodes[i]["db"], d, timeout=10)
        conn = sqlite3.connect(os.path.join(d, "runs"))
        try:
            return conn.execute(sql).fetchall(), conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()


def events(lines, **match):
    return [e for e in lines.snapshot() if all(e.get(k) == v for k, v in match.items())]


def quantile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]


def local_latency(tmp, n):
    """The same heartbeat action on a local SQLite file (Debian's Python sqlite3 module)."""
    out = {}
    for mode in ("delete", "wal"):
        path = os.path.join(tmp, f"local-{mode}.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA journal_mode={mode}")
        with open(os.path.join(ROOT, "sql", "protocol_runs.sql")) as f:
            conn.executescript(f.read())
        with open(os.path.join(ROOT, "sql", "install.sql")) as f:
            conn.executescript(f.read())
        conn.execute("INSERT INTO protocol_runs (accession_id, status, top_level_protocol_definition_accession_id) "
                     "VALUES ('bench-local', 'RUNNING', 'def-1')")
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO run_recovery_actions (run_id, action) VALUES ('bench-local', 'heartbeat')")
            lat.append((time.perf_counter() - t0) * 1000)
        conn.close()
        out[mode] = (quantile(lat, 0.5), quantile(lat, 0.99))
    return out


def scenario(tool, tmp, bench_n):
    figures = {}
    c = Cluster(tool, tmp)
    t_start = time.monotonic()
    c.start()
    print(f"cluster up: {[n['db'] for n in c.nodes]} in {time.monotonic() - t_start:.1f}s")

    # -- install --------------------------------------------------------------------------
    tool.run(c.addrs(), "install", os.path.join(ROOT, "sql", "protocol_runs.sql"))
    r = tool.run(c.addrs(), "install", os.path.join(ROOT, "sql", "install.sql"))
    print("  " + r.stdout.strip() + "; " + r.stderr.strip().replace("\n", "; "))
    objs = {row["name"] for row in tool.rows(c.addrs(), "SELECT name FROM sqlite_master WHERE name LIKE 'run_recovery%'")}
    if "run_recovery_actions" not in objs or "run_recovery_runs" not in objs:
        raise Failure(f"sql/install.sql has no run_recovery_actions / run_recovery_runs views (found {sorted(objs)}): "
                      "the pure-SQL actions are needed for this scenario")
    check({"run_recovery_lease_guard", "run_recovery_stamp_insert", "run_recovery_orphans"} <= objs,
          "install.sql installed on the cluster through the leader: triggers and views present")
    sqlite_version = tool.rows(c.addrs(), "SELECT sqlite_version() AS v")[0]["v"]
    print(f"  the nodes run SQLite {sqlite_version}")

    # -- 1. machine A starts a run and keeps it alive ---------------------------------------
    print("1. machine A starts run-a (RUNNING), heartbeats and checkpoints through the cluster")
    a = spawn([tool.path, "-c", ",".join(c.addrs()), "executor", "-start", "-name", "PCR plate 7",
               "-interval", f"{INTERVAL_MS}ms", "-checkpoint-every", "3", "run-a"],
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    a_out = Lines(a.stdout)
    wait_for("A's first two checkpoints", lambda: len(events(a_out, event="checkpoint", ok=True)) >= 2)
    row = tool.rows(c.addrs(), "SELECT * FROM run_recovery_runs WHERE run_id = 'run-a'")[0]
    check(row["status"] == "RUNNING" and row["live"] == 1 and row["lease"] == 1,
          f"run-a is live with status RUNNING and lease 1 (step {row['checkpoint_step']})")

    # -- 2. the leader is killed -------------------------------------------------------------
    leader = c.leader()
    li = c.index_of(leader)
    print(f"2. SIGKILL the Raft leader, node {li} ({leader}), while A keeps heartbeating")
    acked_before = max(e["step"] for e in events(a_out, event="checkpoint", ok=True))
    c.kill(li)
    t_kill = now_ms()
    survivors = [i for i in range(3) if i != li]

    def after_kill():
        evs = [e for e in a_out.snapshot() if e.get("ok") and e.get("t0", 0) > t_kill]
        return evs if len([e for e in evs if e["event"] == "checkpoint"]) >= 2 else None

    wait_for("A's writes to go through a new leader (two checkpoints after the kill)", after_kill, timeout=40)
    accepted = [e for e in a_out.snapshot() if e.get("ok") and e.get("t1", 0) > t_kill]
    figures["kill_to_first_write_ms"] = min(e["t1"] for e in accepted) - t_kill
    slowest = max(e["ms"] for e in accepted)
    new_leader = c.leader(c.addrs(*survivors))
    check(new_leader in c.addrs(*survivors), f"a new leader was elected: node {c.index_of(new_leader)}")
    failed = [e for e in a_out.snapshot() if e.get("ok") is False]
    print(f"  A's writes during the failover: {len(failed)} failed, the slowest took {slowest:.0f} ms "
          "(the driver retries on the new leader)")
    row = tool.rows(c.addrs(*survivors), "SELECT checkpoint_step, lease FROM run_recovery_runs WHERE run_id = 'run-a'")[0]
    check(row["checkpoint_step"] >= acked_before,
          f"no acknowledged checkpoint lost: step {row['checkpoint_step']} >= {acked_before} acknowledged before the kill")

    # -- 3. A dies; B finds the orphan and resumes -------------------------------------------
    print("3. SIGKILL machine A; machine B (given only the surviving nodes) finds the orphan and resumes it")
    a.send_signal(signal.SIGKILL)
    a.wait()
    t_dead = now_ms()
    a_ok = [e for e in a_out.snapshot() if e.get("ok")]
    a_acked = max(e["step"] for e in a_ok if e["event"] == "checkpoint")
    a_last_write = max(e["t1"] for e in a_ok)
    b_nodes = [survivors[1], survivors[0]]
    b = Pipe(tool, c.addrs(*b_nodes), "machine B")
    a_copy = b.ok("SELECT properties_json FROM protocol_runs WHERE accession_id = 'run-a'")[0]["properties_json"]
    row = b.ok("SELECT * FROM run_recovery_runs WHERE run_id = 'run-a'")[0]
    check(a_acked <= row["checkpoint_step"] <= a_acked + 1,
          f"the cluster holds A's last checkpoint: step {row['checkpoint_step']} (A saw {a_acked} acknowledged)")
    early = b.call(f"INSERT INTO run_recovery_actions (run_id, action, threshold_ms) VALUES ('run-a', 'resume', {THRESHOLD_MS})")
    check(not early["ok"] and early["error"].startswith("run_recovery_actions: resume: ")
          and "alive" in early["error"], "a resume before the threshold is refused: " + str(early.get("error"))[:70])
    orphan_sql = f"SELECT run_id, age_ms FROM run_recovery_runs WHERE live AND age_ms > {THRESHOLD_MS} AND run_id = 'run-a'"
    found = wait_for("B to see run-a as an orphan", lambda: b.ok(orphan_sql), timeout=THRESHOLD_MS / 1000 + 10, interval=0.025)
    t_found = now_ms()
    figures["death_to_orphan_ms"] = t_found - t_dead
    figures["last_write_before_death_ms"] = t_dead - a_last_write
    check(t_found - a_last_write >= THRESHOLD_MS - 50,
          f"not reported early: found {t_found - a_last_write} ms after A's last write (threshold {THRESHOLD_MS})")
    resumed = b.ok(f"INSERT INTO run_recovery_actions (run_id, action, threshold_ms) VALUES ('run-a', 'resume', {THRESHOLD_MS}); "
                   "SELECT status, live, lease, resumes, checkpoint_step, checkpoint_state FROM run_recovery_runs WHERE run_id = 'run-a'")[0]
    check(resumed["lease"] == 2 and resumed["resumes"] == 1 and resumed["status"] == "RUNNING",
          f"B resumed run-a: lease 2, resumes 1, status still RUNNING, from step {resumed['checkpoint_step']} "
          f"(state {resumed['checkpoint_state']})")
    step = resumed["checkpoint_step"]
    for k in (1, 2):
        b.ok(f"INSERT INTO run_recovery_actions (run_id, action, lease, step, state) "
             f"VALUES ('run-a', 'checkpoint', 2, {step + k}, '{{\"step\":{step + k},\"by\":\"B\"}}')")

    # -- 4. A's late writes are refused ------------------------------------------------------
    print("4. A comes back late with its old lease 1")
    before = b.ok("SELECT properties_json, status FROM protocol_runs WHERE accession_id = 'run-a'")[0]
    err = tool.refused(c.addrs(), "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES ('run-a', 'heartbeat', 1)")
    check(err.startswith("run_recovery_actions: heartbeat: stale lease"), "A's late heartbeat is refused: " + err[:70])
    err = tool.refused(c.addrs(), "INSERT INTO run_recovery_actions (run_id, action, lease, step, state) "
                                  f"VALUES ('run-a', 'checkpoint', 1, {step + 5}, '{{}}')")
    check(err.startswith("run_recovery_actions: checkpoint: stale lease"), "A's late checkpoint is refused: " + err[:70])
    late = json.loads(a_copy)
    late["operatorNote"] = "late write from A"
    err = tool.refused(c.addrs(), f"UPDATE protocol_runs SET properties_json = {q(json.dumps(late))} WHERE accession_id = 'run-a'")
    check(err.startswith("run_recovery_lease_guard: stale write refused"),
          "A's late plain metadata write (its copy, lease 1) is refused by the lease guard: " + err[:46])
    after = b.ok("SELECT properties_json, status FROM protocol_runs WHERE accession_id = 'run-a'")[0]
    check(after == before, "the refused writes changed nothing")

    b.ok(f"INSERT INTO run_recovery_actions (run_id, action, lease, step, state) "
         f"VALUES ('run-a', 'checkpoint', 2, {step + 3}, '{{\"step\":{step + 3},\"by\":\"B\",\"done\":true}}')")
    b.ok("UPDATE protocol_runs SET status = 'COMPLETED', end_time = CURRENT_TIMESTAMP WHERE accession_id = 'run-a'")
    final = b.ok("SELECT * FROM run_recovery_runs WHERE run_id = 'run-a'")[0]
    check(final["status"] == "COMPLETED" and final["live"] == 0 and final["checkpoint_step"] == step + 3
          and final["lease"] == 2 and final["resumes"] == 1, f"B finished run-a: COMPLETED at step {step + 3}, lease 2")
    err = tool.refused(c.addrs(), "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES ('run-a', 'heartbeat', 1)")
    check(err.startswith("run_recovery_actions: heartbeat: run is not live"), "A's heartbeat after completion is refused: " + err[:62])
    orphans = b.ok("SELECT run_id FROM run_recovery_orphans")
    check(orphans == [], "no orphan left")

    # -- 5. the killed node comes back -------------------------------------------------------
    print(f"5. restart node {li}: it catches up and serves the same rows")
    c.start_node(li)
    want_sql = "SELECT accession_id, status, properties_json, end_time FROM protocol_runs ORDER BY accession_id"
    want = [(r["accession_id"], r["status"], r["properties_json"], r["end_time"]) for r in b.ok(want_sql)]

    def caught_up():
        rows, integrity = c.dump_rows(li, want_sql)
        return (rows, integrity) if rows == want else None

    t_restart = time.monotonic()
    rows, integrity = wait_for(f"node {li} to hold the same rows as the leader", caught_up, timeout=30, interval=0.2)
    print(f"  caught up in {time.monotonic() - t_restart:.1f}s")
    check(integrity == [("ok",)], f"node {li}'s own copy (dumped from it): same {len(rows)} rows, integrity_check ok")
    tool.run(c.addrs(*survivors), "transfer", c.nodes[li]["db"])
    wait_for(f"node {li} to lead", lambda: c.leader() == c.nodes[li]["db"], timeout=15)
    through = [(r["accession_id"], r["status"], r["properties_json"], r["end_time"])
               for r in tool.rows(c.addrs(li), want_sql)]
    check(through == want, f"read through node {li} (now the leader again): the same rows")
    check(tool.rows(c.addrs(li), "PRAGMA integrity_check") == [{"integrity_check": "ok"}],
          "PRAGMA integrity_check through the cluster: ok")
    b.p.stdin.close()

    # -- the race ----------------------------------------------------------------------------
    rounds = 20
    print(f"race: two clients on different nodes resume the same orphan, {rounds} rounds")
    racers = [Pipe(tool, c.addrs(0), "racer on node 0"), Pipe(tool, c.addrs(2), "racer on node 2")]
    ids = [f"race-{k:02d}" for k in range(rounds)]
    racers[0].ok("; ".join(f"INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id) "
                           f"VALUES ('{i}', 'race', 'Running', 'def-1')" for i in ids))
    wait_for("the race runs to be orphans", lambda: len(racers[1].ok(
        f"SELECT run_id FROM run_recovery_runs WHERE run_id LIKE 'race-%' AND live AND age_ms > {RACE_THRESHOLD_MS}")) == rounds,
        timeout=10)
    wins = [0, 0]
    busy = 0
    for i in ids:
        sql = f"INSERT INTO run_recovery_actions (run_id, action, threshold_ms) VALUES ('{i}', 'resume', {RACE_THRESHOLD_MS})"
        for r in racers:
            r.send(sql)
        res = [r.recv() for r in racers]
        busy += sum(r.get("busy_retries", 0) for r in res)
        oks = [k for k, r in enumerate(res) if r["ok"]]
        if len(oks) != 1:
            raise Failure(f"{i}: {len(oks)} winners: {res}")
        loser = res[1 - oks[0]]["error"]
        if not loser.startswith("run_recovery_actions: resume: "):
            raise Failure(f"{i}: the loser's error is not a resume refusal: {loser}")
        wins[oks[0]] += 1
    rows = racers[0].ok("SELECT lease, resumes, count(*) AS n FROM run_recovery_runs WHERE run_id LIKE 'race-%' GROUP BY 1, 2")
    check(rows == [{"lease": 2, "resumes": 1, "n": rounds}],
          f"exactly one winner each round (node 0 won {wins[0]}, node 2 won {wins[1]}); every run: lease 2, resumes 1")
    print(f"  the leader answered SQLITE_BUSY {busy} times during the race (retried by the client, nothing applied)")
    for r in racers:
        r.p.stdin.close()

    # -- figures (all three nodes up) -------------------------------------------------------
    tool.run(c.addrs(), "exec", "INSERT INTO protocol_runs (accession_id, status, top_level_protocol_definition_accession_id) "
                                "VALUES ('bench-1', 'RUNNING', 'def-1')")
    bench = json.loads(tool.run(c.addrs(), "bench", "bench-1", str(bench_n), timeout=300).stdout)

    # -- a minority cannot write ------------------------------------------------------------
    leader = c.leader()
    li = c.index_of(leader)
    alone = next(i for i in range(3) if i != li)
    others = [i for i in range(3) if i != alone]
    print(f"minority: SIGKILL nodes {others} (the leader among them); node {alone} is left alone")
    count_sql = "SELECT count(*) FROM protocol_runs"
    (n_before,), = c.dump_rows(alone, count_sql)[0]
    for i in others:
        c.kill(i)
    r = tool.run(c.addrs(alone), "-timeout", "3s", "exec",
                 "INSERT INTO protocol_runs (accession_id, status, top_level_protocol_definition_accession_id) "
                 "VALUES ('minority-write', 'RUNNING', 'def-1')", check_ok=False)
    check(r.returncode != 0, "a write through the node left alone is refused: " + r.stderr.strip().split(": ")[-1])
    rows, integrity = c.dump_rows(alone, count_sql)
    check(rows == [(n_before,)] and integrity == [("ok",)], f"node {alone} still holds its {n_before} runs, integrity ok")
    for i in others:
        c.start_node(i)
    wait_for("a leader again", lambda: c.leader(), timeout=30, interval=0.2)
    rows = tool.rows(c.addrs(), "SELECT count(*) AS n, sum(accession_id = 'minority-write') AS m FROM protocol_runs")
    check(rows == [{"n": n_before, "m": 0}], f"majority back: all {n_before} runs there, the refused write absent")
    tool.run(c.addrs(), "exec", "INSERT INTO run_recovery_actions (run_id, action) VALUES ('bench-1', 'heartbeat')")
    check(True, "writes accepted again")
    c.stop()
    local = local_latency(tmp, bench_n)
    figures["cluster"] = (bench["p50_ms"], bench["p99_ms"])
    figures["local"] = local
    figures["sqlite"] = sqlite_version
    return figures


FAKETIME_LIB = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), "libfaketime.so.1 (not found)")


def skew(tool, tmp, skew_ms=3000, threshold_ms=1000):
    """The clock argument of docs/distributed.md, measured: one node's clock runs
    skew_ms ahead (libfaketime on that dqlite-demo: SQLite's julianday('now') reads
    it; Raft's timers use the monotonic clock and are unaffected)."""
    print(f"clock skew: node 2's clock is {skew_ms} ms ahead (libfaketime), threshold {threshold_ms} ms")
    fake = {2: {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": f"+{skew_ms / 1000:g}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "FAKETIME_NO_CACHE": "1"}}
    c = Cluster(tool, tmp, name="skewed", env=fake)
    c.start()
    tool.run(c.addrs(), "install", os.path.join(ROOT, "sql", "protocol_runs.sql"))
    tool.run(c.addrs(), "install", os.path.join(ROOT, "sql", "install.sql"))
    fast, good = c.nodes[2]["db"], c.nodes[0]["db"]
    clock_sql = "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms"

    def lead(addr):
        if c.leader() != addr:
            tool.run(c.addrs(), "transfer", addr)
        wait_for(f"{addr} to lead", lambda: c.leader() == addr, timeout=15)

    def offset():
        t0 = now_ms()
        db_now = tool.rows(c.addrs(), clock_sql)[0]["now_ms"]
        return db_now - (t0 + now_ms()) // 2

    lead(good)
    off_good = offset()
    ins = ("INSERT INTO protocol_runs (accession_id, name, status, top_level_protocol_definition_accession_id) "
           "VALUES ('{0}', 'skew', 'RUNNING', 'def-1')")
    # 1. A leader whose clock is ahead: a live run looks old.
    tool.run(c.addrs(), "exec", ins.format("skew-live"))
    e = spawn([tool.path, "-c", ",".join(c.addrs()), "executor", "-interval", "200ms", "-checkpoint-every", "5", "skew-live"],
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    e_out = Lines(e.stdout)
    wait_for("the executor's first writes", lambda: len(events(e_out, ok=True)) >= 2)
    lead(fast)
    off_fast = offset()
    print(f"  SQL clock on the leader vs this machine: node 0 {off_good:+d} ms, node 2 {off_fast:+d} ms")
    check(abs(off_fast - skew_ms) < 500 and abs(off_good) < 500, "node 2's SQL clock is skewed, node 0's is not")
    b = Pipe(tool, c.addrs(1), "machine B")
    row = wait_for("the live run to look stale", lambda: b.ok(
        f"SELECT age_ms FROM run_recovery_runs WHERE run_id = 'skew-live' AND live AND age_ms > {threshold_ms}"), timeout=10)[0]
    alive = e.poll() is None and events(e_out, ok=False) == []
    check(alive, f"under the fast leader a live run (heartbeat every 200 ms) reads age_ms {row['age_ms']}: "
                 f"a false orphan at threshold {threshold_ms}")
    b.ok(f"INSERT INTO run_recovery_actions (run_id, action, threshold_ms) VALUES ('skew-live', 'resume', {threshold_ms})")
    e.wait(10)
    refused = events(e_out, ok=False)
    check(e.returncode != 0 and refused and "stale lease" in refused[-1]["error"],
          "it can be resumed, and the live executor is then fenced off on its next write (stale lease), not overwritten")
    # 2. A heartbeat stamped by the fast leader, then leadership moves back.
    tool.run(c.addrs(), "exec", ins.format("skew-future"))
    lead(good)
    hb0 = b.ok("SELECT last_heartbeat, age_ms FROM run_recovery_runs WHERE run_id = 'skew-future'")[0]
    t_hb = now_ms()  # the executor's last heartbeat, through the good leader; then it dies
    b.ok("INSERT INTO run_recovery_actions (run_id, action) VALUES ('skew-future', 'heartbeat')")
    hb1 = b.ok("SELECT last_heartbeat, age_ms FROM run_recovery_runs WHERE run_id = 'skew-future'")[0]
    check(hb0["age_ms"] < 0 and hb1["last_heartbeat"] == hb0["last_heartbeat"],
          f"back on the good clock, the stamp is in the future (age_ms {hb0['age_ms']}) and a heartbeat "
          "does not move it back (lastHeartbeat never moves backwards)")
    wait_for("skew-future to become an orphan", lambda: b.ok(
        f"SELECT 1 FROM run_recovery_runs WHERE run_id = 'skew-future' AND live AND age_ms > {threshold_ms}"),
        timeout=(skew_ms + threshold_ms) / 1000 + 10, interval=0.025)
    found = now_ms()
    late = found - t_hb
    check(found >= hb0["last_heartbeat"] + threshold_ms - 100 and late > threshold_ms + 200,
          f"its orphan shows {late} ms after its last heartbeat, not {threshold_ms}: "
          "detection waits for the future stamp + the threshold")
    b.p.stdin.close()
    c.stop()
    return {"fast_leader_age_ms": row["age_ms"], "future_stamp_delay_ms": late, "skew_ms": skew_ms,
            "threshold_ms": threshold_ms}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", default=os.path.join(ROOT, "target", "dqlite", "bin", "run-recovery-dqlite"))
    ap.add_argument("--bench", type=int, default=200, help="heartbeats measured for the latency figures")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (node logs)")
    args = ap.parse_args()
    if not shutil.which("dqlite-demo") or not os.path.exists(FAKETIME_LIB):
        print("test-dqlite: needs dqlite-demo (go-dqlite) and libfaketime (faketime): run .ci/install.d/dqlite.sh",
              file=sys.stderr)
        return 1
    tool = Tool(os.path.abspath(args.tool))
    tmp = tempfile.mkdtemp(prefix="run-recovery-dqlite-")
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    ok = False
    try:
        f = scenario(tool, tmp, args.bench)
        f["skew"] = skew(tool, tmp)
        ok = True
    except Failure as e:
        print(f"\nFAIL: {e}", file=sys.stderr)
    finally:
        cleanup()
        alive = [p.pid for p in PROCS if p.poll() is None]
        if not ok:
            for name in sorted(os.listdir(tmp)):
                if name.endswith(".log"):
                    with open(os.path.join(tmp, name)) as fh:
                        tail = fh.read()[-1500:]
                    print(f"--- {name} (tail)\n{tail}", file=sys.stderr)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if alive:
        print(f"FAIL: processes still running after cleanup: {alive}", file=sys.stderr)
        return 1
    if not ok:
        return 1
    print(f"\nfigures (SQLite {f['sqlite']} on the nodes; {args.bench} heartbeats each; not asserted):")
    print(f"  heartbeat through the 3-node cluster: p50 {f['cluster'][0]:.2f} ms, p99 {f['cluster'][1]:.2f} ms")
    for mode, (p50, p99) in f["local"].items():
        print(f"  heartbeat on a local file ({mode} journal, Python sqlite3): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    print(f"  leader SIGKILL -> first accepted write: {f['kill_to_first_write_ms']} ms")
    print(f"  executor SIGKILL -> orphan found on another node: {f['death_to_orphan_ms']} ms "
          f"(threshold {THRESHOLD_MS} ms; A's last write was {f['last_write_before_death_ms']} ms before its death; "
          "B polls every 25 ms)")
    k = f["skew"]
    print(f"  node clock {k['skew_ms']} ms ahead, threshold {k['threshold_ms']} ms: a live run read age_ms "
          f"{k['fast_leader_age_ms']} under that leader; a heartbeat it stamped made the orphan show "
          f"{k['future_stamp_delay_ms']} ms after the last heartbeat instead of {k['threshold_ms']} ms")
    print(f"test-dqlite: all passed in {time.monotonic() - t0:.1f}s, every process stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
