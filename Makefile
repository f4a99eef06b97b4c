# run_recovery — see README.md. `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
UNAME := $(shell uname -s)
ifeq ($(UNAME),Darwin)
  EXT := dylib
else
  EXT := so
endif
CARGO ?= cargo
# The loadable build and the statically linked build must not share a cargo
# invocation (features unify): the loadable one gets its own target dir.
LOADABLE_TARGET := target/loadable
LOADABLE := dist/run_recovery.$(EXT)
SQLITE3 ?= sqlite3
PYTHON ?= /usr/bin/python3

.PHONY: all loadable cli test test-rust test-sql docs-check bench demo format lint dist clean sql

all: loadable cli

$(LOADABLE): $(shell find src -name '*.rs') Cargo.toml build.rs
	$(CARGO) build --release --lib --no-default-features --features loadable --target-dir $(LOADABLE_TARGET)
	mkdir -p dist
	cp $(LOADABLE_TARGET)/release/librun_recovery.$(EXT) $(LOADABLE)

loadable: $(LOADABLE)

cli:
	$(CARGO) build --release --bin run-recovery

dist: loadable cli

# Rewrites sql/install.sql from the generator (a test keeps them equal).
sql:
	mkdir -p sql
	$(CARGO) run --quiet --release --bin run-recovery -- sql > sql/install.sql

test-rust: loadable
	$(CARGO) test --release

test-sql: loadable
	./tests/sql/run.sh $(SQLITE3) $(LOADABLE)

format:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --lib --no-default-features --features loadable --target-dir $(LOADABLE_TARGET) -- -D warnings

clean:
	rm -rf target dist

# Extra targets live in mk/*.mk; each adds its tests to TEST_TARGETS.
TEST_TARGETS := lint test-rust test-sql
-include mk/*.mk

test: $(TEST_TARGETS)
	@echo "make test: all passed ($(TEST_TARGETS))"
