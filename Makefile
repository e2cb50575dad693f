# Two targets for a fresh machine; each does its own set-up first.
#   make train       set up .venv with what training needs (no torch, tfds or pytest), then train the default GAN
#                    on the shipped MNIST (runs/mnist)
#   make test        set up .venv with everything (torch, tfds, pytest, ruff), then run the whole test suite
#                    (what CI runs, after make lint)
#   make test-fast   the fast tier: unit and core parity tests, no end-to-end runs (pytest -m "not slow")
#   make lint        ruff, configured in pyproject.toml
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU wheel: an unpinned torch would pull a multi-GB CUDA build. GPU users: see docs/usage.md.
TORCH_SPEC ?= torch==2.13.0
# pytest-xdist workers: tests run in two processes, a test module's tests in one (--dist loadscope, so module
# fixtures are built once). On the 2-core CI machine this took the fast tier from 138 s to 103 s.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

.PHONY: setup setup-train train test test-fast lint bench clean
# Two stamps: .train-deps (the package and its own dependencies: JAX, Flax, Optax, Orbax, ...) and .test-deps
# (those, torch and the test extra). `make train` needs only the first; a later `make test` adds the rest.
setup-train: $(VENV)/.train-deps
setup: $(VENV)/.test-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.train-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/.train-deps
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,torch]"
	touch $@

train: setup-train
	$(BIN)/python -m gan_jax.train --out-dir runs/mnist $(ARGS)

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks.step_throughput $(ARGS)

clean:
	rm -rf $(VENV) runs
