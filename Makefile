# Three commands do everything, set-up included: `make demo`, `make test` and `make lint`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.test-installed
DEMO_STAMP := $(VENV)/.demo-installed
LINT_STAMP := $(VENV)/.lint-installed
SOURCES := autocomp search_spaces agents tests benchmarks scripts
# torch 2.13.0 is the CPU wheel on this machine's disk; the constraint keeps every other
# install from pulling a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint install data clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $(STAMP)

install: $(STAMP)

# each command installs the extras it uses: the tests every one, the demo its report's figures
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(TEST_STAMP)

$(DEMO_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[plots]'
	touch $(DEMO_STAMP)

$(LINT_STAMP): $(TEST_STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[lint]'
	touch $(LINT_STAMP)

data:
	@bash scripts/ensure-data.sh

demo: $(DEMO_STAMP) data
	$(BIN)/autocomp search --config configs/fmnist_resnet20.yaml --out runs/demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

# ruff's lint rules and format, and the import contracts of pyproject.toml (the layers in docs/DESIGN.md)
lint: $(LINT_STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf runs .pytest_cache
