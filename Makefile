# The README's two commands: `make demo` (run the pipeline on the embedded digits) and `make test`.
# `make demo DEMO_ARGS=--quick` runs the one-minute smoke budget. `make benchmark` runs the Fashion-MNIST benchmark
# (needs Debian's dataset-fashion-mnist; BENCHMARK_ARGS="--methods simclr,clsp-simclr,simclr-real3,nnclr,moco,clsp-moco,moco-real3" adds the MoCo rows).
# Both create or reuse the virtual environment in .venv and install this package into it with pip.
VENV ?= .venv
PYTHON ?= python3
# torch and torchvision first, pinned to releases that pip finds on this project's build machines;
# override on other machines, e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.clsp-installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo benchmark test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/clsp demo configs/digits.yaml $(DEMO_ARGS)

benchmark: $(STAMP)
	$(BIN)/clsp demo configs/fashion_mnist.yaml $(BENCHMARK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# two pytest-xdist workers, one per core (tests/conftest.py gives each one thread); a test file stays on one worker
# so that its module fixtures are built once
PYTEST_WORKERS ?= -n 2 --dist loadfile

test: lint
	$(BIN)/pytest $(PYTEST_WORKERS)

# for development: the suite without the tests marked slow
test-fast: lint
	$(BIN)/pytest $(PYTEST_WORKERS) -m "not slow"

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache
