# The browser: bindings/web (ES module for @sqlite.org/sqlite-wasm, pure-SQL
# layer only), <run-recovery-dialog>, and the example page examples/web on OPFS.
#   make web-demo        serves examples/web on http://127.0.0.1:$(WEB_DEMO_PORT)/examples/web/
#   make test-web        bindings/web under Node, in-memory SQLite WASM (seconds)
#   make test-browser    the example in Debian's chromium via playwright-core (about a minute)
#   make bench-web       heartbeat, checkpoint, orphan scan on 10,000 runs in chromium on OPFS
# Chromium and the npm packages come from .ci/install.d/browser.sh (apt + npm ci).
.PHONY: web-package web-demo test-web test-browser bench-web

WEB_DEMO_PORT ?= 8417
CHROMIUM ?= /usr/bin/chromium

# install-sql.js is generated from sql/install.sql: one command, run before every test.
web-package:
	node bindings/web/build.mjs

tests/browser/node_modules/.package-lock.json: tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

examples/web/node_modules/.package-lock.json: examples/web/package.json examples/web/package-lock.json
	cd examples/web && npm ci --no-audit --no-fund --loglevel=error

web-demo: web-package examples/web/node_modules/.package-lock.json
	WEB_DEMO_PORT=$(WEB_DEMO_PORT) node examples/web/server.mjs

test-web: web-package tests/browser/node_modules/.package-lock.json
	cd tests/browser && $(call within,300) $(call NODE_TEST,120) unit.test.mjs

test-browser: web-package tests/browser/node_modules/.package-lock.json examples/web/node_modules/.package-lock.json
	@test -x $(CHROMIUM) || { echo "test-browser: $(CHROMIUM) missing: run .ci/install.d/browser.sh (apt-get install chromium)"; exit 1; }
	cd tests/browser && CHROMIUM=$(CHROMIUM) $(call within,900) $(call NODE_TEST,300) --test-concurrency=1 browser.test.mjs

bench-web: web-package tests/browser/node_modules/.package-lock.json examples/web/node_modules/.package-lock.json
	cd tests/browser && CHROMIUM=$(CHROMIUM) node bench.mjs

TEST_TARGETS += test-web test-browser
