# Each target sets itself up: a virtual environment in .venv with otfuzz and its test
# dependencies, created on first use from this project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/otfuzz demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# Two workers, one test file each at a time: most tests wait on a real server, so two halve the
# wall time on a two-core machine; a file's module fixtures (a planted-defect campaign) run once.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
