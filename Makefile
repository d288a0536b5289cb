# Two entry points: `make demo` (set up, then train the demo CNN with the live dashboard)
# and `make test` (set up, then run the whole test suite, as CI does). Both create .venv on
# first use. `make test-fast` runs the fast tier: every test not marked slow (no browser, server
# process, long training or projector warm-up; see tests/conftest.py).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sentrycam-installed

.PHONY: setup demo test test-fast bench bench-docs clean chromium container-tools image

setup: $(STAMP)

# torch first, its CPU build unless TORCH=pypi (scripts/install-torch.sh; the README's
# "Install"), then sentrycam with constraints.txt holding torch at that release.
$(STAMP): pyproject.toml constraints.txt scripts/install-torch.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	scripts/install-torch.sh $(PY) --quiet
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sentrycam demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Each benchmark writes benchmarks/results/<benchmark>[-<variant>].json, one after the other
# (run them alone on the machine), then the report regenerates docs/benchmarks.md's tables;
# the projector benchmark exits 1 when a bar is missed: its result file is written all the same.
RESULTS := benchmarks/results
bench: $(STAMP)
	$(PY) benchmarks/cli_start.py --repeats 10 --json $(RESULTS)/cli_start.json
	$(PY) benchmarks/capture_overhead.py --json $(RESULTS)/capture_overhead.json
	$(PY) benchmarks/ingest_memory.py --json $(RESULTS)/ingest_memory.json
	$(PY) benchmarks/local_server_cost.py --json $(RESULTS)/local_server_cost.json
	$(PY) benchmarks/scenarios.py --quick --json $(RESULTS)/scenarios-quick.json
	$(PY) benchmarks/dashboard_latency.py --no-projector --sizes 2000 --snapshots 5 --actions 5 \
	  --fanout 3 --json $(RESULTS)/dashboard_latency-stand-in.json
	$(PY) benchmarks/dashboard_latency.py --projector --sizes 2000 --snapshots 10 --actions 5 \
	  --fanout 0 --json $(RESULTS)/dashboard_latency-projector.json
	-$(PY) benchmarks/projector_vs_umap.py --quick --json $(RESULTS)/projector_vs_umap-quick.json
	$(MAKE) bench-docs

# docs/benchmarks.md's tables from the committed result files.
bench-docs: $(STAMP)
	$(PY) benchmarks/report.py

# apt-get install $(1) as root, or through sudo when there is one.
define apt_install
if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
else echo "$(1): missing, and this user cannot install it (not root, no sudo)" >&2; exit 1; fi; \
$$SUDO apt-get update && $$SUDO apt-get install -y $(1)
endef

# Debian's chromium for the browser tests.
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(call apt_install,chromium); }

# buildah and debootstrap: the container test (tests/e2e/test_container.py, as root) builds and
# runs the image with them where there is no Docker daemon.
container-tools:
	@command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
	  || { $(call apt_install,buildah debootstrap); }

# The server's image, built with buildah on a local Debian base (as root; see the script).
# With a Docker daemon: docker build -t sentrycam .
image:
	scripts/container.sh

clean:
	rm -rf $(VENV) sentrycam-runs .pytest_cache
