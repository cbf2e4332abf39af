# `make run` and `make test` each create or refresh .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test fixtures bench dashboard-assets record-skillflaw test-skillflaw-live

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The main job: the OTLP receivers, the pipeline and the HTTP API on the packaged default config (embedded chDB
# in ./.otel-bridge/data). `otel-bridge demo` in another terminal sends it traffic.
run: $(STAMP)
	$(VENV)/bin/otel-bridge serve

# The browser test drives Debian's chromium (headless); installed here when missing (needs root and apt).
test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

# Regenerates the committed OTLP fixtures from real instrumentation libraries (not part of `make test`).
fixtures:
	$(PYTHON) tests/fixtures/gen/generate.py

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# The dashboard's chart library, from the npm registry at build time (frontend/package.json pins it). The built
# file is committed under otel_bridge/server/static/ and packaged, so running needs neither the network nor Node.
dashboard-assets:
	cd frontend && npm ci --no-audit --no-fund
	mkdir -p otel_bridge/server/static
	sed '/sourceMappingURL/d' frontend/node_modules/chart.js/dist/chart.umd.min.js > otel_bridge/server/static/chart.umd.min.js
	cp frontend/node_modules/chart.js/LICENSE.md otel_bridge/server/static/chart.js.LICENSE.md

# SkillFlaw receiver: a real Langflow in its own venv (pip install takes minutes; not part of `make test`).
LANGFLOW_VENV := .langflow-venv
$(LANGFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(LANGFLOW_VENV)
	$(LANGFLOW_VENV)/bin/pip install -q --disable-pip-version-check langflow==1.13.0
	touch $@

# Records Langflow's monitor API and its Phoenix tracer's OTLP into tests/fixtures/skillflaw/ (committed).
record-skillflaw: $(STAMP) $(LANGFLOW_VENV)/.installed
	$(PY) tests/skillflaw/record.py

# The SkillFlaw tests against a live Langflow instead of the recording.
test-skillflaw-live: $(STAMP) $(LANGFLOW_VENV)/.installed
	SKILLFLAW_LIVE=1 $(VENV)/bin/pytest -q tests/test_skillflaw_langflow.py
