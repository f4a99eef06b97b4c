"""Runs SQL with expected results written beside it, through the real sqlite3 shell.

A test file is plain SQL. A statement's expected output is the comment after
its final `;` (sqlite-jiff's tests/api.sql style); each row is one line, columns
joined by `|`, NULL shown as `NULL`, an error as `error: <message>`:

    select 1+1;                     -- 2
    select run_heartbeat('nope');   -- error: run_heartbeat: no run with accession_id 'nope'
    select name from runs;          -- a
                                    -- b

An indented `--` line right after an expectation is its next row; `-- (no rows)`
expects empty output; `{any}` in an expected line matches any text (for the few
values only the wall clock decides, such as "last heartbeat 3 ms ago"). A statement without a comment is setup: its output is
ignored, but it must not fail. Comments that start a line are prose. A line
that starts with `.` is a shell dot-command (setup). A file whose first line is
`-- sqltest: without-extension` runs without loading the library.

All statements of one file run, in order, in ONE sqlite3 process (so
transactions and temp tables span statements), with the extension loaded by
`.load <path without suffix>` and no entry point. Each statement's stdout is
told apart by a `.print` marker; errors go to stderr as "Runtime error near
line N: …", and N (the statement's first line in the generated script) says
which statement failed.

Used by tests/sql/run.sh and scripts/docs-check.py. Needs only the Python
standard library (sqlite3.complete_statement splits statements; nothing is
executed by Python's SQLite).
"""

import difflib
import os
import re
import sqlite3
import subprocess
from dataclasses import dataclass, field

MARK = "@@sqltest-case-"
ERROR_LINE = re.compile(r"^(?:Runtime|Parse) error near line (\d+): (.*)$")
# After a parse error the shell quotes the statement and points at the error;
# that context is not part of the message.
CONTEXT_END = re.compile(r"^\s*(\^--- error here|error here ---\^)$")
CONTINUATION = re.compile(r"^\s+--(?: (.*)|)$")
NO_ROWS = "(no rows)"
ANY = "{any}"


@dataclass
class Case:
    source: str  # "file:line" of the statement's first line
    sql: str
    expected: list | None  # None: setup statement (must not fail)
    actual: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def split_trailing_comment(prefix: str, line: str):
    """(code, comment) of the last line of a complete statement; comment is None if absent."""
    for i, ch in enumerate(line):
        if ch != ";":
            continue
        rest = line[i + 1 :].strip()
        if rest and not rest.startswith("--"):
            continue
        if sqlite3.complete_statement(prefix + line[: i + 1]):
            return line[: i + 1], (rest[2:].strip() if rest else None)
    return line, None


def parse(text: str, source: str, first_line: int = 1) -> list:
    """The cases of a test text. `first_line` is the line number of text's first line."""
    cases, buf, start, last = [], [], 0, None
    for n, line in enumerate(text.splitlines(), first_line):
        if not buf:
            m = CONTINUATION.match(line)
            if last is not None and last.expected is not None and m:
                last.expected.append((m.group(1) or "").rstrip())
                continue
            last = None
            stripped = line.strip()
            if not stripped or stripped.startswith("--"):
                continue
            start = n
            if line.startswith("."):  # a shell dot-command, e.g. .read sql/install.sql
                last = Case(f"{source}:{n}", line, None)
                cases.append(last)
                continue
        buf.append(line)
        joined = "\n".join(buf)
        if sqlite3.complete_statement(joined):
            prefix = "\n".join(buf[:-1]) + ("\n" if len(buf) > 1 else "")
            code, comment = split_trailing_comment(prefix, buf[-1])
            expected = None
            if comment is not None:
                expected = [] if comment == NO_ROWS else [comment.rstrip()]
            last = Case(f"{source}:{start}", prefix + code, expected)
            cases.append(last)
            buf = []
    if buf:
        raise SyntaxError(f"{source}:{start}: statement without a final ';'")
    return cases


def load_argument(library: str) -> str:
    """`./dist/run_recovery` for `dist/run_recovery.so`: no suffix, no entry point."""
    stem = re.sub(r"\.(so|dylib|dll)$", "", library)
    if not os.path.isabs(stem) and not stem.startswith("."):
        stem = "./" + stem
    return stem


def run(cases: list, sqlite3_bin: str, library: str | None, database: str = ":memory:") -> str | None:
    """Runs `cases` in one sqlite3 process, filling in actual/errors.
    Returns a problem that is no single statement's fault (crash, stray stderr), or None."""
    script = [".bail off", ".headers off", ".mode list", ".nullvalue NULL"]
    if library:
        script.append(f".load {load_argument(library)}")
    starts = []  # (script line of the case's first line, case index)
    for i, case in enumerate(cases):
        script.append(f".print {MARK}{i}")
        starts.append((len(script) + 1, i))
        script.extend(case.sql.splitlines())
    proc = subprocess.run(
        [sqlite3_bin, database],
        input="\n".join(script) + "\n",
        capture_output=True,
        text=True,
    )
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            current = cases[int(line[len(MARK) :])]
        elif current is not None:
            current.actual.append(line.rstrip())
        else:
            return f"output before the first statement: {line!r} (did .load fail?)"
    stray, last, head = [], None, None
    for line in proc.stderr.splitlines():
        m = ERROR_LINE.match(line)
        if m:
            lineno = int(m.group(1))
            owners = [i for start, i in starts if start <= lineno]
            if not owners:
                stray.append(line)
                continue
            last = cases[owners[-1]]
            head = m.group(2).rstrip()
            last.errors.append(head)
        elif last is not None and CONTEXT_END.match(line):
            last.errors[-1] = head  # drop the quoted statement
        elif last is not None:  # a message that goes on over several lines
            last.errors[-1] += "\n" + line
        else:
            stray.append(line)
    if stray:
        return "sqlite3 printed errors no statement owns:\n  " + "\n  ".join(stray)
    if proc.returncode not in (0, 1):
        return f"sqlite3 exited with status {proc.returncode} (crash?)"
    if cases and current is not cases[-1]:
        return f"sqlite3 stopped early: last statement reached was {current.source if current else 'none'}"
    return None


def matches(expected: list, got: list) -> bool:
    """Line by line equality, where `{any}` in an expected line matches any text."""
    if len(expected) != len(got):
        return False
    for want, line in zip(expected, got):
        pattern = ".*?".join(re.escape(part) for part in want.split(ANY))
        if not re.fullmatch(pattern, line, re.S):
            return False
    return True


def failures(cases: list) -> list:
    """A readable report for every case whose result differs from its expectation."""
    out = []
    for case in cases:
        got = case.actual + [f"error: {e}" for e in case.errors]
        if case.expected is None:
            if not case.errors:
                continue
            want = ["(setup statement: must not fail)"]
        elif matches(case.expected, got):
            continue
        else:
            want = case.expected or [NO_ROWS]
        got = got or [NO_ROWS]
        sql = "\n".join("    " + l for l in case.sql.strip().splitlines())
        diff = "\n".join(
            "    " + d
            for d in difflib.unified_diff(want, got, "expected", "actual", lineterm="", n=2)
        )
        out.append(f"FAIL {case.source}\n{sql}\n{diff}")
    return out


def registered(sqlite3_bin, library):
    """Names of the functions and modules that `.load` adds."""
    query = (
        "select distinct name from pragma_function_list "
        "union select name from pragma_module_list order by 1;"
    )

    def names(load):
        script = (f".load {load_argument(library)}\n" if load else "") + query
        out = subprocess.run([sqlite3_bin, ":memory:"], input=script, capture_output=True, text=True)
        if out.returncode != 0 or out.stderr:
            raise RuntimeError(f"sqlite3 failed listing functions: {out.stderr.strip()}")
        return set(out.stdout.split())

    return sorted(names(True) - names(False))
