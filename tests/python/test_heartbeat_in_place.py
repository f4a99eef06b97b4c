"""run_heartbeat sets the heartbeat in place (run_recovery_heartbeat_text) on
the SQLite this Python has (Debian's 3.40, which compares JSON keys as
written where 3.45+ decodes escapes), and leaves exactly what the pure-SQL
heartbeat leaves: the same verdict and the same JSON, on metadata chosen to
tell the two apart (duplicate and escaped keys, leases of every type, the
heartbeat not last, spacing, malformed text). The Rust differential test
(tests/heartbeat_in_place.rs) does the same on random metadata, on 3.53.
"""

import sqlite3

import pytest

from conftest import PROTOCOL

OLD = 1700000000000

CASES = [
    # (metadata, lease given)
    ('{"op": "ana", "lease":2,"lastHeartbeat":%d}' % OLD, 2),
    ('{"op": "ana", "lease":2,"lastHeartbeat":%d}' % OLD, 1),
    ('{"op":[1, {"k": null}],"lastHeartbeat":%d}' % OLD, None),
    ('{"op":"Zoë \\"q\\" \\u00e9","lastHeartbeat":%d}' % OLD, 1),
    ('{"l\\u0065ase":3,"lastHeartbeat":%d}' % OLD, 1),
    ('{"l\\u0065ase":3,"lastHeartbeat":%d}' % OLD, 3),
    ('{"lease":"2","lastHeartbeat":%d}' % OLD, 2),
    ('{"lease":2.0,"lastHeartbeat":%d}' % OLD, 2),
    ('{"lease":1,"lease":2,"lastHeartbeat":%d}' % OLD, 1),
    ('{"lease":99999999999999999999,"lastHeartbeat":%d}' % OLD, 1),
    ('{"lastHeartbeat":1,"lastHeartbeat":%d}' % OLD, None),
    ('{"lastHeartbeat": %d}' % OLD, None),
    ('{"lastHeartbeat":%d,"op":1}' % OLD, None),
    ('{"lastHeartbeat":"%d"}' % OLD, None),
    ('{"op":1,,"lastHeartbeat":%d}' % OLD, None),
    ("{'op':1,\"lastHeartbeat\":%d}" % OLD, None),
    ('["lastHeartbeat",%d]' % OLD, None),
]


def add_run(conn, run_id, text):
    conn.execute(
        "INSERT INTO protocol_runs (accession_id, name, status, properties_json, "
        "top_level_protocol_definition_accession_id) VALUES (?, ?, 'running', '{}', ?)",
        (run_id, run_id, PROTOCOL),
    )
    # The exact text: without the guard (which would repair it), then
    # installed again.
    conn.execute("DROP TRIGGER run_recovery_lease_guard")
    conn.execute("UPDATE protocol_runs SET properties_json = ? WHERE accession_id = ?", (text, run_id))
    conn.execute("SELECT run_recovery_install()")


def raw(conn, run_id):
    return conn.execute("SELECT properties_json FROM protocol_runs WHERE accession_id = ?", (run_id,)).fetchone()[0]


@pytest.mark.parametrize("text,lease", CASES)
def test_the_heartbeat_leaves_what_the_sql_heartbeat_leaves(conn, text, lease):
    conn.execute("SELECT run_recovery_install()")
    add_run(conn, "fn", text)
    add_run(conn, "sql", text)
    try:
        args = ("fn",) if lease is None else ("fn", lease)
        got = conn.execute(f"SELECT run_heartbeat({', '.join('?' * len(args))})", args).fetchone()[0]
    except sqlite3.DatabaseError as e:
        got = e
    try:
        conn.execute(
            "INSERT INTO run_recovery_actions (run_id, action, lease) VALUES ('sql', 'heartbeat', ?)", (lease,)
        )
        sql_ok = True
    except sqlite3.DatabaseError:
        sql_ok = False
    if isinstance(got, Exception):
        assert not sql_ok, f"run_heartbeat refused ({got}) what the SQL heartbeat wrote"
        assert raw(conn, "fn") == text
        assert raw(conn, "sql") == text
        return
    assert sql_ok, "run_heartbeat wrote what the SQL heartbeat refused"
    fn_text, sql_text = raw(conn, "fn"), raw(conn, "sql")
    # Read as SQLite reads them (with duplicate keys, the first one).
    one = lambda sql, *a: conn.execute(sql, a).fetchone()[0]
    beat = lambda t: one("SELECT json_extract(?, '$.lastHeartbeat')", t)
    assert beat(fn_text) == got
    rest = lambda t: one("SELECT json(json_remove(?, '$.lastHeartbeat'))", t)
    assert rest(fn_text) == rest(sql_text)
    keys = lambda t: one("SELECT group_concat(key, ',') FROM json_each(?)", t)
    assert keys(fn_text) == keys(sql_text)  # the heartbeat last in both
    in_place = text[:-14] + str(got) + "}"
    through_sql = sql_text.replace(str(beat(sql_text)), str(got))
    assert fn_text in (in_place, through_sql)


def test_the_usual_shape_is_set_in_place_and_the_rest_through_sql(conn):
    conn.execute("SELECT run_recovery_install()")
    spaced = '{"op": "ana", "plate": [1, 2],"lastHeartbeat":%d}' % OLD
    add_run(conn, "r", spaced)
    now = conn.execute("SELECT run_heartbeat('r', 1)").fetchone()[0]
    assert raw(conn, "r") == spaced[:-14] + str(now) + "}"  # spacing kept: in place
    first = '{"lastHeartbeat": %d, "op": "ana"}' % OLD
    add_run(conn, "s", first)
    now = conn.execute("SELECT run_heartbeat('s', 1)").fetchone()[0]
    assert raw(conn, "s") == '{"op":"ana","lastHeartbeat":%d}' % now  # through SQL: compact, heartbeat last


def test_the_internal_function_says_why_it_declines(conn):
    with pytest.raises(sqlite3.OperationalError, match=r"run_recovery_heartbeat_text: cannot set the heartbeat in place in metadata '\{\"lease\":2"):
        conn.execute(
            "SELECT run_recovery_heartbeat_text('{\"lease\":2,\"lastHeartbeat\":%d}', %d, 1)" % (OLD, OLD + 1)
        ).fetchone()
