# refstream: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: install sdkgen deps lock lint test test-fast chaos demo up down status compose-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), "refstream needs Python 3.11 or 3.12 (bytewax 0.21.1 wheels)"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# The OpenAPI client generator of tests/api/test_generated_client.py, in its own venv (its pins
# conflict with refstream's httpx and typer); the test builds it on first use too.
SDKGEN := .venv-sdkgen
sdkgen: $(SDKGEN)/bin/openapi-python-client

$(SDKGEN)/bin/openapi-python-client: tests/api/sdkgen/requirements.txt
	$(PYTHON) -m venv --clear $(SDKGEN)
	$(SDKGEN)/bin/pip install --quiet --no-deps -r tests/api/sdkgen/requirements.txt
	cp tests/api/sdkgen/requirements.txt $(SDKGEN)/.requirements

# Re-resolve the newest versions pyproject.toml allows and pin them in constraints.txt.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev]'
	head -n 3 constraints.txt > constraints.new
	$(LOCK_VENV)/bin/pip freeze --exclude-editable >> constraints.new
	mv constraints.new constraints.txt && rm -rf $(LOCK_VENV)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas deploy api ingest dataflows

# Machine packages the tests need (PostgreSQL, Redis, Chromium, Node.js, npm): installed when
# missing and possible, else one line saying what to install.
deps:
	@bash deploy/deps.sh

# --durations: the slowest tests at the end of every run (and of CI's log), to keep the suite
# within its 15 minutes. Two xdist workers, each a test session of its own (its own tansu,
# ClickHouse front, PostgreSQL databases and Redis index: tests/conftest.py), most tests waiting
# on servers and subprocesses; then, by itself, what is marked `alone` (the chaos suite stops the
# machine's PostgreSQL and Redis under every other test).
PYTEST_WORKERS ?= 2
test: deps lint
	$(BIN)/pytest -q --durations=30 -n $(PYTEST_WORKERS) --dist loadgroup -m "not alone"
	$(BIN)/pytest -q --durations=5 -m alone

test-fast: install
	$(BIN)/pytest -q -x

# The chaos suite at full size (make test runs it on 40 orders): prints the fault table.
CHAOS_ORDERS ?= 400
chaos: install
	CHAOS_FULL=1 CHAOS_ORDERS=$(CHAOS_ORDERS) $(BIN)/pytest -q -p no:cacheprovider \
		--timeout 1800 tests/e2e/test_chaos.py

# status before the demo, so the dashboard URL and the logins the demo prints stay on screen.
demo: install
	$(BIN)/refstream up
	$(BIN)/refstream status
	$(BIN)/refstream demo

up: install
	$(BIN)/refstream up

down: install
	$(BIN)/refstream down

status: install
	$(BIN)/refstream status

compose-check: install
	$$($(PY) -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))') config -q

clean: down
	rm -rf .refstream
