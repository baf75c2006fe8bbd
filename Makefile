# Set-up, demo and tests. `make demo` and `make test` do all set-up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py setup.cfg
	@bash .ci/ensure-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/same-serve demo

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/same-serve bench detect

clean:
	rm -rf demo-out bench-out runs demo-report.json
