# `make demo` and `make test` do all set-up on a fresh machine: they create .venv if it
# is missing, install the pinned requirements and the package, then run.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Python writes bytecode caches even where the environment says not to: without them
# every process compiles TensorFlow's and JAX's sources again on import (18 s instead of
# 7 s here), and the tests start dozens of processes.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install demo test tables clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet --no-compile -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m efficientnet_jax.main --config=configs/demo.py --workdir=runs/demo

# Two workers, one per core (three measured slower: 656 s against 595 s).
test: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

tables: $(STAMP)
	$(PYTHON) scripts/reproduce_tables.py

clean:
	rm -rf runs
