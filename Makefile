# Two commands for a newcomer: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ember-installed
# pytest-xdist workers: TVM's compiles are single-threaded, so two cores halve the suite
JOBS   ?= 2

.PHONY: demo test setup tools lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,torch]"  # torch for the PyTorch frontend's tests; Ember runs without it
	touch $(STAMP)

tools:
	@bash scripts/install-tools.sh

demo: setup tools
	$(PY) scripts/demo.py

test: setup tools
	$(PY) -m pytest -q -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check ember tests scripts benchmarks

clean:
	rm -rf demo-out .pytest_cache
