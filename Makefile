# B2B:Student on Airflow. `make demo` runs the demo LA end to end; `make test` runs the tests.
# Everything is installed into ./.venv; runtime state (embedded Postgres, Airflow home) lives in ./.b2b.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export B2B_HOME ?= $(CURDIR)/.b2b
export AIRFLOW_HOME ?= $(B2B_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins

.PHONY: setup demo test lint airflow bench check clean chromium pgbouncer
setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: setup ## set up and run the demo LA end to end on the embedded Postgres (stopped again at the end)
	$(VENV)/bin/b2b demo; rc=$$?; $(PY) -m b2b.cli db stop --if-unused; exit $$rc

test: setup chromium pgbouncer lint ## set up, check the house (lint, types) and run the test suite
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup ## ruff on the code, mypy on b2b/ and plugins/ (run by `make test`)
	$(VENV)/bin/ruff check b2b plugins dags tests bench simulator
	$(VENV)/bin/mypy

chromium: ## Debian's Chromium for the browser tests (installed from Debian's packages when missing)
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped" >&2; }

pgbouncer: ## Debian's PgBouncer for the pooled-connection test (installed from Debian's packages when missing)
	@{ command -v pgbouncer || test -x /usr/sbin/pgbouncer; } >/dev/null 2>&1 || { echo "installing Debian's pgbouncer for the pooled-connection test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null) \
	  || echo "warning: could not install pgbouncer; the pooled-connection test will be skipped" >&2; }

airflow: setup ## airflow standalone on this project: UI on http://127.0.0.1:8080, login and connections printed (docs/airflow.md)
	$(VENV)/bin/b2b airflow

bench: setup ## print the benchmarks' figures
	$(PY) bench/run_all.py

check: setup ## validate the task catalogue
	$(VENV)/bin/b2b config check

clean: ## stop every embedded Postgres under .b2b, then remove runtime state (not the venv)
	@if [ -x $(PY) ]; then $(PY) -m b2b.cli db stop --all; \
	  else echo "no $(VENV): no embedded PostgreSQL can be running from it"; fi
	rm -rf $(B2B_HOME)
