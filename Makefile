# pixq: `make up` runs the whole stack locally, `make test` runs the whole suite.
# Both install what they need on a fresh Debian machine (run as root): nats-server and
# redis-server from apt when missing, a .venv, and the package.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTHON ?= $(shell command -v python3.11 || command -v python3)

.PHONY: up test test-corpus bench system-deps clean

up: system-deps $(STAMP)
	$(PY) -m pixq.devstack

test: system-deps $(STAMP)
	$(PY) -m pytest

test-corpus: system-deps $(STAMP)
	PIXQ_FULL_CORPUS=1 $(PY) -m pytest tests/imaging -k corpus

bench: system-deps $(STAMP)
	$(PY) -m bench.run

system-deps:
	@if ! command -v nats-server >/dev/null || ! command -v redis-server >/dev/null; then \
	  echo "installing nats-server and redis-server with apt"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server redis-server >/dev/null; \
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
