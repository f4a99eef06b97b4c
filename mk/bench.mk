# Benchmarks (see BENCHMARKS.md). Ratios against a baseline run side by side
# in the same process, medians of BENCH_ROUNDS interleaved rounds; nothing is
# asserted on speed. The history databases (10k/100k/1M runs) are built once
# and cached as target/bench-runs-v*-*.db; the tables are also appended to
# target/bench-results.md.
#   make bench                 heartbeat, the pure-SQL actions (bundled 3.53 and Debian's 3.40
#                              through /usr/bin/python3), orphan detection, load/install (a few minutes)
#   make bench-concurrency     8 processes x 8 runs x 20 Hz x 30 s (BENCH_CONC_SECS)
.PHONY: bench bench-concurrency

bench: $(LOADABLE)
	rm -f target/bench-results.md
	$(CARGO) bench --bench bench -- all
	$(PYTHON) benches/py/actions_bench.py $(LOADABLE)

bench-concurrency:
	$(CARGO) bench --bench bench -- concurrency

# Instructions per operation under callgrind (valgrind): the noise-free
# cross-check of the ratios above. A few minutes.
.PHONY: bench-callgrind
bench-callgrind:
	$(CARGO) bench --bench bench -- callgrind
