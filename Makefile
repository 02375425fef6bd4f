# chordkd: make help lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CHORDKD := $(BIN)/chordkd
STUDENT ?= btc
DATA ?= data/demo
RUNS ?= runs
export WANDB_MODE ?= offline

.PHONY: help install test test-fast lint bench clean

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/chordkd: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchaudio==2.11.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/chordkd  ## make .venv and install chordkd with its test extras

test: install  ## run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest -q

test-fast: install  ## the suite without tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: install  ## ruff
	$(BIN)/ruff check chordkd tests bench

clean:  ## remove runs and generated data (keeps .venv)
	rm -rf $(RUNS) data bench/out
