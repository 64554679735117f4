# `make demo` and `make test` do all set-up on a fresh machine: they create .venv if it
# is missing, install the pinned requirements and the package, then run. The demo needs
# only the runtime set (requirements.txt, ~1.5 GB); the tests need the full set
# (requirements-full.txt: the converters, exporters and the peer frameworks, torch among
# them, ~8 GB).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
FULL_STAMP := $(VENV)/.installed-full
PYTEST_ARGS ?=
# Python writes bytecode caches even where the environment says not to: without them
# every process compiles TensorFlow's and JAX's sources again on import (18 s instead of
# 7 s here), and the tests start dozens of processes.
export PYTHONDONTWRITEBYTECODE :=

# uv writes the wheels in parallel: 42 s from an empty cache for the full set, where pip
# took 80 s for the same wheels on the 2-core machine.
# It does not read pip's configuration, so the extra indexes and wheel folders pip is set up
# with (a local mirror, say) are handed on; it then takes the best version over all of them,
# as pip does.
# --compile-bytecode writes the .pyc files once, in parallel (~21 s here); without it the
# first processes of the test suite each compile TensorFlow's, JAX's and torch's sources
# on import, side by side (a fresh clone's suite took 459 s instead of 398 s).
UV_INSTALL = UV_EXTRA_INDEX_URL="$$($(PYTHON) -m pip config get global.extra-index-url \
	  2>/dev/null)" UV_FIND_LINKS="$${PIP_FIND_LINKS:-}" UV_INDEX_STRATEGY=unsafe-best-match \
	  $(VENV)/bin/uv pip install --quiet --python $(PYTHON)

.PHONY: install install-full demo test tables clean

install: $(RUNTIME_STAMP)
install-full: $(FULL_STAMP)

$(VENV)/bin/uv:
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet uv==0.13.9

$(RUNTIME_STAMP): requirements.txt requirements-overrides.txt pyproject.toml | $(VENV)/bin/uv
	$(UV_INSTALL) --compile-bytecode -r requirements.txt --override requirements-overrides.txt
	$(UV_INSTALL) --no-deps -e .
	touch $@

$(FULL_STAMP): $(RUNTIME_STAMP) requirements-full.txt
	$(UV_INSTALL) --compile-bytecode -r requirements-full.txt \
	  --override requirements-overrides.txt
	touch $@

demo: $(RUNTIME_STAMP)
	$(PYTHON) -m efficientnet_jax.main --config=configs/demo.py --workdir=runs/demo

# Two workers, one per core (three measured slower: 656 s against 595 s).
test: $(FULL_STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

tables: $(RUNTIME_STAMP)
	$(VENV)/bin/efficientnet-tables

clean:
	rm -rf runs
