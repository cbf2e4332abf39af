"""The Observatory path with real parts: fixtures replayed, an app under ``opentelemetry-instrument``, a dead sink."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, REFERENCE_FIXTURES
from opentelemetry.sdk.trace import TracerProvider

import otel_bridge
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.inspect import agent_spans, read_otlp_file
from otel_bridge.pipeline import Pipeline, PipelineOptions

NAMES = sorted(REFERENCE_FIXTURES)
CHATS = [
    ("user", "What's the weather in Paris?"),
    ("assistant", "It is 18°C and partly cloudy in Paris right now."),
    ("user", "Say goodbye to a traveller going to Paris."),
    ("assistant", "Have a great day in Paris!"),
    ("user", "This call fails."),
]


def _pipeline(sink, **options) -> Pipeline:
    exporter = BatchExporter(ObservatorySender(sink.url, sink.api_key), interval=0.1)
    return Pipeline({"observatory": exporter}, PipelineOptions(wait=0.05, max_wait=0.5, **options))


@pytest.mark.parametrize("name", NAMES)
def test_fixture_events(name, observatory_sink):
    files = [FIXTURES / f"{name}.traces.pb", *[p for p in [FIXTURES / f"{name}.logs.pb"] if p.exists()]]
    pipeline = _pipeline(observatory_sink, app_id="app-fixtures")
    for path in files:
        spans, logs = read_otlp_file(path)
        pipeline.submit_logs(logs)
        pipeline.submit_spans(spans)
    pipeline.shutdown(10)
    events = observatory_sink.events
    expected = {a.run_id: a for a in agent_spans(files)}
    runs = [e for e in events if e["type"] not in ("chat", "feedback", "saved")]
    assert sorted(e["name"] for e in runs) == sorted(
        f"{a.kind}_{p}" for a in expected.values() for p in ("start", "end")
    )
    for e in runs:
        a = expected[e["run_id"]]
        assert e["app_id"] == "app-fixtures" and e["metadata"]["trace_id"] == a.trace_id
        assert e["parent_run_id"] == (
            expected_parent := (
                None if a.kind == "agent" else next(x.run_id for x in expected.values() if x.kind == "agent")
            )
        )
        assert e["metadata"]["agent"] == "support-agent" or e["metadata"]["agent"] == "agent_support_v1", (
            expected_parent
        )
        if e["name"] == "llm_end":
            assert (e["prompt_tokens"], e["completion_tokens"]) == (a.input_tokens or 0, a.output_tokens or 0)
            assert e["model"] == a.model and e["status"] == ("error" if a.error else "success")
            assert e.get("cached_tokens") == (a.cached_input_tokens or None)
    chats = [(e["role"], e["content"]) for e in events if e["name"] == "chat"]
    content = json.loads((FIXTURES / f"{name}.expected.json").read_text())["content_captured"]
    assert chats == (CHATS if content else [])  # one event per turn, never the history again
    assert {e["thread_id"] for e in events if e["name"] == "chat"} <= {"conv_fixture_0001"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_instrumented(url: str, key: str, n: int = 3, timeout: float = 60, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FLOWX_OBSERVATORY_API_URL": url,
        "FLOWX_OBSERVATORY_API_KEY": key,
        "OTEL_SERVICE_NAME": "instrumented-app",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    cmd = [
        str(Path(sys.executable).parent / "opentelemetry-instrument"),
        "--traces_exporter",
        "observatory",
        sys.executable,
        str(Path(__file__).parent / "apps" / "instrumented_app.py"),
        str(n),
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_opentelemetry_instrument_with_env_configuration_alone(observatory_sink):
    done = _run_instrumented(observatory_sink.url, observatory_sink.api_key, 3, 60, "--feedback")
    assert done.returncode == 0, done.stderr
    feedback = [e for e in observatory_sink.events if e["name"] == "feedback"]
    assert [(e["run_id"], e["rating"], e["comment"]) for e in feedback] == [("run-from-app", "positive", "great")]
    names = [e["name"] for e in observatory_sink.events]
    assert names.count("agent_start") == 3 and names.count("agent_end") == 3
    assert names.count("llm_end") == names.count("llm_start") >= 3
    assert {e["metadata"]["service.name"] for e in observatory_sink.events if e["type"] != "feedback"} == {
        "instrumented-app"
    }


def test_dead_sink_costs_the_app_nothing(observatory_sink):
    """With the sink down for the whole test the app thread's per-span time stays put and the app exits cleanly."""

    def per_span(url: str) -> float:
        provider = TracerProvider()
        pipeline = _pipeline(type("S", (), {"url": url, "api_key": observatory_sink.api_key}))
        otel_bridge.install(provider, pipeline=pipeline, shutdown_timeout=1.0)
        tracer = provider.get_tracer("t")
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10}
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(2000):
                with tracer.start_as_current_span("chat gpt-4o", attributes=attrs):
                    pass
            best = min(best, (time.perf_counter() - t0) / 2000)
        provider.shutdown()
        return best

    up = per_span(observatory_sink.url)
    dead_url = f"http://127.0.0.1:{_free_port()}"
    down = per_span(dead_url)
    print(f"\nper-span app time: sink up {up * 1e6:.1f} us, sink down {down * 1e6:.1f} us")
    assert down < up * 2 + 20e-6
    t0 = time.perf_counter()
    done = _run_instrumented(dead_url, "k", n=5)
    assert done.returncode == 0 and "app done" in done.stdout, done.stderr
    assert time.perf_counter() - t0 < 45  # shutdown gives up on the dead sink within its deadline
    observatory_sink.events.clear()
