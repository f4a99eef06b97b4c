# Client tests: the extension from Python, from Node (better-sqlite3), and the
# pure-SQL layer inside SQLite WASM with no extension at all. See
# docs/compatibility.md for what each one backs. Packages they need are
# installed by .ci/install.d/clients.sh (which the targets below also call
# on demand for node_modules).

CLIENTS_DIR := target/clients
CLIENTS_VENV := $(CLIENTS_DIR)/venv
# Node headers for node-gyp, offline: the nodejs package's own /usr/include/node.
NODE_GYP_ENV := npm_config_nodedir=/usr npm_config_build_from_source=true npm_config_python=$(PYTHON)

.PHONY: test-python test-python-plain test-node test-wasm python-package node-package

TEST_TARGETS += test-python test-python-plain test-node test-wasm

# A Python that cannot load extensions at all (the python3 first on PATH on
# this machine kind: pyenv's CPython): the pure-SQL actions, standard library only.
PLAIN_PYTHON ?= python3
test-python-plain:
	REQUIRE_NO_LOAD=1 $(call within,300) $(PLAIN_PYTHON) tests/python_plain/test_actions.py

# bindings/python installed (not edited in place) into a venv of Debian's
# Python, offline, with Debian's setuptools; its tests run with that venv.
python-package: loadable
	rm -rf $(CLIENTS_VENV)
	$(PYTHON) -m venv --system-site-packages $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --no-index --no-build-isolation \
	  --disable-pip-version-check --quiet ./bindings/python

test-python: python-package
	cd tests/python && $(call within,600) ../../$(CLIENTS_VENV)/bin/python -m pytest -p no:cacheprovider -rs -v .

node-package: loadable
	node bindings/node/build.js

tests/node/node_modules/.package-lock.json: tests/node/package.json tests/node/package-lock.json
	cd tests/node && $(NODE_GYP_ENV) npm ci --no-audit --no-fund --foreground-scripts

tests/wasm/node_modules/.package-lock.json: tests/wasm/package.json tests/wasm/package-lock.json
	cd tests/wasm && npm ci --no-audit --no-fund

test-node: node-package tests/node/node_modules/.package-lock.json
	cd tests/node && $(call within,600) $(call NODE_TEST,300)

test-wasm: loadable tests/wasm/node_modules/.package-lock.json
	cd tests/wasm && RUN_RECOVERY_LOADABLE=$(CURDIR)/$(LOADABLE) SQLITE3=$(SQLITE3) $(call within,600) $(call NODE_TEST,300)
