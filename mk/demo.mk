# The demo: `make demo` and `make test-demo` (the command line itself is `make cli`).
# (The Rust end-to-end tests in tests/e2e*.rs run under `make test-rust`.)
.PHONY: demo test-demo

CLI_BIN := target/release/run-recovery
DEMO_DB ?= target/demo/demo.db
# e.g. `make demo DEMO_ARGS="--answer f"`; with no terminal the demo answers r.
DEMO_ARGS ?=

# Crash to resume, end to end: builds the CLI, then a worker process runs a
# protocol, is killed with SIGKILL mid-run, the orphan is found, and a new
# worker resumes it from its checkpoint to completion (see docs/cli.md).
demo: cli
	@mkdir -p $(dir $(DEMO_DB))
	@rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm $(DEMO_DB)-journal
	$(CLI_BIN) demo $(DEMO_DB) $(DEMO_ARGS)

# `make demo` as CI sees it: no terminal, answers given by flag.
test-demo:
	$(call within,900) $(MAKE) --no-print-directory demo DEMO_DB=target/demo/test-demo.db DEMO_ARGS="--answer r --step-ms 150 --interval 50 --threshold 500" </dev/null

TEST_TARGETS += test-demo
