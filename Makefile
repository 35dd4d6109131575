# The two commands a newcomer needs (see README.md):
#   make demo   start a local Kafka, serve requests, show what reached Kafka
#   make test   lint, type-check, and run every test, unit and real-Kafka
#               (the 3-broker failover test as a step of its own)
# Both create .venv and install what they need on first use; Kafka's jars
# come from Maven Central through mvn into ~/.cache/relayer (Java 17 needed).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: test unit integration failover lint demo broker bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[flask,test,lint]'
	touch $@

test: lint $(VENV)/.installed
	$(PY) -m pytest -m "not failover"
	$(PY) -m pytest -m failover

unit: $(VENV)/.installed
	$(PY) -m pytest tests --ignore=tests/integration

integration: $(VENV)/.installed
	$(PY) -m pytest tests/integration -m "not failover"

failover: $(VENV)/.installed
	$(PY) -m pytest tests/integration -m failover -s

lint: $(VENV)/.installed
	$(PY) -m ruff check relayer tests tools examples benchmarks
	$(PY) -m ruff format --check relayer tests tools examples benchmarks
	$(PY) -m mypy

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

clean:
	rm -rf $(VENV) build dist *.egg-info
