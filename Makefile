# Set-up and everyday commands. Two of them do everything on a fresh machine:
#   make demo   -> creates .venv, installs mle-ppl, runs the main job on bundled data
#   make test   -> creates .venv, installs mle-ppl with its test extra, runs the test suite
# This is the only place that knows how to find a Python >= 3.12 on this kind of machine.

VENV    ?= .venv
PYTHON  ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12 || command -v python3.13 || command -v python3)
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), f"mle-ppl needs Python >= 3.12, found {sys.version.split()[0]} at {sys.executable}; set PYTHON=/path/to/python3.12"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mle-ppl demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mle_ppl tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) build *.egg-info
