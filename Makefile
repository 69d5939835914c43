# Quick start: `make demo` (a local run: coordinator, two nodes, the dashboard) and `make test`.
# Both create .venv and install what a fresh machine lacks. torch is installed first, and only when
# none is importable: a GPU user's own CUDA build is left alone, and a CPU machine gets the CPU
# build instead of a multi-GB CUDA one.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gpt5os-installed
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-fast lint format proto gpu-check gpu-wheels mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

# `make test` leaves out the suites marked slow (minutes each: the keeper across an empty swarm,
# the moderated swarm, the big presets); `make test-slow` runs them, and CI runs both.
test: install
	$(BIN)/python -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -ra -m slow $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not e2e and not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: install
	$(BIN)/python scripts/gen_proto.py

# The GPU check (issue 14): scripts/gpu_check.sh says what it runs and writes (build/gpu-check-out).
# gpu-wheels fetches what it brings to a GPU machine without network (fla-core, einops for
# Python 3.12); build/ is ignored by git, so carry build/gpu-wheels explicitly.
GPU_WHEELS ?= build/gpu-wheels

gpu-wheels: $(BIN)/python
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 -d $(GPU_WHEELS) \
		fla-core==0.6.0 einops==0.8.2

# Mutation testing (cosmic-ray) of the coordinator's scheduler, swarm state, store and request
# validation against their unit tests; MUTATION_ARGS="--sample 4" tests every 4th mutant.
MUTATION_ARGS ?=
mutation: install
	$(BIN)/python bench/mutation.py $(MUTATION_ARGS)

gpu-check: install
	PYTHON=$(BIN)/python bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
