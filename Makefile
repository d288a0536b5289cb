# Two entry points: `make demo` (set up, then train the demo CNN with the live dashboard)
# and `make test` (set up, then run the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sentrycam-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch is pinned to the CPU build through constraints.txt (see README).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sentrycam demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/capture_overhead.py

clean:
	rm -rf $(VENV) sentrycam-runs .pytest_cache
