# Two commands do all set-up:  make demo  (venv + install + the main job on digits)
#                              make test  (venv + install + the test suite)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

export FLWR_TELEMETRY_ENABLED = 0
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION = 1

.PHONY: install demo test test-all clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/fedkd-compare strategies=[fedavg,fedftg] seeds=[0] "overrides=['dataset=digits','num_clients=4','rounds=3']" title="FedAvg vs FedFTG on digits"

# The suite CI runs: everything but the tests marked slow (real SuperLink/SuperNode processes,
# about 50 s each; fedkd-sim on a Ray cluster of its own, 1-2 min); `make test-all` runs those too.
# Two pytest-xdist workers, a test file per worker at a time (a file's tests share module fixtures).
XDIST  := -n 2 --dist loadfile

# ruff first (seconds): a lint finding fails the suite as a test would.
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" $(XDIST) --durations=15

test-all: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(XDIST) --durations=15

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
