"""The in-process path end to end: real SDK spans → BridgeSpanProcessor → strict Observatory sink."""

from __future__ import annotations

import json
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

import otel_bridge
from otel_bridge.pipeline import PipelineOptions, build_inprocess


def _provider() -> TracerProvider:
    return TracerProvider(
        resource=Resource.create(
            {"service.name": "support-bot", "service.version": "2.0.0", "deployment.environment.name": "prod"}
        )
    )


def _messages(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in pairs])


def _chat(tracer, history, reply, tokens=(100, 20, 40), extra=None):
    attrs = {
        **(extra or {}),
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.cache_read.input_tokens": tokens[1],
        "gen_ai.usage.output_tokens": tokens[2],
        "gen_ai.input.messages": _messages(*history),
        "gen_ai.output.messages": _messages(("assistant", reply)),
    }
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attrs):
        pass


def _install(sink, **kwargs):
    provider = _provider()
    pipeline = build_inprocess(
        observatory_url=sink.url,
        observatory_api_key=sink.api_key,
        only=("observatory",),
        options=PipelineOptions(wait=0.05, max_wait=1),
    )
    processor = otel_bridge.install(provider, pipeline=pipeline)
    return provider, processor


def test_agent_run_events_start_before_end_and_parents(observatory_sink):
    provider, processor = _install(observatory_sink)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "user.email": "ann@example.com",
        },
    ) as agent:
        _chat(tracer, [("user", "hi")], "hello")
        with tracer.start_as_current_span(
            "execute_tool lookup", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "boom"))
        processor.force_flush()
        started = [e["name"] for e in observatory_sink.events]
        assert "agent_start" in started and "agent_end" not in started  # live status: the agent shows as started
    provider.shutdown()
    events = observatory_sink.events
    names = [e["name"] for e in events]
    assert names.count("agent_start") == 1 and names.count("agent_end") == 1
    assert names.index("agent_start") < names.index("llm_start") < names.index("llm_end") < names.index("agent_end")
    by = {e["name"]: e for e in events}
    agent_run = by["agent_start"]["run_id"]
    assert by["agent_start"]["parent_run_id"] is None
    assert by["llm_end"]["parent_run_id"] == agent_run and by["tool_end"]["parent_run_id"] == agent_run
    assert by["llm_end"]["run_id"] == by["llm_start"]["run_id"]
    assert (by["llm_end"]["prompt_tokens"], by["llm_end"]["completion_tokens"], by["llm_end"]["total_tokens"]) == (
        100,
        40,
        140,
    )
    assert by["llm_end"]["cached_tokens"] == 20 and by["llm_end"]["model"] == "gpt-4o-mini-2024-07-18"
    assert by["tool_end"]["status"] == "error" and by["tool_end"]["error"]["message"] == "boom"
    assert by["llm_end"]["metadata"]["agent"] == "support"  # inherited from the agent span
    assert by["llm_end"]["metadata"]["user_email"] == "ann@example.com"
    assert by["agent_end"]["metadata"]["service.name"] == "support-bot"
    assert by["agent_end"]["metadata"]["deployment.environment"] == "prod"
    assert by["agent_end"]["metadata"]["trace_id"] == format(agent.get_span_context().trace_id, "032x")


def test_chat_events_are_not_repeated_across_a_three_turn_conversation(observatory_sink):
    provider, _ = _install(observatory_sink)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "gen_ai.conversation.id": "conv-42",
        },
    ):
        history = [("system", "be nice")]
        for turn, reply in (("hi", "hello!"), ("weather?", "sunny"), ("thanks", "you're welcome")):
            history.append(("user", turn))
            _chat(tracer, history, reply)
            history.append(("assistant", reply))
    provider.shutdown()
    chats = [(e["role"], e["content"], e.get("thread_id")) for e in observatory_sink.events if e["name"] == "chat"]
    assert chats == [
        ("user", "hi", "conv-42"),
        ("assistant", "hello!", "conv-42"),
        ("user", "weather?", "conv-42"),
        ("assistant", "sunny", "conv-42"),
        ("user", "thanks", "conv-42"),
        ("assistant", "you're welcome", "conv-42"),
    ]


def test_feedback_and_saved_from_track_event_and_span_events(observatory_sink):
    provider, _ = _install(observatory_sink)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span(
        "invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}
    ) as span:
        otel_bridge.track_event("saved")
        span.add_event("feedback", {"rating": "negative", "comment": "slow"})
    otel_bridge.track_event("feedback", run_id="run-123", rating="positive", comment="great")
    provider.shutdown()
    time.sleep(0)
    custom = {
        e["name"] + ":" + e.get("rating", ""): e for e in observatory_sink.events if e["type"] in ("feedback", "saved")
    }
    agent_run = next(e["run_id"] for e in observatory_sink.events if e["name"] == "agent_end")
    assert custom["saved:"]["run_id"] == agent_run
    assert custom["feedback:negative"]["run_id"] == agent_run and custom["feedback:negative"]["comment"] == "slow"
    assert custom["feedback:positive"]["run_id"] == "run-123"


def test_sdk_entry_point_is_built_from_the_packaged_config(observatory_sink, monkeypatch):
    """``--traces_exporter observatory`` takes its URL, key and app id the way serve does: the packaged config's
    ``${env:...}``; the pipeline is ``pipeline.build`` of that config with only this destination on."""
    monkeypatch.setenv("FLOWX_OBSERVATORY_API_URL", observatory_sink.url)
    monkeypatch.setenv("FLOWX_OBSERVATORY_API_KEY", observatory_sink.api_key)
    monkeypatch.setenv("FLOWX_OBSERVATORY_APP_ID", "app-from-env")
    monkeypatch.setenv("FLIGHTDECK_BASE_URL", "http://127.0.0.1:9")  # on in the config, off for this entry point
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = otel_bridge.ObservatorySpanExporter()
    assert list(exporter._pipeline.exporters) == ["observatory"]
    assert exporter._pipeline.options.app_id == "app-from-env"
    provider = _provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _chat(provider.get_tracer("app"), [("user", "hi")], "hello")
    provider.shutdown()
    ends = [e for e in observatory_sink.events if e["name"] == "llm_end"]
    assert len(ends) == 1 and ends[0]["app_id"] == "app-from-env"


def test_inprocess_dead_letters_are_opt_in(observatory_sink, tmp_path):
    """No spool in-process: dead letters only with ``dead_letter`` or a ``data_dir`` (then serve's default path)."""
    plain = build_inprocess(observatory_url=observatory_sink.url, only=("observatory",))
    in_dir = build_inprocess(observatory_url=observatory_sink.url, only=("observatory",), data_dir=str(tmp_path))
    try:
        assert plain.exporters["observatory"]._dead_letter is None
        assert in_dir.exporters["observatory"]._dead_letter is not None
        assert (tmp_path / "dead-letters").is_dir()
    finally:
        plain.shutdown(1.0)
        in_dir.shutdown(1.0)
