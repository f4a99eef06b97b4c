# Reliability under races, crashes, zombies and hostile input (RELIABILITY.md).
#
# The scaled-down versions run in `make test` already: they are Rust
# integration tests (tests/reliability_*.rs, tests/prop_*.rs,
# tests/security_*.rs) that `make test-rust` runs with `cargo test --release`.
# `make test-stress` runs the full versions (2.5 minutes on 2 cores), so
# it is NOT in TEST_TARGETS. Replay a crash loop with RUN_RECOVERY_SEED=<seed>.

STRESS_CARGO_TEST := $(CARGO) test --release

.PHONY: test-stress stress-race stress-crash stress-prop stress-fuzz

test-stress: stress-race stress-crash stress-prop stress-fuzz
	@echo "make test-stress: all passed"

# 16 processes x 1,000 rounds of recover_run(id, 'resume') on one orphan.
stress-race:
	RUN_RECOVERY_RACE_PROCS=16 RUN_RECOVERY_RACE_ROUNDS=1000 \
	  $(STRESS_CARGO_TEST) --test reliability_race -- --ignored --exact race_resume_full --nocapture
	RUN_RECOVERY_RACE_PROCS=16 RUN_RECOVERY_RACE_ROUNDS=1000 \
	  $(STRESS_CARGO_TEST) --test reliability_race -- --ignored --exact race_resume_full_through_orphaned_runs --nocapture
	RUN_RECOVERY_RACE_PROCS=16 RUN_RECOVERY_RACE_ROUNDS=1000 \
	  $(STRESS_CARGO_TEST) --test reliability_race -- --ignored --exact race_resume_full_through_actions --nocapture

# 200 SIGKILLs of a worker during heartbeats, checkpoints and transactions.
stress-crash:
	RUN_RECOVERY_KILLS=200 \
	  $(STRESS_CARGO_TEST) --test reliability_crash -- --ignored --exact crash_loop_full --nocapture

# 5,000 random sequences of heartbeats, checkpoints, status changes, app writes and recoveries;
# 5,000 more through both the functions and run_recovery_actions (the differential test);
# 5,000 heartbeats set in place against the SQL heartbeat UPDATE on random metadata;
# 5,000 orphaned_runs queries computed in Rust against the view's SELECT.
stress-prop:
	PROPTEST_CASES=5000 $(STRESS_CARGO_TEST) --test prop_recovery -- --nocapture
	PROPTEST_CASES=5000 $(STRESS_CARGO_TEST) --test prop_actions -- --nocapture
	PROPTEST_CASES=5000 $(STRESS_CARGO_TEST) --test heartbeat_in_place -- --nocapture
	PROPTEST_CASES=5000 $(STRESS_CARGO_TEST) --test orphans_computed -- --nocapture

# 20,000 calls with arbitrary SQL values and arbitrary row contents.
stress-fuzz:
	PROPTEST_CASES=20000 $(STRESS_CARGO_TEST) --test security_fuzz -- --nocapture
