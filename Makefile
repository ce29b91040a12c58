# Two commands on a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
# Both create .venv/ in the repo root if missing and install the project with its test extra.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-unit lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]' -c constraints.txt
	touch $(STAMP)

demo: setup
	$(BIN)/python jobs/demo.py --out demo-out

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

# The unit lane: no S3 server, no Ray, no end-to-end runs (about a minute on 2 cores).
test-unit: setup
	$(BIN)/python -m pytest -m 'not slow and not services' tests/geo tests/model tests/io \
		tests/schedule/test_schedule_regions.py tests/test_config.py tests/test_metrics.py \
		tests/test_progress.py tests/test_jobs_help.py tests/mapping/test_mapping_blend.py \
		$(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check depthseg jobs tests
	$(BIN)/mypy

clean:
	rm -rf demo-out .pytest_cache .ruff_cache .mypy_cache
