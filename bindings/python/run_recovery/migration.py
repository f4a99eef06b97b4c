"""Migrations that rebuild the runs table, with run_recovery installed.

SQLite changes most column definitions only by rebuilding the table (the
"12-step" procedure of its ALTER TABLE documentation, which Alembic's
``batch_alter_table`` and many ORMs follow): create a new table, copy the
rows, drop the old one, rename the new one. With run_recovery installed that
goes wrong in one of two ways:

* with ``PRAGMA legacy_alter_table=OFF`` (SQLite's default) the RENAME is
  refused ("error in trigger run_recovery_stamp_do: no such table:
  main.protocol_runs"), because run_recovery's views and their triggers name
  the table while it does not exist;
* with it ON the migration succeeds, but the triggers were dropped with the
  old table: every run_recovery function then refuses until
  ``SELECT run_recovery_install()`` runs again.

``table_rebuild`` takes run_recovery's triggers and views out before the
migration and installs them again after it, in the same transaction, with
the stored config and settings (run data, leases, checkpoints are never
touched)::

    from run_recovery.migration import table_rebuild

    def upgrade():                      # an Alembic migration
        with table_rebuild(op.get_bind()):
            with op.batch_alter_table("protocol_runs", recreate="always") as batch:
                batch.add_column(sa.Column("operator_note", sa.Text()))

``conn`` is a ``sqlite3.Connection``, a SQLAlchemy ``Connection`` (what
``op.get_bind()`` gives) or anything with ``exec_driver_sql`` or ``execute``
taking SQL text. The connection must have the extension loaded
(``run_recovery.load``, e.g. from a SQLAlchemy ``connect`` event).
"""

from contextlib import contextmanager

__all__ = ["table_rebuild", "MigrationError"]

# What install makes that names the runs table: its views (dropping a view
# drops its INSTEAD OF triggers) and its triggers. The settings table (the
# config, schema_version and the settings an app added) stays, so install
# afterwards finds them as they were.
_OBJECTS = (
    "SELECT type, name FROM main.sqlite_schema "
    "WHERE type IN ('view', 'trigger') AND name LIKE 'run\\_recovery\\_%' ESCAPE '\\' "
    "ORDER BY type = 'trigger' DESC, name"
)


class MigrationError(RuntimeError):
    """table_rebuild cannot run on this connection."""


def _runner(conn):
    """A function running one SQL text on `conn` and returning its rows."""
    run = getattr(conn, "exec_driver_sql", None)
    if run is None:
        run = getattr(conn, "execute", None)
    if run is None:
        raise MigrationError(
            f"run_recovery.migration.table_rebuild: {type(conn).__qualname__} is not a "
            "connection (it has neither exec_driver_sql nor execute)"
        )

    def query(sql, rows=True):
        result = run(sql)
        return list(result.fetchall()) if rows else None

    return query


def _quote(name):
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def table_rebuild(conn):
    """Lets the body rebuild the runs table with run_recovery installed.

    Before the body: checks the extension is loaded on `conn` and drops
    run_recovery's views and triggers. After it (only when it succeeded):
    ``SELECT run_recovery_install()``, which recreates them for the stored
    config (on the new table, also under a renamed column, when the config
    is changed in the body) and checks the install is whole. Nothing is
    done when run_recovery is not installed. Run it inside the migration's
    transaction: a failure anywhere then leaves the database as it was.
    """
    query = _runner(conn)
    installed = query(
        "SELECT count(*) FROM main.sqlite_schema "
        "WHERE type = 'table' AND name = 'run_recovery_settings'"
    )[0][0]
    if not installed:
        yield
        return
    loaded = query(
        "SELECT count(*) FROM pragma_function_list WHERE name = 'run_recovery_install'"
    )[0][0]
    if not loaded:
        raise MigrationError(
            "run_recovery.migration.table_rebuild: the run_recovery extension is not "
            "loaded on this connection, so the install cannot be put back after the "
            "migration; load it first (run_recovery.load(dbapi_connection), e.g. in a "
            "SQLAlchemy 'connect' event). Nothing was changed."
        )
    for kind, name in query(_OBJECTS):
        query(f"DROP {kind.upper()} IF EXISTS main.{_quote(name)}", rows=False)
    try:
        yield
    except BaseException:
        # The body failed: its transaction may be rolled back already, or
        # the drops above may have been committed on their own (a driver
        # that runs DDL outside a transaction). Put the install back either
        # way; the body's error is the one raised.
        try:
            query("SELECT run_recovery_install()")
        except Exception:  # noqa: BLE001 (the body's error matters more)
            pass
        raise
    query("SELECT run_recovery_install()")
