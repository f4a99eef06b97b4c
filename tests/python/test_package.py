"""The Python package itself: load(), loadable_path(), versions, and the error on a
Python whose sqlite3 module cannot load extensions."""

import importlib.metadata
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
import run_recovery

from conftest import ROOT, cargo_version


def test_loadable_path_is_the_library_shipped_in_the_installed_package():
    path = run_recovery.loadable_path()
    assert os.path.isfile(path)
    assert os.path.dirname(path) == os.path.dirname(run_recovery.__file__)
    # The installed package, not the source tree.
    assert not path.startswith(str(ROOT / "bindings")), path
    with open(path, "rb") as f:
        assert f.read(4) == b"\x7fELF"


def test_load_registers_the_functions_and_switches_loading_off_again(tmp_path):
    conn = sqlite3.connect(":memory:")
    names = lambda: {r[0] for r in conn.execute("SELECT name FROM pragma_function_list")}
    modules = lambda: {r[0] for r in conn.execute("SELECT name FROM pragma_module_list")}
    before_f, before_m = names(), modules()
    run_recovery.load(conn)
    # At least the documented functions (the core may add more, e.g. run_heartbeat_every).
    assert names() - before_f >= {
        "recover_run",
        "run_checkpoint",
        "run_heartbeat",
        "run_recovery_config",
        "run_recovery_debug",
        "run_recovery_install",
        "run_recovery_uninstall",
        "run_recovery_version",
    }
    assert all(n.startswith(("run_", "recover_run")) for n in names() - before_f)
    assert modules() - before_m == {"orphaned_runs"}
    # load() turned extension loading off again: SQL cannot load libraries afterwards.
    with pytest.raises(sqlite3.OperationalError, match="not authorized"):
        conn.execute("SELECT load_extension(?)", (run_recovery.loadable_path(),))


def test_versions_are_one_number_from_cargo_toml():
    version = cargo_version()
    conn = sqlite3.connect(":memory:")
    run_recovery.load(conn)
    (sql_version,) = conn.execute("SELECT run_recovery_version()").fetchone()
    debug = json.loads(conn.execute("SELECT run_recovery_debug()").fetchone()[0])
    print(f"python {sys.version.split()[0]} sqlite3 module on SQLite {sqlite3.sqlite_version}; "
          f"run_recovery {sql_version}, debug {debug}")
    assert sql_version == "v" + version
    assert run_recovery.__version__ == version
    assert importlib.metadata.version("run-recovery") == version
    assert debug["version"] == "v" + version
    assert debug["sqlite"] == sqlite3.sqlite_version  # the host's SQLite, not a bundled one
    assert debug["build"] == "loadable"


class NoLoadExtension:
    """A connection as a Python built without --enable-loadable-sqlite-extensions has."""

    def execute(self, *a):  # pragma: no cover - never reached
        raise AssertionError("load must not touch the connection")


def test_clear_error_without_enable_load_extension():
    with pytest.raises(run_recovery.ExtensionLoadingUnavailable) as e:
        run_recovery.load(NoLoadExtension())
    msg = str(e.value)
    assert "built without loadable extension support" in msg
    assert "NoLoadExtension has no enable_load_extension" in msg
    assert "--enable-loadable-sqlite-extensions" in msg
    assert "/usr/bin/python3" in msg
    assert isinstance(e.value, RuntimeError)


def test_missing_library_says_how_to_reinstall(monkeypatch):
    monkeypatch.setattr(run_recovery, "_SUFFIX", "missing")
    with pytest.raises(FileNotFoundError, match=r"run_recovery\.missing is missing from the package"):
        run_recovery.loadable_path()
    with pytest.raises(FileNotFoundError):
        run_recovery.load(sqlite3.connect(":memory:"))


def _python_without_load_extension():
    """Another python3 on PATH (e.g. pyenv's) whose sqlite3 cannot load extensions, or None."""
    exe = shutil.which("python3")
    if not exe or os.path.realpath(exe) in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        return None
    probe = subprocess.run(
        [exe, "-c", "import sqlite3; print(hasattr(sqlite3.Connection, 'enable_load_extension'))"],
        capture_output=True,
        text=True,
    )
    return exe if probe.returncode == 0 and probe.stdout.strip() == "False" else None


def test_real_python_without_extension_support_gets_the_clear_error():
    exe = _python_without_load_extension()
    if exe is None:
        # Loud, with the reason (make runs pytest -rs); a failure in CI
        # (.ci/run sets CI), which needs such a python for
        # make test-python-plain anyway.
        if os.environ.get("CI"):
            pytest.fail("CI: no python3 without enable_load_extension on PATH")
        pytest.skip("no python3 without enable_load_extension on PATH (the fake-connection test covers it)")
    pkg_parent = os.path.dirname(os.path.dirname(run_recovery.__file__))
    env = dict(os.environ, PYTHONPATH=pkg_parent)
    res = subprocess.run(
        [exe, "-c", "import sqlite3, run_recovery; run_recovery.load(sqlite3.connect(':memory:'))"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode != 0
    assert "run_recovery.ExtensionLoadingUnavailable" in res.stderr
    assert "sqlite3.Connection has no enable_load_extension" in res.stderr
    assert "/usr/bin/python3" in res.stderr
