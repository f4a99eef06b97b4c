# Executed docs: every SQL example in docs/api.md runs against the built
# library through the sqlite3 shell; every registered function needs a section.
# README.md's walk-through runs too, as written.
# (test-sql, the SQL-level suite, is in the main Makefile: tests/sql/run.sh.)
docs-check: loadable
	$(call within,600) $(PYTHON) scripts/docs-check.py $(SQLITE3) $(LOADABLE) docs/api.md README.md

TEST_TARGETS += docs-check
