# ppkt — the two commands: `make demo` and `make test`. Both do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo
# Threads for tests and the demo: this project targets 2-core CI machines.
export OMP_NUM_THREADS ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: all install demo demo-quick test test-fast lint typecheck format clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first: a bare `torch` requirement with nothing installed pulls a multi-GB CUDA build.
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ppkt demo --out $(OUT)

demo-quick: $(STAMP)
	$(VENV)/bin/ppkt demo --quick --out $(OUT)-quick

test: $(STAMP)
	$(VENV)/bin/ruff check ppkt tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -ra

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -ra -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check ppkt tests
	$(VENV)/bin/ruff format --check ppkt tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format ppkt tests
	$(VENV)/bin/ruff check --fix ppkt tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
