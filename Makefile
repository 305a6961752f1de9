# megacluster: `make demo` runs the main job on a built-in scenario, `make test` runs the test suite.
# Both create the virtual environment .venv (if missing) and install megacluster into it first: the demo only
# the planner (`pip install -e .`, no PyTorch), the tests the dev and train extras too (PyTorch, about 1 GB).
# pip shows its progress.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STAMP_TEST := $(VENV)/.installed-test
DEMO_SCENARIO ?= xai-colossus-100k

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $(STAMP)

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev,train]'
	touch $(STAMP) $(STAMP_TEST)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/megacluster campaign --scenario $(DEMO_SCENARIO)

test: $(STAMP_TEST)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
