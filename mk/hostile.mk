# The hostile campaign (tests/hostile/cases.json) on Debian's SQLite 3.40.1,
# with sql/install.sql and no extension, and with the loadable library. The
# same cases run on the bundled 3.53 in `cargo test` (tests/hostile.rs).
.PHONY: test-hostile
TEST_TARGETS += test-hostile

test-hostile: loadable
	RUN_RECOVERY_LOADABLE=$(CURDIR)/$(LOADABLE) $(call within,300) $(PYTHON) -m pytest -p no:cacheprovider -q tests/hostile
