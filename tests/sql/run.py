"""Driver of tests/sql/run.sh; the format is described in sqltest.py."""

import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sqltest  # noqa: E402

SELFTEST_HEADER = "-- selftest: must fail with: "


def run_file(path, sqlite3_bin, library):
    """(number of checked statements, list of failure reports) for one file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cases = sqltest.parse(text, path)
    if text.startswith("-- sqltest: without-extension"):
        library = None
    problem = sqltest.run(cases, sqlite3_bin, library)
    reports = sqltest.failures(cases)
    if problem:
        reports.append(f"FAIL {path}: {problem}")
    return sum(c.expected is not None for c in cases), reports


def main(sqlite3_bin, library):
    if not os.path.exists(library):
        sys.exit(f"tests/sql: no library at {library} (run make loadable)")
    checked, failed = 0, 0
    for path in sorted(glob.glob("tests/sql/*.sql")):
        n, reports = run_file(path, sqlite3_bin, library)
        checked += n
        failed += len(reports)
        print(f"{'ok  ' if not reports else 'FAIL'} {path} ({n} checked)")
        for r in reports:
            print(r)
    # Every function and module the extension registers has a test.
    texts = "".join(open(p, encoding="utf-8").read() for p in glob.glob("tests/sql/*.sql"))
    for name in sqltest.registered(sqlite3_bin, library):
        if not re.search(rf"\b{re.escape(name)}\s*\(", texts):
            failed += 1
            print(f"FAIL tests/sql: no test calls {name}()")
    # The runner must be able to fail: each fixture has a deliberate mistake.
    selftests, broken = 0, []
    for path in sorted(glob.glob("tests/sql/selftest/*.sql")):
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n")
        if not header.startswith(SELFTEST_HEADER):
            broken.append(f"{path}: first line must be '{SELFTEST_HEADER}<text>'")
            continue
        want = header[len(SELFTEST_HEADER):]
        _, reports = run_file(path, sqlite3_bin, library)
        selftests += 1
        if not any(want in r for r in reports):
            broken.append(f"{path}: runner did not reject it with {want!r}; it reported: {reports}")
    for b in broken:
        print(f"FAIL selftest {b}")
    print(f"tests/sql: {checked} statements checked, {failed} failures; "
          f"runner self-test: {selftests - len(broken)}/{selftests} bad fixtures rejected")
    return 1 if failed or broken or not selftests else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
