// run-recovery-dqlite: a small client for run_recovery on a dqlite cluster.
//
// It talks to the cluster through go-dqlite's database/sql driver (which
// finds the Raft leader from a list of node addresses and follows it when
// leadership moves) and sends whole statements, so it can install the
// triggers that the stock `dqlite` shell cannot. See docs/distributed.md.
//
// Build (offline, Debian packages golang-go and
// golang-github-canonical-go-dqlite-dev): `make dqlite-tool`.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/canonical/go-dqlite/client"
	"github.com/canonical/go-dqlite/driver"
)

const usage = `usage: run-recovery-dqlite [-c ADDR,ADDR,...] [-d NAME] [-timeout DUR] COMMAND [ARGS]

The cluster is given by -c (or $RUN_RECOVERY_DQLITE_CLUSTER): the database
addresses of one or more dqlite nodes; the client finds the leader from them.
-d names the database inside the cluster (default "runs").

commands:
  install [FILE]        run the install SQL (sql/install.sql; FILE or stdin) in one
                        transaction, statement by statement, dropping the
                        SAVEPOINT/RELEASE/BEGIN/COMMIT lines dqlite does not take
  exec SQL...           run the statements (several allowed, whole triggers too) in one
                        transaction; prints the rows of any that return rows as JSON lines
  query SQL             print the rows as JSON lines (-json: one JSON array)
  pipe                  read one JSON string (a SQL text) per line on stdin, run it in
                        one transaction, answer one JSON line {"ok":..,"rows":..,"error":..,"ms":..}
  executor RUN_ID       start (or continue, -lease N) a run and heartbeat/checkpoint it
                        through INSERT INTO run_recovery_actions every -interval,
                        printing one JSON line per write, until killed or refused
  bench RUN_ID N        N heartbeats through the actions, back to back; prints latencies
  leader                print the leader's address
  cluster               print the nodes (id, address, role) as JSON lines
  transfer ADDR         hand leadership to the node at ADDR
  dump ADDR DIR         copy the database as the node at ADDR holds it (not the leader's)
                        into DIR/NAME and DIR/NAME-wal
`

var (
	clusterFlag = flag.String("c", os.Getenv("RUN_RECOVERY_DQLITE_CLUSTER"), "node addresses, comma-separated")
	dbFlag      = flag.String("d", "runs", "database name")
	timeoutFlag = flag.Duration("timeout", 10*time.Second, "per-operation timeout (finding a leader included)")
	jsonFlag    = flag.Bool("json", false, "query: print one JSON array")
)

func main() {
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage); flag.PrintDefaults() }
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	switch args[0] {
	case "install":
		err = cmdInstall(args[1:])
	case "exec":
		err = cmdExec(args[1:])
	case "query":
		err = cmdQuery(args[1:])
	case "pipe":
		err = cmdPipe()
	case "executor":
		err = cmdExecutor(args[1:])
	case "bench":
		err = cmdBench(args[1:])
	case "leader":
		err = cmdLeader()
	case "cluster":
		err = cmdCluster()
	case "transfer":
		err = cmdTransfer(args[1:])
	case "dump":
		err = cmdDump(args[1:])
	default:
		fmt.Fprintf(os.Stderr, "run-recovery-dqlite: unknown command %q\n", args[0])
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "run-recovery-dqlite: %s: %v\n", args[0], err)
		os.Exit(1)
	}
}

func addresses() ([]string, error) {
	var out []string
	for _, a := range strings.Split(*clusterFlag, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cluster: give -c ADDR[,ADDR...] or set RUN_RECOVERY_DQLITE_CLUSTER")
	}
	return out, nil
}

func store() (client.NodeStore, error) {
	addrs, err := addresses()
	if err != nil {
		return nil, err
	}
	infos := make([]client.NodeInfo, len(addrs))
	for i, a := range addrs {
		infos[i] = client.NodeInfo{Address: a}
	}
	s := client.NewInmemNodeStore()
	if err := s.Set(context.Background(), infos); err != nil {
		return nil, err
	}
	return s, nil
}

// openDB opens the named database through the leader. database/sql retries a
// statement on a fresh connection (a new leader) when the driver reports the
// connection bad (leader gone, leadership lost).
func openDB() (*sql.DB, error) {
	s, err := store()
	if err != nil {
		return nil, err
	}
	drv, err := driver.New(s, driver.WithConnectionBackoffFactor(20*time.Millisecond),
		driver.WithConnectionBackoffCap(200*time.Millisecond),
		driver.WithAttemptTimeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	connector, err := drv.OpenConnector(*dbFlag)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	return db, nil
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), *timeoutFlag)
}

func readSQL(args []string) (string, error) {
	var b []byte
	var err error
	if len(args) == 0 || args[0] == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(args[0])
	}
	return string(b), err
}

// installStatements splits the install SQL and drops the transaction
// control statements: install runs in one transaction of our own, and dqlite
// takes neither SAVEPOINT nor RELEASE.
func installStatements(text string) ([]string, []string, error) {
	all, rest := splitStatements(text)
	if rest != "" {
		return nil, nil, fmt.Errorf("incomplete statement at the end: %.60q", rest)
	}
	var keep, dropped []string
	for _, s := range all {
		switch firstKeyword(s) {
		case "SAVEPOINT", "RELEASE", "BEGIN", "COMMIT", "END", "ROLLBACK":
			dropped = append(dropped, s)
		default:
			keep = append(keep, s)
		}
	}
	return keep, dropped, nil
}

func cmdInstall(args []string) error {
	text, err := readSQL(args)
	if err != nil {
		return err
	}
	stmts, dropped, err := installStatements(text)
	if err != nil {
		return err
	}
	db, err := openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	c, cancel := ctx()
	defer cancel()
	if _, err := runTx(c, db, stmts); err != nil {
		return err
	}
	for _, d := range dropped {
		fmt.Fprintf(os.Stderr, "install: skipped %s\n", strings.TrimSpace(d))
	}
	fmt.Printf("install: %d statements applied in one transaction\n", len(stmts))
	return nil
}

type result struct {
	OK    bool                     `json:"ok"`
	Rows  []map[string]interface{} `json:"rows,omitempty"`
	Error string                   `json:"error,omitempty"`
	Ms    float64                  `json:"ms"`
	Busy  int                      `json:"busy_retries,omitempty"`
}

// busyRetries counts the transactions retried because the leader answered
// SQLITE_BUSY (reported by pipe).
var busyRetries int

// isBusy: dqlite does not wait for a lock held by another connection's write
// transaction on the leader; it answers SQLITE_BUSY ("database is locked")
// at once. Nothing of the refused transaction was applied.
func isBusy(err error) bool {
	var e driver.Error
	if errors.As(err, &e) {
		return e.Code&0xff == 5 || e.Code&0xff == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// runTx runs the statements in one transaction, retried from the start
// while the leader answers SQLITE_BUSY (what busy_timeout does for a local
// file), until the context's deadline.
func runTx(c context.Context, db *sql.DB, stmts []string) ([]map[string]interface{}, error) {
	delay := time.Millisecond
	for {
		rows, err := runTxOnce(c, db, stmts)
		if err == nil || !isBusy(err) || c.Err() != nil {
			return rows, err
		}
		busyRetries++
		select {
		case <-c.Done():
			return rows, err
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// execRetry: one statement, retried on SQLITE_BUSY like runTx.
func execRetry(c context.Context, db *sql.DB, stmt string, args ...interface{}) error {
	delay := time.Millisecond
	for {
		_, err := db.ExecContext(c, stmt, args...)
		if err == nil || !isBusy(err) || c.Err() != nil {
			return err
		}
		busyRetries++
		select {
		case <-c.Done():
			return err
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// runTxOnce runs the statements in one transaction (one statement: no
// explicit transaction), collecting the rows of those that return rows.
func runTxOnce(c context.Context, db *sql.DB, stmts []string) ([]map[string]interface{}, error) {
	var rows []map[string]interface{}
	if len(stmts) == 1 {
		return runOne(c, db, stmts[0])
	}
	tx, err := db.BeginTx(c, nil)
	if err != nil {
		return nil, err
	}
	for _, s := range stmts {
		r, err := runOne(c, tx, s)
		if err != nil {
			tx.Rollback()
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, tx.Commit()
}

type querier interface {
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
}

func returnsRows(stmt string) bool {
	switch firstKeyword(stmt) {
	case "SELECT", "WITH", "PRAGMA", "VALUES", "EXPLAIN":
		return true
	}
	return false
}

func runOne(c context.Context, q querier, stmt string, args ...interface{}) ([]map[string]interface{}, error) {
	if !returnsRows(stmt) {
		_, err := q.ExecContext(c, stmt, args...)
		return nil, err
	}
	rs, err := q.QueryContext(c, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	return scanAll(rs)
}

func scanAll(rs *sql.Rows) ([]map[string]interface{}, error) {
	cols, err := rs.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]interface{}
	for rs.Next() {
		vals := make([]interface{}, len(cols))
		ptrs := make([]interface{}, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make(map[string]interface{}, len(cols))
		for i, col := range cols {
			switch v := vals[i].(type) {
			case []byte:
				row[col] = string(v)
			case time.Time:
				row[col] = v.UTC().Format("2006-01-02 15:04:05")
			default:
				row[col] = v
			}
		}
		out = append(out, row)
	}
	return out, rs.Err()
}

func splitArgs(args []string) ([]string, error) {
	var stmts []string
	for _, a := range args {
		s, rest := splitStatements(a)
		if rest != "" {
			s = append(s, rest) // the last statement may omit its ';'
		}
		stmts = append(stmts, s...)
	}
	if len(stmts) == 0 {
		return nil, errors.New("no SQL given")
	}
	return stmts, nil
}

func printRows(rows []map[string]interface{}) {
	enc := json.NewEncoder(os.Stdout)
	for _, r := range rows {
		enc.Encode(r)
	}
}

func cmdExec(args []string) error {
	stmts, err := splitArgs(args)
	if err != nil {
		return err
	}
	db, err := openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	c, cancel := ctx()
	defer cancel()
	rows, err := runTx(c, db, stmts)
	if err != nil {
		return err
	}
	printRows(rows)
	return nil
}

func cmdQuery(args []string) error {
	if len(args) != 1 {
		return errors.New("query takes one SQL text")
	}
	db, err := openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	c, cancel := ctx()
	defer cancel()
	rs, err := db.QueryContext(c, args[0])
	if err != nil {
		return err
	}
	defer rs.Close()
	rows, err := scanAll(rs)
	if err != nil {
		return err
	}
	if *jsonFlag {
		if rows == nil {
			rows = []map[string]interface{}{}
		}
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	printRows(rows)
	return nil
}

// cmdPipe: a long-lived client for tests and scripts. One request per line
// (a JSON string: the SQL text), one JSON answer per line, in order.
func cmdPipe() error {
	db, err := openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		var text string
		var res result
		if err := json.Unmarshal([]byte(line), &text); err != nil {
			res.Error = "pipe: each line must be a JSON string: " + err.Error()
		} else if stmts, err := splitArgs([]string{text}); err != nil {
			res.Error = err.Error()
		} else {
			c, cancel := ctx()
			t0 := time.Now()
			before := busyRetries
			rows, err := runTx(c, db, stmts)
			res.Ms = msSince(t0)
			res.Busy = busyRetries - before
			cancel()
			if err != nil {
				res.Error = err.Error()
			} else {
				res.OK = true
				res.Rows = rows
			}
		}
		if err := out.Encode(res); err != nil {
			return err
		}
	}
	return in.Err()
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}

func nowMs() int64 { return time.Now().UnixMilli() }

const (
	startRunSQL = `INSERT INTO protocol_runs (accession_id, name, status, properties_json, start_time, top_level_protocol_definition_accession_id)
VALUES (?, ?, 'RUNNING', '{"app":"instrument-pc","operator":"a"}', CURRENT_TIMESTAMP, 'def-1')`
	benchSQL      = `INSERT INTO run_recovery_actions (run_id, action) VALUES (?, 'heartbeat')`
	heartbeatSQL  = `INSERT INTO run_recovery_actions (run_id, action, lease) VALUES (?, 'heartbeat', ?)`
	checkpointSQL = `INSERT INTO run_recovery_actions (run_id, action, lease, step, state) VALUES (?, 'checkpoint', ?, ?, ?)`
)

// cmdExecutor is machine A: it owns a run and keeps it alive through the
// cluster, one JSON line per write attempt, so a test can kill it at any
// moment and know what was acknowledged.
func cmdExecutor(args []string) error {
	fs := flag.NewFlagSet("executor", flag.ContinueOnError)
	start := fs.Bool("start", false, "insert the run first (status RUNNING)")
	name := fs.String("name", "protocol run", "run name (with -start)")
	lease := fs.Int64("lease", 1, "the lease this executor holds")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between writes")
	every := fs.Int("checkpoint-every", 3, "every Nth write is a checkpoint (the others are heartbeats)")
	step := fs.Int64("step", 0, "the step already done (the next checkpoint is step+1)")
	steps := fs.Int64("steps", 1<<30, "stop after checkpointing this step")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("executor takes RUN_ID")
	}
	runID := fs.Arg(0)
	db, err := openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	out := json.NewEncoder(os.Stdout)
	emit := func(ev map[string]interface{}) {
		ev["run_id"] = runID
		out.Encode(ev)
	}
	if *start {
		c, cancel := ctx()
		t0 := nowMs()
		err := execRetry(c, db, startRunSQL, runID, *name)
		cancel()
		if err != nil {
			return fmt.Errorf("starting run %s: %w", runID, err)
		}
		emit(map[string]interface{}{"event": "start", "ok": true, "t0": t0, "t1": nowMs()})
	}
	for seq := 1; ; seq++ {
		ev := map[string]interface{}{"seq": seq, "lease": *lease}
		c, cancel := ctx()
		t0 := time.Now()
		var err error
		if seq%*every == 0 {
			next := *step + 1
			state := fmt.Sprintf(`{"step":%d,"by":"executor","pid":%d}`, next, os.Getpid())
			ev["event"], ev["step"] = "checkpoint", next
			err = execRetry(c, db, checkpointSQL, runID, *lease, next, state)
			if err == nil {
				*step = next
			}
		} else {
			ev["event"] = "heartbeat"
			err = execRetry(c, db, heartbeatSQL, runID, *lease)
		}
		cancel()
		ev["t0"], ev["t1"], ev["ms"] = t0.UnixMilli(), nowMs(), msSince(t0)
		ev["ok"] = err == nil
		if err != nil {
			ev["error"] = err.Error()
		}
		emit(ev)
		if err != nil && strings.HasPrefix(err.Error(), "run_recovery_actions:") {
			// Refused by the database (lost the lease, run no longer live):
			// this executor must stop.
			return fmt.Errorf("refused: %v", err)
		}
		if *step >= *steps {
			emit(map[string]interface{}{"event": "done", "step": *step})
			return nil
		}
		time.Sleep(*interval)
	}
}

func cmdBench(args []string) error {
	if len(args) != 2 {
		return errors.New("bench takes RUN_ID N")
	}
	var n int
	if _, err := fmt.Sscan(args[1], &n); err != nil || n < 1 {
		return fmt.Errorf("bad N %q", args[1])
	}
	db, err := openDB()
	if err != nil {
		return err
	}
	defer db.Close()
	lat := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		c, cancel := ctx()
		t0 := time.Now()
		err := execRetry(c, db, benchSQL, args[0])
		cancel()
		if err != nil {
			return err
		}
		lat = append(lat, msSince(t0))
	}
	sort.Float64s(lat)
	return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"n": n, "p50_ms": quantile(lat, 0.50), "p99_ms": quantile(lat, 0.99), "max_ms": lat[n-1]})
}

func quantile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

func leaderClient(c context.Context) (*client.Client, error) {
	s, err := store()
	if err != nil {
		return nil, err
	}
	return client.FindLeader(c, s)
}

func cmdLeader() error {
	c, cancel := ctx()
	defer cancel()
	cli, err := leaderClient(c)
	if err != nil {
		return err
	}
	defer cli.Close()
	info, err := cli.Leader(c)
	if err != nil {
		return err
	}
	fmt.Println(info.Address)
	return nil
}

func cmdCluster() error {
	c, cancel := ctx()
	defer cancel()
	cli, err := leaderClient(c)
	if err != nil {
		return err
	}
	defer cli.Close()
	nodes, err := cli.Cluster(c)
	if err != nil {
		return err
	}
	leader, err := cli.Leader(c)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for _, n := range nodes {
		enc.Encode(map[string]interface{}{"id": n.ID, "address": n.Address, "role": n.Role.String(),
			"leader": n.Address == leader.Address})
	}
	return nil
}

func cmdTransfer(args []string) error {
	if len(args) != 1 {
		return errors.New("transfer takes ADDR")
	}
	c, cancel := ctx()
	defer cancel()
	cli, err := leaderClient(c)
	if err != nil {
		return err
	}
	defer cli.Close()
	nodes, err := cli.Cluster(c)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Address == args[0] {
			return cli.Transfer(c, n.ID)
		}
	}
	return fmt.Errorf("no node with address %s in the cluster", args[0])
}

// cmdDump reads the database from one given node, without going to the
// leader: what that node holds locally (after it caught up, the same pages).
func cmdDump(args []string) error {
	if len(args) != 2 {
		return errors.New("dump takes ADDR DIR")
	}
	c, cancel := ctx()
	defer cancel()
	cli, err := client.New(c, args[0])
	if err != nil {
		return err
	}
	defer cli.Close()
	files, err := cli.Dump(c, *dbFlag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(args[1], 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(args[1]+"/"+f.Name, f.Data, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s/%s %d bytes\n", args[1], f.Name, len(f.Data))
	}
	return nil
}
