# run_recovery on a replicated SQLite cluster (dqlite): see docs/distributed.md.
# Needs Debian's go-dqlite (dqlite-demo), golang-go and
# golang-github-canonical-go-dqlite-dev: .ci/install.d/dqlite.sh installs them.
# The Go client builds offline in GOPATH mode against /usr/share/gocode; the
# GOPATH lives under target/ (a symlink to tools/dqlite), nothing is committed.

DQLITE_DIR := target/dqlite
DQLITE_GOPATH := $(CURDIR)/$(DQLITE_DIR)/gopath
DQLITE_PKG := $(DQLITE_GOPATH)/src/run_recovery_dqlite
DQLITE_TOOL := $(DQLITE_DIR)/bin/run-recovery-dqlite
DQLITE_GOENV := GOPATH=$(DQLITE_GOPATH):/usr/share/gocode GO111MODULE=off GOPROXY=off \
  GOFLAGS= GOCACHE=$(CURDIR)/$(DQLITE_DIR)/gocache CGO_ENABLED=0

.PHONY: dqlite-tool test-dqlite bench-dqlite

TEST_TARGETS += test-dqlite

$(DQLITE_TOOL): $(wildcard tools/dqlite/*.go)
	@command -v go >/dev/null && [ -d /usr/share/gocode/src/github.com/canonical/go-dqlite/driver ] || { \
	  echo "dqlite: needs golang-go and golang-github-canonical-go-dqlite-dev (run .ci/install.d/dqlite.sh)" >&2; exit 1; }
	mkdir -p $(DQLITE_GOPATH)/src $(DQLITE_DIR)/bin
	ln -sfn $(CURDIR)/tools/dqlite $(DQLITE_PKG)
	cd $(DQLITE_PKG) && $(DQLITE_GOENV) go vet . && $(DQLITE_GOENV) go test . && \
	  $(DQLITE_GOENV) go build -o $(CURDIR)/$(DQLITE_TOOL) .

dqlite-tool: $(DQLITE_TOOL)

# Three dqlite-demo nodes on free loopback ports, the scenario of
# docs/distributed.md, everything stopped at the end; prints the figures.
test-dqlite: $(DQLITE_TOOL)
	$(call within,1200) $(PYTHON) tests/dqlite/test_cluster.py --tool $(DQLITE_TOOL)

# The same run, with more heartbeats measured for the latency figures.
bench-dqlite: $(DQLITE_TOOL)
	$(PYTHON) tests/dqlite/test_cluster.py --tool $(DQLITE_TOOL) --bench 2000
