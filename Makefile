# megacluster: `make demo` runs the main job on a built-in scenario, `make test` runs the test suite.
# Both create the virtual environment .venv (if missing) and install megacluster into it first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_SCENARIO ?= xai-colossus-100k

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/megacluster campaign --scenario $(DEMO_SCENARIO)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
