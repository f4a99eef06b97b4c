# Migrations with the seed app's own stack: SQLAlchemy + Alembic from PyPI
# (tests/migration/requirements.txt) in a venv of Debian's Python, with the
# package of bindings/python installed into it, offline, as a user installs it.

MIGRATION_VENV := $(CLIENTS_DIR)/migration-venv

.PHONY: test-migration
TEST_TARGETS += test-migration

$(MIGRATION_VENV)/.installed: tests/migration/requirements.txt
	rm -rf $(MIGRATION_VENV)
	$(PYTHON) -m venv --system-site-packages $(MIGRATION_VENV)
	$(MIGRATION_VENV)/bin/python -m pip install --disable-pip-version-check --quiet \
	  -r tests/migration/requirements.txt
	touch $@

test-migration: loadable $(MIGRATION_VENV)/.installed
	$(MIGRATION_VENV)/bin/python -m pip install --no-index --no-build-isolation --no-deps \
	  --force-reinstall --disable-pip-version-check --quiet ./bindings/python
	cd tests/migration && $(call within,300) ../../$(MIGRATION_VENV)/bin/python -m pytest \
	  -p no:cacheprovider -rs -v .
