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

run: $(STAMP)
	$(VENV)/bin/otel-bridge inspect tests/fixtures/otlp/openai_v2_content.traces.pb

test: $(STAMP)
	$(VENV)/bin/pytest -q

# Regenerates the committed OTLP fixtures from real instrumentation libraries (not part of `make test`).
fixtures:
	$(PYTHON) tests/fixtures/gen/generate.py

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done
