# Benchmarks (see BENCHMARKS.md). Ratios against a baseline run side by side
# in the same process, medians of BENCH_ROUNDS interleaved rounds; nothing is
# asserted on speed. The history databases (10k/100k/1M runs) are built once
# and cached as target/bench-runs-v*-*.db; the tables are also appended to
# target/bench-results.md.
#   make bench                 heartbeat, orphan detection, load/install, then bench-adoption (a few minutes)
#   make bench-adoption        the adoption cost (issue 10's targets) and the pure-SQL actions
#                              against the functions, on SQLite 3.40 and 3.53
#   make bench-lookaside       the lookaside the app's cached statements hold, on 3.40 and 3.53
#   make bench-guard           the lease guard's variants: heartbeats against the app's writes
#   make bench-concurrency     8 processes x 8 runs x 20 Hz x 30 s (BENCH_CONC_SECS)
.PHONY: bench bench-concurrency
CARGO_HOME ?= $(HOME)/.cargo
BUNDLED_SQLITE := target/sqlite-bundled/libsqlite3.so.0

bench: $(LOADABLE) $(BUNDLED_SQLITE)
	rm -f target/bench-results.md
	$(CARGO) bench --bench bench -- all
	$(MAKE) --no-print-directory bench-adoption

# What adopting run_recovery costs (issue 10's targets, met/missed), the same
# script on two hosts: Debian's python3 with its SQLite 3.40, and the same
# python3 with the SQLite that rusqlite bundles, built as a shared library.
.PHONY: bench-adoption
bench-adoption: $(LOADABLE) $(BUNDLED_SQLITE)
	$(PYTHON) benches/py/adoption.py $(LOADABLE)
	LD_LIBRARY_PATH=$(dir $(BUNDLED_SQLITE)) $(PYTHON) benches/py/adoption.py $(LOADABLE)

$(BUNDLED_SQLITE):
	@src="$$(ls -d $(CARGO_HOME)/registry/src/*/libsqlite3-sys-0.38*/sqlite3/sqlite3.c 2>/dev/null | head -1)"; \
	  test -n "$$src" || { echo "bench: rusqlite's bundled sqlite3.c not found under $(CARGO_HOME)/registry (run cargo build first)"; exit 1; }; \
	  mkdir -p $(dir $@); echo "building $@ from $$src"; \
	  gcc -O2 -fPIC -shared -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_COLUMN_METADATA -DSQLITE_ENABLE_LOAD_EXTENSION \
	    -DSQLITE_ENABLE_MATH_FUNCTIONS -o $@ "$$src" -lm -lpthread -ldl

bench-concurrency:
	$(CARGO) bench --bench bench -- concurrency

# The lease guard's trade-off between heartbeats and the app's own writes:
# the guard's WHEN rewritten into variants, timed side by side (BENCHMARKS.md).
.PHONY: bench-guard
bench-guard: $(LOADABLE) $(BUNDLED_SQLITE)
	$(PYTHON) benches/py/guard_variants.py $(LOADABLE)
	LD_LIBRARY_PATH=$(dir $(BUNDLED_SQLITE)) $(PYTHON) benches/py/guard_variants.py $(LOADABLE)
	BENCH_LOOKASIDE=0 LD_LIBRARY_PATH=$(dir $(BUNDLED_SQLITE)) $(PYTHON) benches/py/guard_variants.py $(LOADABLE)
	BENCH_LOOKASIDE=1000 LD_LIBRARY_PATH=$(dir $(BUNDLED_SQLITE)) $(PYTHON) benches/py/guard_variants.py $(LOADABLE)

# The lookaside memory the app's cached statements hold, and the writes'
# small allocations that then go to malloc (BENCHMARKS.md), on both hosts.
.PHONY: bench-lookaside
bench-lookaside: $(BUNDLED_SQLITE)
	$(PYTHON) benches/py/lookaside.py
	LD_LIBRARY_PATH=$(dir $(BUNDLED_SQLITE)) $(PYTHON) benches/py/lookaside.py

# Instructions per operation under callgrind (valgrind): the noise-free
# cross-check of the ratios above. A few minutes.
.PHONY: bench-callgrind
bench-callgrind:
	$(CARGO) bench --bench bench -- callgrind
