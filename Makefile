# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKERS ?= 1
# Where the demo keeps its database, pool and keys (the site reads TASKPOOL_VAR_DIR too).
TASKPOOL_VAR_DIR ?= $(CURDIR)/var
# Where the workers' Prometheus metrics meet (emptied at each start): one per demo site.
PROMETHEUS_MULTIPROC_DIR ?= $(TASKPOOL_VAR_DIR)/prometheus

.PHONY: install run test bench fleet lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs only when the declared dependencies change. The device agent is a
# distribution of its own (agent/), installed next to the app for its tests and the
# bench; after the app, so that an older app's copy of the agent never removes it.
$(VENV)/.installed: pyproject.toml agent/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo,test,docs]"
	$(BIN)/python -m pip install --quiet -e ./agent
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup --url http://$(HOST):$(PORT)
	rm -rf $(PROMETHEUS_MULTIPROC_DIR) && mkdir -p $(PROMETHEUS_MULTIPROC_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(PROMETHEUS_MULTIPROC_DIR) \
	$(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) \
		--workers $(WORKERS) --timeout-graceful-shutdown 5 --no-access-log --lifespan off

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The bench's own extra (django-tasks-db, the PostgreSQL benchmark's baseline), on top of install.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[demo,test,bench]"
	touch $@

# The PostgreSQL part runs on the server named by TASKPOOL_BENCH_POSTGRES (default:
# TASKPOOL_TEST_POSTGRES), in databases of its own that it drops at the end.
bench: install $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)
	@url="$${TASKPOOL_BENCH_POSTGRES:-$$TASKPOOL_TEST_POSTGRES}"; if [ -n "$$url" ]; then TASKPOOL_BENCH_POSTGRES="$$url" $(BIN)/python -m bench.database $(BENCH_DATABASE_ARGS); else echo "bench.database skipped: no PostgreSQL (set TASKPOOL_BENCH_POSTGRES or TASKPOOL_TEST_POSTGRES)"; fi

# A busy fleet for the demo: virtual devices against the server `make run` serves (run it
# first, in another terminal); they are created in its database (var/) as sim-00000 ...
FLEET_ARGS ?= --devices 200 --duration 600 --rate 2 --task-seconds 1,8 --fail-rate 0.05 --reject-rate 0.02
fleet: install
	$(BIN)/python -m bench.fleet --server http://$(HOST):$(PORT)/pool/ $(FLEET_ARGS)

lint: install
	$(BIN)/ruff check taskpool taskpool_agent project tests bench
	$(BIN)/ruff format --check taskpool taskpool_agent project tests bench
	$(BIN)/mypy taskpool taskpool_agent

# The documentation site, in site/; a broken link or a page left out of the nav fails it.
# The schema is built from the demo's settings, in a var directory of its own that goes after.
docs: install
	@var=$$(mktemp -d) && TASKPOOL_VAR_DIR=$$var $(BIN)/python manage.py spectacular \
		--file docs/api/openapi.yaml --validate --fail-on-warn; status=$$?; rm -rf $$var; exit $$status
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) var build site *.egg-info
