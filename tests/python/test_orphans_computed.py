"""orphaned_runs computes its rows in Rust (src/orphan_rows.rs) when it is
sure to read the metadata as SQL does; on the SQLite this Python has
(Debian's 3.40, whose JSON functions differ from 3.45+ in how they read
escaped keys and write values back), its rows must be the view's: the same
values of the same types in the same order. The Rust differential test
(tests/orphans_computed.rs) does the same on random metadata, on 3.53.
"""

from conftest import PROTOCOL

OLD = 1700000000000

METADATA = [
    '{"lastHeartbeat":%d,"checkpointStep":3,"checkpointState":{"plate":3,"wells":[1,2]}}' % OLD,
    '{"lastHeartbeat":%d,"checkpointState":"a \\"q\\" \\u00e9 \u00e9","lease":2,"resumes":1}' % (OLD + 1),
    '{"lastHeartbeat":%d,"checkpointState":1.50E+2}' % (OLD + 1),
    '{"lastHeartbeat":%d,"checkpointState":null,"lease":null}' % OLD,
    '{"lastHeartbeat":%d,"checkpointState":{"plate": 3}}' % OLD,
    '{"lastHeartbeat":-0,"checkpointStep":-5}',
    '{"lastHeartbeat":"%d"}' % OLD,
    '{"lastHeartbeat":%d.0}' % OLD,
    '{"lastHeartbeat":%d,"lastHeartbeat":1}' % OLD,
    '{"l\\u0061stHeartbeat":5,"lastHeartbeat":%d}' % OLD,
    '{"lastHeartbeat":%d,"dismissedHeartbeat":%d}' % (OLD, OLD),
    '{"lastHeartbeat":%d,"dismissedHeartbeat":1}' % OLD,
    '{"deck":{"lastHeartbeat":1}}',
    "{oops",
    "[1,2]",
    None,
    '{"lastHeartbeat":99999999999999999999}',
    '{"lastHeartbeat":4102444800000}',
]


def add_runs(conn, metas):
    conn.execute("SELECT run_recovery_install()")
    for i, meta in enumerate(metas):
        conn.execute(
            "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
            "top_level_protocol_definition_accession_id) VALUES (?, ?, 'running', '{}', ?)",
            ("r%02d" % i, "run %d" % i, PROTOCOL),
        )
    # The exact texts: without the guard (which would repair them), then installed again.
    conn.execute("DROP TRIGGER run_recovery_lease_guard")
    for i, meta in enumerate(metas):
        conn.execute("UPDATE protocol_runs SET properties_json = ? WHERE accession_id = ?", (meta, "r%02d" % i))
    conn.execute("SELECT run_recovery_install()")


def typed(rows):
    """Each value with its SQLite type; age_ms (column 4) left out: the two
    queries read the clock a moment apart."""
    return [[(type(v).__name__, v) for i, v in enumerate(r) if i != 4] for r in rows]


def test_sure_metadata_gives_the_views_rows(conn):
    # Only metadata the Rust reader is sure of: the rows are computed in Rust.
    add_runs(conn, METADATA[:5] + METADATA[10:12])
    got = conn.execute("SELECT * FROM orphaned_runs").fetchall()
    want = conn.execute("SELECT * FROM run_recovery_orphans ORDER BY age_ms DESC, run_id").fetchall()
    assert typed(got) == typed(want)
    assert len(got) == 6  # the one dismissed at its heartbeat is hidden
    shown = conn.execute("SELECT run_id, dismissed FROM orphaned_runs WHERE include_dismissed = 1").fetchall()
    assert len(shown) == 7 and [d for _, d in shown].count(1) == 1


def test_every_kind_of_metadata_gives_the_views_rows(conn):
    # Some of these only SQL can read: the whole query then runs the view's SQL.
    add_runs(conn, METADATA)
    got = conn.execute("SELECT * FROM orphaned_runs").fetchall()
    want = conn.execute("SELECT * FROM run_recovery_orphans ORDER BY age_ms DESC, run_id").fetchall()
    assert typed(got) == typed(want)
    assert len(got) >= 10


def test_each_metadata_alone_gives_the_views_row(conn):
    # One run at a time, so each one the Rust reader is sure of is computed
    # in Rust, and compared with the view on 3.40.
    conn.execute("SELECT run_recovery_install()")
    for i, meta in enumerate(METADATA):
        conn.execute("DELETE FROM protocol_runs")
        add_runs(conn, [meta])
        got = conn.execute("SELECT * FROM orphaned_runs").fetchall()
        want = conn.execute("SELECT * FROM run_recovery_orphans ORDER BY age_ms DESC, run_id").fetchall()
        assert typed(got) == typed(want), meta
        five = conn.execute("SELECT run_id, name, status, last_heartbeat, checkpoint_step FROM orphaned_runs").fetchall()
        assert five == [(r[0], r[1], r[2], r[3], r[5]) for r in want], meta
