# `make run` and `make test` each create or refresh .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test fixtures bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The main job: the OTLP receivers, the pipeline and the HTTP API on the packaged default config (embedded chDB
# in ./.otel-bridge/data). `otel-bridge demo` in another terminal sends it traffic.
run: $(STAMP)
	$(VENV)/bin/otel-bridge serve

test: $(STAMP)
	$(VENV)/bin/pytest -q

# Regenerates the committed OTLP fixtures from real instrumentation libraries (not part of `make test`).
fixtures:
	$(PYTHON) tests/fixtures/gen/generate.py

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done
