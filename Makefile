# Quick start: `make run` and `make test`. Everything installs into .venv from requirements.lock.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install run test lint typecheck format bench fuzz clean

$(STAMP): pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "CognitionOS needs Python 3.11 or 3.12 (python3.12 / python3.11 on PATH)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/cognitionos up --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The suite runs in TEST_PROCESSES processes (pytest-xdist, a file's tests in one process), each with
# its own embedded PostgreSQL and Redis; with REDIS_URL given they would share one Redis, so one process.
TEST_PROCESSES ?= $(if $(REDIS_URL),0,2)
test: lint
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile

# Schemathesis over /api/schema/ with many more examples per operation than `make test` runs (10).
FUZZ_EXAMPLES ?= 200
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/security/test_api_schema_fuzz.py -q

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/tenants.py
	$(BIN)/python bench/router.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/request_cpu.py
	$(BIN)/python bench/access.py
	$(BIN)/python bench/rbac.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/portal.py

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache
