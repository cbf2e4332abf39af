"""Every real-instrumentation fixture, read from protobuf and from OTLP/JSON, gives exactly what the fake server
produced (``<name>.expected.json``, written by the server, not read back from the spans)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, REFERENCE_FIXTURES  # noqa: E402

from otel_bridge.inspect import agent_spans
from otel_bridge.processors.runs import assemble
from otel_bridge.semconv import AgentSpan

NAMES = sorted(REFERENCE_FIXTURES)

# What each library reports of the usage block the server sent (checked against the library's own output):
# the official openai-v2 instrumentation has no cached/reasoning token attributes; OpenLLMetry leaves reasoning
# off streamed spans.
REPORTS = {
    "openai_v2": {"cached": False, "reasoning": False, "content": False},
    "openai_v2_content": {"cached": False, "reasoning": False, "content": True},
    "openai_v2_prev": {"cached": False, "reasoning": False, "content": True},
    "openinference": {"cached": True, "reasoning": True, "content": True},
    "openllmetry": {"cached": True, "reasoning": "not-streamed", "content": True},
}


def _files(name: str, suffix: str) -> list[Path]:
    files = [FIXTURES / f"{name}.traces.{suffix}"]
    logs = FIXTURES / f"{name}.logs.{suffix}"
    return files + ([logs] if logs.exists() else [])


def _spans(name: str, suffix: str = "pb") -> list[AgentSpan]:
    return sorted(agent_spans(_files(name, suffix)), key=lambda a: a.span.start_ns)


def test_every_fixture_is_covered():
    assert set(NAMES) == set(REPORTS), "a fixture without expectations, or expectations without a fixture"


@pytest.mark.parametrize("name", NAMES)
def test_protobuf_and_json_agree(name):
    assert [a.as_dict() for a in _spans(name, "pb")] == [a.as_dict() for a in _spans(name, "json")]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("suffix", ["pb", "json"])
def test_calls_match_what_the_server_produced(name, suffix):
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    reports = REPORTS[name]
    spans = _spans(name, suffix)
    calls = [a for a in spans if a.kind in ("llm", "embedding")]
    assert len(calls) == len(expected["calls"])
    for a, call in zip(calls, expected["calls"], strict=True):
        assert a.kind == ("embedding" if call["operation"] == "embeddings" else "llm")
        assert a.provider == call["provider"]
        assert a.model == (call["response_model"] or call["request_model"])
        assert a.input_tokens == call["prompt_tokens"]
        if call["operation"] == "chat":
            assert a.output_tokens == call["completion_tokens"]
            cached = call["cached_tokens"] if reports["cached"] else None
            assert a.cached_input_tokens == cached
            reasoning = reports["reasoning"] is True or (
                reports["reasoning"] == "not-streamed" and not call["streamed"]
            )
            assert a.reasoning_tokens == (call["reasoning_tokens"] if reasoning and call["error"] is None else None)
        assert a.error == (call["error"] is not None)
        if call["error"] is not None:
            assert a.error_type in ("InternalServerError", "openai.InternalServerError")


@pytest.mark.parametrize("name", NAMES)
def test_agent_tool_and_context(name):
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    spans = _spans(name)
    counts = expected["counts"]
    kinds = [a.kind for a in spans]
    assert kinds.count("agent") == counts["agent_spans"] and kinds.count("tool") == counts["tool_spans"]
    assert kinds.count("embedding") == counts["embedding_spans"] and kinds.count("llm") == counts["llm_spans"]
    tools = [(a.tool_name, a.tool_call_id) for a in spans if a.kind == "tool"]
    assert tools == [(t["name"], t["call_id"]) for t in expected["tool_calls"]]
    agent = expected["agent"]
    for a in spans:  # context on the agent span applies to its descendants
        assert a.agent == agent["name"] or a.agent == agent["id"]
        assert (a.conversation_id or a.session_id) == agent["conversation_id"]
        assert a.service_name == expected["resource"]["service.name"]
        assert a.environment == expected["resource"]["deployment.environment.name"]
        assert a.skipped == []


@pytest.mark.parametrize("name", NAMES)
def test_run_sums_llm_spans_only(name):
    """One run per fixture; its usage is the chat calls' (never the agent span's own token attributes on top)."""
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    spans = _spans(name)
    runs = assemble({a.span_id: a for a in spans})
    assert len(runs) == 1
    run = runs[0]
    assert run.root.kind == "agent" and len(run.spans) == len(spans)
    totals = expected["totals"]
    assert run.total("input_tokens") == totals["chat_prompt_tokens"]
    assert run.total("output_tokens") == totals["chat_completion_tokens"]
    assert run.tools == {"get_weather": 1}
    assert run.dominant_model.model == "gpt-4o-mini-2024-07-18"
    if expected["agent_span_usage"]:  # the framework also put the run's total on the agent span
        assert run.root.input_tokens == totals["chat_prompt_tokens"]


@pytest.mark.parametrize("name", [n for n in NAMES if REPORTS[n]["content"]])
def test_messages_from_attributes_events_or_logs(name):
    spans = [a for a in _spans(name) if a.kind == "llm"]
    first, second = spans[0], spans[1]
    assert [m.role for m in first.input_messages] == ["system", "user"]
    assert first.input_messages[1].content == "What's the weather in Paris?"
    assert [c.name for c in first.output_messages[0].tool_calls] == ["get_weather"]
    assert second.input_messages[-1].role == "tool"
    assert "Paris" in second.output_messages[0].content


@pytest.mark.parametrize("name", NAMES)
def test_inspect_cli_json(name):
    out = subprocess.run(
        [sys.executable, "-m", "otel_bridge.cli", "inspect", "--json", *map(str, _files(name, "pb"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert len(rows) == json.loads((FIXTURES / f"{name}.expected.json").read_text())["counts"]["total_spans"]
    for key in (
        "trace_id",
        "span_id",
        "parent_span_id",
        "kind",
        "name",
        "agent",
        "model",
        "provider",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "latency_ms",
        "status",
        "error_type",
    ):
        assert all(key in r for r in rows)
    assert {r["status"] for r in rows} == {"ok", "error"}


def test_inspect_table_and_bad_files(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "otel_bridge.cli", "inspect", str(FIXTURES / "openinference.traces.json")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "ChatCompletion" in ok.stdout
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xff\xff not protobuf")
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceSpans": [')
    for path, needle in ((bad, "protobuf"), (broken, "JSON"), (tmp_path / "missing.pb", "cannot read")):
        r = subprocess.run(
            [sys.executable, "-m", "otel_bridge.cli", "inspect", str(path)], capture_output=True, text=True
        )
        assert r.returncode == 2, r
        assert str(path) in r.stderr and needle in r.stderr
