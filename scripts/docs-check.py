#!/usr/bin/env python3
"""Executed docs: runs every SQL example of docs/api.md against the built library.

    scripts/docs-check.py [SQLITE3] [LIBRARY] [DOC [WALKTHROUGH...]]   (make docs-check)

DOC is the reference (docs/api.md): its examples run and every registered
function needs a section. Each WALKTHROUGH (README.md) only has its examples
run, as written, in a session of its own.

Fails when
* an example's output drifted from the result written beside it (the format
  of tests/sql: `select 1+1;  -- 2`, errors as `-- error: <message>`, more
  rows on indented `--` lines; see tests/sql/sqltest.py), or
* a function or table-valued function that the extension registers has no
  section: the set is what `pragma_function_list` / `pragma_module_list` show
  after `.load` and not before, and each name must appear in a heading.

Every ```sql block runs, in the order of the page, in ONE sqlite3 session on a
fresh database FILE (so examples may build on earlier ones, and features that
need a file database work). A block whose info string says `no-run`
(```` ```sql no-run ````) is shown but not executed; its function still needs
its section. Blocks fenced as ```` ```sql without-extension ```` run in a
second session of their own, in order, on another fresh database file with
NO library loaded (what a client that cannot load the extension sees).
`--self-test` runs the checker on the fixtures in
scripts/docs-check-fixtures/, each of which must be rejected.
"""

import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "sql"))
import sqltest  # noqa: E402

FENCE = re.compile(r"^```(\S*)\s*(.*)$")
FIXTURES = os.path.join(ROOT, "scripts", "docs-check-fixtures")


def sql_blocks(text):
    """(first line number, sql text, without extension?) of each executable ```sql block."""
    blocks, inside, start, body, run, plain = [], False, 0, [], False, False
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if not inside and m:
            inside, start, body = True, n + 1, []
            run = m.group(1) == "sql" and "no-run" not in m.group(2).split()
            plain = "without-extension" in m.group(2).split()
        elif inside and line.startswith("```"):
            inside = False
            if run:
                blocks.append((start, "\n".join(body), plain))
        elif inside:
            body.append(line)
    return blocks


def check(doc, sqlite3_bin, library, sections=True):
    """The list of problems in `doc` (empty when it is right), and the number of checked examples."""
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    problems, cases, plain_cases = [], [], []
    for start, body, plain in sql_blocks(text):
        try:
            parsed = sqltest.parse(body, os.path.relpath(doc, ROOT), start)
        except SyntaxError as e:
            problems.append(f"FAIL {e}")
            continue
        (plain_cases if plain else cases).extend(parsed)
    with tempfile.TemporaryDirectory() as tmp:
        for group, lib, name in [(cases, library, "docs.db"), (plain_cases, None, "plain.db")]:
            if not group:
                continue
            problem = sqltest.run(group, sqlite3_bin, lib, os.path.join(tmp, name))
            if problem:
                problems.append(f"FAIL {doc}: {problem}")
    cases += plain_cases
    problems += sqltest.failures(cases)
    headings = [l for l in text.splitlines() if re.match(r"^#{1,6}\s", l)]
    for name in sqltest.registered(sqlite3_bin, library) if sections else []:
        if not any(re.search(rf"\b{re.escape(name)}\b", h) for h in headings):
            problems.append(f"FAIL {doc}: no section for {name} (a heading that names it)")
    return problems, sum(c.expected is not None for c in cases)


def self_test(sqlite3_bin, library):
    """Each fixture says, on its first line, a text its rejection must contain."""
    broken, n = [], 0
    for name in sorted(os.listdir(FIXTURES)):
        path = os.path.join(FIXTURES, name)
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        m = re.match(r"<!-- docs-check self-test: must fail with: (.*) -->$", first.strip())
        if not m:
            broken.append(f"{path}: first line must be <!-- docs-check self-test: must fail with: TEXT -->")
            continue
        n += 1
        problems, _ = check(path, sqlite3_bin, library)
        if not any(m.group(1) in p for p in problems):
            broken.append(f"{path}: not rejected with {m.group(1)!r}; problems: {problems}")
    return n, broken


def main(argv):
    sqlite3_bin = argv[0] if argv else "sqlite3"
    library = argv[1] if len(argv) > 1 else "dist/run_recovery.so"
    doc = argv[2] if len(argv) > 2 else "docs/api.md"
    problems, checked = check(doc, sqlite3_bin, library)
    for walkthrough in argv[3:]:
        more, n = check(walkthrough, sqlite3_bin, library, sections=False)
        if not n:
            more.append(f"FAIL {walkthrough}: no checked example")
        problems += more
        checked += n
    for p in problems:
        print(p)
    n, broken = self_test(sqlite3_bin, library)
    for b in broken:
        print(f"FAIL docs-check self-test {b}")
    functions = sqltest.registered(sqlite3_bin, library)
    print(f"docs-check: {checked} examples checked, {len(functions)} registered functions, "
          f"{len(problems)} problems; self-test: {n - len(broken)}/{n} bad docs rejected")
    return 1 if problems or broken or not n else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
