# The Rust example of static use runs, and says what it should.
.PHONY: test-example
test-example:
	$(call within,1200) $(CARGO) run --quiet --release --example static_app | tee target/static_app.out
	grep -q "orphan r1, last checkpoint: step 3" target/static_app.out
	grep -q "old executor: run_heartbeat: stale lease 1" target/static_app.out

TEST_TARGETS += test-example
