# Two commands do everything, set-up included: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch 2.13.0 is the CPU wheel on this machine's disk; the constraint keeps every other
# install from pulling a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test install data clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

data:
	@bash scripts/ensure-data.sh

demo: install data
	$(BIN)/autocomp search --config configs/fmnist_resnet20.yaml --out runs/demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf runs .pytest_cache
