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

# No test may hang a run of `make test`: each test command runs under a
# wall-clock limit (several times what it takes here, builds included), and
# when it runs out the command is killed and the target fails, named by make.
# `make test WITHIN=` runs without limits.
WITHIN ?= timeout --kill-after=15
within = $(if $(WITHIN),$(WITHIN) $(1))
# Node's test runner: a file whose tests are done exits even if something it
# started still holds its event loop, and a test that hangs fails by name.
NODE_TEST = node --test --test-force-exit --test-timeout=$(1)000

.PHONY: all loadable cli test test-rust test-sql format lint dist clean sql print-lib-inputs

all: loadable cli

# The library's inputs: its sources, and every file an include_str! in them
# reads (the path taken relative to the including file, as rustc does).
LIB_RS := $(shell find src -name '*.rs' -not -path 'src/bin/*')
LIB_INCLUDED := $(shell grep -HoE 'include_str!\("[^"]+"\)' $(LIB_RS) | \
  sed -E 's|^(.*)/[^/]*:include_str!\("([^"]+)"\)$$|\1/\2|' | xargs -r realpath -m --relative-to=.)

$(LOADABLE): $(LIB_RS) $(LIB_INCLUDED) Cargo.toml build.rs
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
	$(call within,2400) $(CARGO) test --release

test-sql: loadable
	$(call within,600) ./tests/sql/run.sh $(SQLITE3) $(LOADABLE)

format:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(call within,1800) $(CARGO) clippy --all-targets -- -D warnings
	$(call within,1800) $(CARGO) clippy --lib --no-default-features --features loadable --target-dir $(LOADABLE_TARGET) -- -D warnings

clean:
	rm -rf target dist

# What the loadable library is rebuilt from (a check that include_str! files are in it).
print-lib-inputs:
	@echo $(LIB_RS) $(LIB_INCLUDED) Cargo.toml build.rs

# Extra targets live in mk/*.mk; each adds its tests to TEST_TARGETS.
TEST_TARGETS := lint test-rust test-sql
-include mk/*.mk

test: $(TEST_TARGETS)
	@echo "make test: all passed ($(TEST_TARGETS))"
