# The two commands a newcomer needs (see README.md):
#   make demo   start a local Kafka, serve requests, show what reached Kafka
#   make test   lint, type-check, and run every test, unit and real-Kafka
#               (the 3-broker failover test as a step of its own)
# Both create .venv and install what they need on first use; Kafka's jars
# come from Maven Central through mvn into ~/.cache/relayer (Java 17 needed).
# `make test` also installs Debian's PostgreSQL server if no initdb is found
# (`make postgres`); the tests start their own server from it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: test unit integration failover lint demo broker bench postgres clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[flask,test,lint]'
	touch $@

test: lint postgres $(VENV)/.installed
	$(PY) -m pytest -m "not failover"
	$(PY) -m pytest -m failover

unit: $(VENV)/.installed
	$(PY) -m pytest tests --ignore=tests/integration

integration: postgres $(VENV)/.installed
	$(PY) -m pytest tests/integration -m "not failover"

failover: $(VENV)/.installed
	$(PY) -m pytest tests/integration -m failover -s

lint: $(VENV)/.installed
	$(PY) -m ruff check relayer tests tools examples benchmarks
	$(PY) -m ruff format --check relayer tests tools examples benchmarks
	$(PY) -m mypy
	$(PY) -m mypy tools/postgres_local.py

demo: $(VENV)/.installed
	$(PY) -m examples.demo

# Every benchmark side by side against a local Kafka (~3 min), relayer 1.0.0 included
# (its venv is built with pip on first use); writes benchmarks/RESULTS.md. `make test`
# runs only `--smoke`, which leaves 1.0.0 out (see benchmarks/README.md).
bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run

# The peers of section 4 (OpenTelemetry, sentry-sdk): `make bench` only, `make test` runs without.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --editable '.[flask,test,lint,bench]'
	touch $@

broker: $(VENV)/.installed
	$(PY) -m tools.kafka_local run --port 9092

# PostgreSQL's server programs for the database tests (tools/postgres_local.py starts a
# throwaway server from them): Debian's postgresql package, installed only when no initdb
# is on PATH or in /usr/lib/postgresql/*/bin. Needs root, or sudo. Nothing is started here.
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		exit 0; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "make postgres: no PostgreSQL server (initdb) found, and no apt-get to install" \
			"Debian's postgresql package: install PostgreSQL 13+ (initdb on PATH), or set" \
			"RELAYER_TEST_DATABASE_URL to an existing server." >&2; \
		exit 1; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		sudo=; \
	elif command -v sudo >/dev/null 2>&1; then \
		sudo=sudo; \
	else \
		echo "make postgres: no PostgreSQL server (initdb) found, and installing Debian's" \
			"postgresql package needs root or sudo. Install it (or any PostgreSQL 13+ with" \
			"initdb on PATH), or set RELAYER_TEST_DATABASE_URL to an existing server." >&2; \
		exit 1; \
	fi; \
	echo "make postgres: no initdb found, installing Debian's postgresql package"; \
	$$sudo apt-get update -q && \
	$$sudo env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends postgresql

clean:
	rm -rf $(VENV) build dist *.egg-info
