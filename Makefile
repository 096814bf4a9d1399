# The README's two commands: `make dev` runs Courier embedded, `make test` runs the suite.
#   make dev                          SQLite + in-process broker, API and workers in one process
#   make test [PYTEST_ARGS='-k dead']  the full suite against real PostgreSQL and RabbitMQ, on
#                                     TEST_WORKERS pytest-xdist workers (PYTEST_ARGS='-n 0': serially)
#   make test-cluster [PYTEST_ARGS=…]  the cluster tests: RabbitMQ, PostgreSQL and worker hosts
#   make services                     start (or install) PostgreSQL and RabbitMQ only
#   make lint                         ruff check, ruff format --check, mypy and scripts/check-imports
#   make mypy                         mypy on the project packages that exist
#   make bench [BENCH_ARGS=--quick]   the benchmark (bench/README.md): table + bench/results/*.json
#   make .venv                        create .venv and install Courier with its test extra

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Most tests wait on the services and on subprocesses, so more workers than the 2 cores pay.
TEST_WORKERS ?= 3
BENCH_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: dev test test-cluster services lint mypy clean bench .venv

.venv: $(STAMP)

# Re-installs whenever pyproject.toml changes; the stamp is written only after a good install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "make: Courier needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	@if ! $(VENV)/bin/python -m pip --version >/dev/null 2>&1; then \
	  rm -rf $(VENV); \
	  echo "$(PYTHON) -m venv $(VENV)"; \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "make: installing Debian's venv module for $(PYTHON)"; \
	      v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv "python$$v-venv" >/dev/null \
	        || { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv "python$$v-venv" >/dev/null; }; \
	      $(PYTHON) -m venv $(VENV) || exit 1; \
	    else \
	      echo "make: '$(PYTHON) -m venv' failed; on Debian install python3-venv" >&2; exit 1; \
	    fi; \
	  fi; \
	fi
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# In a terminal, Ctrl-C goes to `courier dev` alone (it stops cleanly and exits 0), so make
# reports that exit status instead of dying of the signal itself.
dev: $(STAMP)
	@if $(PYTHON) -c 'import os, sys; sys.exit(os.tcgetpgrp(0) != os.getpgrp())' 2>/dev/null; then set -m; fi; \
	  echo "$(VENV)/bin/courier dev"; $(VENV)/bin/courier dev

services:
	scripts/ensure-services

# --dist loadgroup keeps the tests of an xdist_group on one worker (tests/conftest.py).
test: services $(STAMP)
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-cluster: services $(STAMP)
	$(VENV)/bin/pytest -m cluster $(PYTEST_ARGS)

bench: services $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# mypy checks the project packages that exist (scripts/check-imports knows them) and the script.
MYPY_TARGETS = $$($(VENV)/bin/python scripts/check-imports --packages) scripts/check-imports

# Runs every check, even after one fails, then fails if any did, naming them.
lint: $(STAMP)
	@failed=; \
	check() { name=$$1; shift; echo "$$*"; "$$@" || failed="$$failed, $$name"; }; \
	check "ruff check" $(VENV)/bin/ruff check .; \
	check "ruff format" $(VENV)/bin/ruff format --check .; \
	check mypy $(VENV)/bin/mypy $(MYPY_TARGETS); \
	check check-imports $(VENV)/bin/python scripts/check-imports; \
	if [ -n "$$failed" ]; then echo "make: lint failed: $${failed#, }" >&2; exit 1; fi

mypy: $(STAMP)
	$(VENV)/bin/mypy $(MYPY_TARGETS)

clean:
	rm -rf $(VENV) courier-dev.db courier-dev.db-wal courier-dev.db-shm
