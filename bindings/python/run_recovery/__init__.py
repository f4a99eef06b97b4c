"""run_recovery for Python: session recovery for lab protocol runs, as a SQLite extension.

    import sqlite3, run_recovery
    conn = sqlite3.connect("runs.db")
    run_recovery.load(conn)
    conn.execute("SELECT run_recovery_install()")

`load(conn)` loads the extension bundled in this package into a
`sqlite3.Connection`; `loadable_path()` is the library's path, for any other
client (`.load` in the sqlite3 shell, apsw, …). `run_recovery.migration`
has `table_rebuild`, for migrations (Alembic's `batch_alter_table`) that
rebuild the runs table.

Python's sqlite3 module can load extensions only when Python was built with
`--enable-loadable-sqlite-extensions` (Debian's /usr/bin/python3 is; many
pyenv and python.org builds are not): then `load` raises
`ExtensionLoadingUnavailable` and says how to fix it.
"""

import os
import sys

from ._version import __version__

__all__ = ["load", "loadable_path", "ExtensionLoadingUnavailable", "__version__"]

_SUFFIX = {"darwin": "dylib", "win32": "dll"}.get(sys.platform, "so")


class ExtensionLoadingUnavailable(RuntimeError):
    """This Python's sqlite3 module cannot load SQLite extensions."""


def loadable_path():
    """The path of the run_recovery loadable library shipped in this package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_recovery." + _SUFFIX)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"run_recovery: the loadable library {path} is missing from the package; "
            "reinstall it (pip install ./bindings/python after `make loadable`)"
        )
    return path


def load(conn):
    """Loads run_recovery into `conn` (a sqlite3.Connection).

    Extension loading is switched on only for the load and off again after it,
    so SQL run later on `conn` cannot load other libraries.
    """
    if not callable(getattr(conn, "enable_load_extension", None)) or not callable(
        getattr(conn, "load_extension", None)
    ):
        raise ExtensionLoadingUnavailable(
            "run_recovery.load: this Python's sqlite3 module was built without loadable "
            f"extension support ({type(conn).__module__}.{type(conn).__qualname__} has no "
            f"enable_load_extension; Python {sys.version.split()[0]} at {sys.executable}). "
            "Use a Python built with --enable-loadable-sqlite-extensions, e.g. Debian's "
            "/usr/bin/python3 (apt-get install python3), or rebuild this one with "
            "PYTHON_CONFIGURE_OPTS=--enable-loadable-sqlite-extensions (pyenv)."
        )
    path = loadable_path()
    conn.enable_load_extension(True)
    try:
        conn.load_extension(path)
    finally:
        conn.enable_load_extension(False)
