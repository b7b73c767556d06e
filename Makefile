# make demo: set up and run the embedded demo.  make test: set up everything the tests need, run them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup services bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

# Real services the tests use: Mosquitto (Debian package) and socat for the pty board.
services:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] || ! command -v socat >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto socat >/dev/null; \
	fi

demo: setup
	$(BIN)/huddle demo

test: setup services
	$(BIN)/python -m pytest -q tests

bench: setup services
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
