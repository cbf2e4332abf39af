"""The FlightDeck path against the real ``flightdeck serve``: traces → runs → RunEvents → release diff."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from statistics import mean

import orjson
import pytest
from conftest import FIXTURES, REFERENCE_FIXTURES
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_bridge
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.flightdeck import FlightDeckSender
from otel_bridge.inspect import read_otlp_file
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.processors.flightdeck import FlightDeckMapping
from otel_bridge.spans import span_from_sdk
from otel_bridge.synthetic import MODELS, emit, plan_runs

OPENAI_MODELS = tuple(m for m in MODELS if m[1] in ("gpt-4o-mini", "gpt-4o"))


def _pipeline(fd, mapping: FlightDeckMapping, dead_letter=None) -> Pipeline:
    exporter = BatchExporter(FlightDeckSender(fd.base_url), dead_letter=dead_letter, interval=0.1)
    return Pipeline({"flightdeck": exporter}, PipelineOptions(wait=0.05, max_wait=0.5, flightdeck=mapping))


def _expected(planned) -> dict[str, float]:
    """What FlightDeck must compute, from the planned spans themselves: it prices all of a run's tokens at the
    run's dominant model, uncached input + cached input + output."""
    from flightdeck_server import FlightDeckServer

    costs = []
    for run in planned:
        per_model = defaultdict(int)
        for c in run.calls:
            per_model[c.model] += c.input_tokens + c.output_tokens
        p_in, p_cached, p_out = FlightDeckServer.price_of(max(per_model, key=per_model.get))
        cached = sum(c.cached_input_tokens for c in run.calls)
        uncached = sum(c.input_tokens for c in run.calls) - cached
        costs.append(uncached * p_in + cached * p_cached + sum(c.output_tokens for c in run.calls) * p_out)
    return {
        "cost_per_run": mean(costs),
        "latency": mean(r.latency_ms for r in planned),
        "error_rate": sum(r.fail for r in planned) / len(planned),
    }


def _record(resource: dict, planned, pipeline: Pipeline) -> list:
    """Run the planned agents through a real SDK provider with otel-bridge installed; return the finished spans."""
    provider = TracerProvider(resource=Resource.create(resource))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    otel_bridge.install(provider, pipeline=pipeline)
    tracer = provider.get_tracer("synthetic")
    for run in planned:
        emit(tracer, run)
    provider.shutdown()  # flushes the processor, assembles the runs, delivers them
    return memory.get_finished_spans()


def test_release_diff_matches_the_spans_and_resending_changes_nothing(flightdeck_server):
    fd = flightdeck_server
    agent = f"fd-agent-{uuid.uuid4().hex[:6]}"
    baseline = fd.register_release(agent, "gpt-4o-mini", "1.0.0")
    candidate = fd.register_release(agent, "gpt-4o-mini", "2.0.0")
    mapping = FlightDeckMapping(
        release_map={"checkout-bot@1.0.0": baseline}, tenant_id="tenant_test", task_id="task_test"
    )
    common = dict(agents=(agent,), models=OPENAI_MODELS)
    planned_b = plan_runs(14, seed=1, error_rate=0.2, **common)
    planned_c = plan_runs(11, seed=2, error_rate=0.35, slow=1.6, **common)
    t0 = time.perf_counter()
    spans_b = _record({"service.name": "checkout-bot", "service.version": "1.0.0"}, planned_b, _pipeline(fd, mapping))
    spans_c = _record(
        {"service.name": "checkout-bot", "service.version": "2.0.0", "flightdeck.release_id": candidate},
        planned_c,
        _pipeline(fd, mapping),
    )
    elapsed = time.perf_counter() - t0
    print(f"\nFlightDeck path: {len(planned_b) + len(planned_c)} runs in {elapsed:.2f}s")

    assert len(fd.runs(baseline)) == len(planned_b) and len(fd.runs(candidate)) == len(planned_c)
    diff = fd.diff(baseline, candidate)
    m = diff["metrics"]
    for side, planned in (("baseline", planned_b), ("candidate", planned_c)):
        want = _expected(planned)
        assert m[f"{side}_cost_per_run_usd"] == pytest.approx(want["cost_per_run"], rel=1e-9)
        assert m[f"{side}_latency_ms_avg"] == pytest.approx(want["latency"], rel=1e-9)
        assert m[f"{side}_error_rate"] == pytest.approx(want["error_rate"], rel=1e-9)
    assert diff["samples"]["baseline_runs"] == len(planned_b) and diff["samples"]["candidate_runs"] == len(planned_c)

    # A collector replay of the same spans (the OTLP path) produces the same run ids: nothing changes.
    replay = _pipeline(fd, mapping)
    replay.submit_spans(span_from_sdk(s) for s in [*spans_b, *spans_c])
    replay.shutdown(10)
    assert replay.exporters["flightdeck"].stats()["sent"] == len(planned_b) + len(planned_c)
    assert len(fd.runs(baseline)) == len(planned_b) and len(fd.runs(candidate)) == len(planned_c)
    assert fd.diff(baseline, candidate)["metrics"] == m


def test_real_instrumentation_fixtures_become_runs(flightdeck_server):
    """Each committed fixture (replayed, shifted to now) is one run with the chat calls' usage, cached tokens apart."""
    fd = flightdeck_server
    release = fd.register_release("support-agent", "gpt-4o-mini-2024-07-18", f"fixtures-{uuid.uuid4().hex[:6]}")
    mapping = FlightDeckMapping(release_map={"support-bot@1.4.0": release}, tenant_id="tenant_test")
    pipeline = _pipeline(fd, mapping)
    names = sorted(REFERENCE_FIXTURES)
    for name in names:
        spans, _ = read_otlp_file(FIXTURES / f"{name}.traces.pb")
        shift = time.time_ns() - 60_000_000_000 - max(s.end_ns for s in spans)
        for s in spans:
            s.start_ns, s.end_ns = s.start_ns + shift, s.end_ns + shift
        pipeline.submit_spans(spans)
    pipeline.shutdown(10)
    runs = {
        r["request"]["trace_id"] if r.get("request") else r["run_id"]: r
        for r in fd.runs(release, environment="staging")
    }
    assert len(runs) == len(names)
    for r in runs.values():
        usage = r["usage"]["model"]
        assert usage["model"] == "gpt-4o-mini-2024-07-18" and usage["provider"] == "openai"
        assert usage["input_tokens"] + usage["cached_input_tokens"] == 1083 and usage["output_tokens"] == 136
        assert usage["cached_input_tokens"] in (0, 768)  # 0 where the library does not report cache reads
        assert r["usage"]["tools"] == [{"tool_name": "get_weather", "invocations": 1, "cost_units": 0.0}]
        assert r["environment"] == "staging" and r["metrics"]["success"] is True
        assert (
            r["labels"]["service.name"] == "support-bot"
            and r["labels"]["models"] == "fail-model,gpt-4o-2024-08-06,gpt-4o-mini-2024-07-18"
        )


def test_one_invalid_event_does_not_stop_the_batch(flightdeck_server, tmp_path):
    fd = flightdeck_server
    agent = f"fd-bad-{uuid.uuid4().hex[:6]}"
    release = fd.register_release(agent, "gpt-4o-mini")
    from flightdeck_server import make_run_event

    good = [
        make_run_event(
            release_id=release, agent_id=agent, model="gpt-4o-mini", input_tokens=10, output_tokens=5, latency_ms=100
        )
        for _ in range(6)
    ]
    bad = make_run_event(release_id=release, agent_id=agent, model="gpt-4o-mini", input_tokens=10, output_tokens=-5)
    dead = tmp_path / "dead.jsonl"
    pipeline = _pipeline(fd, FlightDeckMapping(), dead_letter=dead)
    pipeline.exporters["flightdeck"].offer_many([*good[:3], bad, *good[3:]])
    pipeline.shutdown(10)
    assert {r["run_id"] for r in fd.runs(release)} == {e["run_id"] for e in good}
    lines = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [line["item"]["run_id"] for line in lines] == [bad["run_id"]]
    assert "output_tokens" in lines[0]["error"]
    stats = pipeline.exporters["flightdeck"].stats()
    assert stats["sent"] == 6 and stats["failed"] == 1


def test_opentelemetry_instrument_flightdeck_entry_point(flightdeck_server):
    """``--traces_exporter flightdeck`` with env configuration alone: the app's runs reach the real server."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    fd = flightdeck_server
    release = fd.register_release("app-agent", "gpt-4o-mini", f"instrument-{uuid.uuid4().hex[:6]}")
    env = {**os.environ, "FLIGHTDECK_BASE_URL": fd.base_url, "FLIGHTDECK_RELEASE_ID": release, "OTEL_SERVICE_NAME": "instrumented-app",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}  # fmt: skip
    app = Path(__file__).parent / "apps" / "instrumented_app.py"
    cmd = [
        str(Path(sys.executable).parent / "opentelemetry-instrument"),
        "--traces_exporter",
        "flightdeck",
        sys.executable,
        str(app),
        "4",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runs = fd.runs(release)
    assert len(runs) == 4 and {r["agent_id"] for r in runs} == {"app-agent"}
    assert all(r["labels"]["service.name"] == "instrumented-app" for r in runs)
