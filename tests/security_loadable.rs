//! The loadable build in a real host: Debian's /usr/bin/python3 (SQLite
//! 3.40) loads dist/run_recovery.so and calls every function with hostile
//! values (NULL, extremes, NaN/inf, NUL bytes, invalid UTF-8, a 1 MB string,
//! blobs) in every argument, plus 3,000 random combinations. The host process
//! must survive (exit 0), every error must name the function, and a failing
//! call must leave the run as it was.
//!
//! `make test-rust` builds the .so first; without it or without
//! /usr/bin/python3 (`.ci/run` installs it) the test fails, saying which.

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = r#"
import random, sqlite3, sys
db_path, ext, schema = sys.argv[1], sys.argv[2], sys.argv[3]
db = sqlite3.connect(db_path, isolation_level=None)
db.enable_load_extension(True)
db.load_extension(ext)
db.executescript(open(schema).read())
db.execute("SELECT run_recovery_install('{\"max_resumes\": 1000000}')")
db.execute("INSERT INTO protocol_runs (accession_id, name, properties_json, status, "
           "top_level_protocol_definition_accession_id) VALUES ('r1', 'r1', '{\"app\":1}', 'running', 'p')")
BAD = object()  # invalid UTF-8 text, bound as a blob and cast
values = [None, 0, -1, 1, 2, 2**63 - 1, -2**63, 1.5, float('nan'), float('inf'), float('-inf'), -0.0,
          '', 'r1', 'R1', 'resume', 'fail', 'dismiss', 'DISMISS', '{}', '[1]', '{"a":', 'null',
          'a\x00b', 'x' * 1_000_000, b'', b'\x00\xff\x01', BAD]
calls = [('run_heartbeat', 1), ('run_heartbeat', 2), ('run_checkpoint', 2), ('run_checkpoint', 3),
         ('run_checkpoint', 4), ('recover_run', 2), ('recover_run', 3), ('run_recovery_install', 1),
         ('run_recovery_config', 0), ('run_recovery_version', 0), ('run_recovery_debug', 0),
         ('orphaned_runs', 3)]
valid = {'run_heartbeat': ['r1', 1], 'run_checkpoint': ['r1', 1, '{}', 1], 'recover_run': ['r1', 'dismiss', 0],
         'run_recovery_install': ['{}'], 'orphaned_runs': [0, 0, 0]}

def snapshot():
    return db.execute("SELECT * FROM protocol_runs ORDER BY accession_id").fetchall()

stats = {'calls': 0, 'ok': 0, 'errors': 0}
def call(func, args):
    sql_args, params = [], []
    for v in args:
        if v is BAD:
            sql_args.append('CAST(? AS TEXT)'); params.append(b'\xff\xfe\xc3')
        else:
            sql_args.append('?'); params.append(v)
    if func == 'orphaned_runs':
        sql = 'SELECT * FROM orphaned_runs(%s)' % ', '.join(sql_args)
    else:
        sql = 'SELECT %s(%s)' % (func, ', '.join(sql_args))
    before = snapshot()
    stats['calls'] += 1
    try:
        db.execute(sql, params).fetchall()
        stats['ok'] += 1
    except sqlite3.Error as e:
        stats['errors'] += 1
        msg = str(e)
        if not msg.startswith(func + ': '):
            print('FAIL: %s%r -> %r' % (func, [type(a).__name__ for a in args], msg[:200])); sys.exit(1)
        if snapshot() != before:
            print('FAIL: a failing %s changed the run' % func); sys.exit(1)

for func, n in calls:
    for pos in range(n):
        for v in values:
            args = list(valid.get(func, []))[:n]
            args[pos] = v
            call(func, args)
rng = random.Random(1234)
for _ in range(3000):
    func, n = rng.choice(calls)
    call(func, [rng.choice(values) for _ in range(n)])
print('host survived: %(calls)d calls, %(ok)d ok, %(errors)d errors, all naming their function' % stats)
"#;

#[test]
fn python_host_survives_hostile_values() {
    let so = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/run_recovery.so");
    let python = Path::new("/usr/bin/python3");
    assert!(
        so.exists(),
        "needs {} (make loadable; make test-rust builds it)",
        so.display()
    );
    assert!(
        python.exists(),
        "needs {} (Debian's python3, which can load extensions; .ci/run installs it)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir.path().join("host.db"))
        .arg(&so)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/protocol_runs.sql"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the Python host did not survive: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("host survived"), "{stdout}");
}
