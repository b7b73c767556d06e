# make demo: set up and run the embedded demo.  make test: set up everything the tests need,
# check lint, format and types (make lint), then run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup services bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

# The real services and tools the tests use: Mosquitto (Debian package; the binary is in
# /usr/sbin), ssh-keygen and gpg (signed commits). Each is installed only when missing.
services:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v ssh-keygen >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	command -v gpg >/dev/null 2>&1 || missing="$$missing gnupg"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: setup
	$(BIN)/huddle demo

# ruff and mypy read their settings from pyproject.toml (mypy checks huddle/ only: micro/ is
# MicroPython and has no annotations to check).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint services
	$(BIN)/python -m pytest -q tests

# The benchmarks' own peer, ansible-core (ansible-pull), lives in a venv of its own: it is not
# a dependency of huddle. BENCH_ARGS passes options to bench/run.py (e.g. --skip fleet).
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP):
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q ansible-core
	touch $(BENCH_STAMP)

bench: setup services $(BENCH_STAMP)
	ANSIBLE_PULL=$(abspath $(BENCH_VENV))/bin/ansible-pull $(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-bench build *.egg-info
