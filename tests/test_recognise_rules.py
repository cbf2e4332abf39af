"""The issue-9 rules of the recogniser, one at a time, on synthetic attribute sets: unknown operation names,
framework operation names, token spellings with total_tokens deciding inclusive vs exclusive, spans without an
operation name, framework ≠ provider, the Vercel AI SDK's ``ai.*``, one model call billed once, ``--explain``
and the /metrics counter of unknown operation names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from otel_bridge.billing import bill_once
from otel_bridge.inspect import explanations, ignored_attributes
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.processors.runs import assemble
from otel_bridge.semconv import recognise, unknown_operations
from otel_bridge.semconv_tables import GENAI_OPERATION_KIND, VERCEL_OPERATION_KIND
from otel_bridge.server.metrics import metrics_text
from otel_bridge.spans import STATUS_ERROR, BridgeSpan, SpanEvent, spans_from_otlp_json

T = "cd" * 16
FIXTURES = Path(__file__).parent / "fixtures" / "otlp"


def bspan(sid: str, parent: str | None, attrs: dict, *, name: str = "", error: bool = False, scope: str = "",
          events: list | None = None) -> BridgeSpan:  # fmt: skip
    return BridgeSpan(T, sid.rjust(16, "0"), parent.rjust(16, "0") if parent else None, name or sid, 1, 0, 1_000_000,
                      STATUS_ERROR if error else 0, "boom" if error else "", attrs, events or [],
                      {"service.name": "svc"}, scope_name=scope)  # fmt: skip


def rec(attrs: dict, **kw):  # noqa: ANN003, ANN201
    return recognise(bspan("1", None, attrs, **kw))


def trace(*spans: BridgeSpan) -> dict:
    agents = [recognise(s) for s in spans]
    return {a.span_id: a for a in agents}


# ------------------------------------------------------------------------------- 1. operation names


@pytest.mark.parametrize(("op", "extra", "kind"), [
    ("frobnicate_v9", {}, "chain"),
    ("frobnicate_v9", {"gen_ai.agent.name": "OpenAI Agent"}, "chain"),  # a default name stamped on every span
    ("unknown", {"gen_ai.agent.name": "OpenAI Agent", "gen_ai.agent.id": "agent"}, "chain"),
    ("invoke_crew_v9", {"gen_ai.agent.name": "planner"}, "agent"),
    ("invoke_crew_v9", {}, "chain"),
    ("frobnicate_v9", {"gen_ai.tool.name": "lookup", "gen_ai.tool.call.id": "c1"}, "tool"),
])  # fmt: skip
def test_unknown_operation_is_never_llm_and_is_counted(op, extra, kind):
    before = unknown_operations().get(op, 0)
    a = rec({"gen_ai.operation.name": op, "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2, **extra})  # fmt: skip
    assert (a.kind, a.operation) == (kind, op)
    assert unknown_operations()[op] == before + 1


@pytest.mark.parametrize(("op", "kind"), [
    ("handoff", "chain"), ("agent_handoff", "chain"), ("guardrail", "chain"), ("guardrail_check", "chain"),
    ("execute_event_loop_cycle", "chain"), ("invoke_swarm", "chain"), ("invoke_graph", "chain"),
    ("agent_step", "chain"), ("plan", "chain"), ("search_memory", "retriever"), ("create_memory", "chain"),
    ("chat.completions", "llm"), ("chat.streaming_completions", "llm"), ("text.completions", "llm"),
    ("generate_content", "llm"), ("text_completion", "llm"), ("embeddings", "embedding"), ("rerank", "retriever"),
])  # fmt: skip
def test_framework_operation_names(op, kind):
    before = unknown_operations().get(op, 0)
    a = rec({"gen_ai.operation.name": op, "gen_ai.system": "strands-agents"})
    assert (a.kind, a.operation) == (kind, op)
    assert unknown_operations().get(op, 0) == before  # known: not counted


def test_every_table_kind_is_a_kind():
    from otel_bridge.semconv import KINDS

    assert set(GENAI_OPERATION_KIND.values()) | set(VERCEL_OPERATION_KIND.values()) <= set(KINDS)


@pytest.mark.parametrize(("op", "root"), [("invoke_swarm", True), ("invoke_graph", True), ("execute_event_loop_cycle", False),
                                          ("handoff", False)])  # fmt: skip
def test_multi_agent_orchestrations_start_runs(op, root):
    a = rec({"gen_ai.operation.name": op, "gen_ai.agent.name": "swarm"})
    assert a.is_run_root_kind is root
    assert (a.workflow_name == "swarm") is root


# ------------------------------------------------------------------------------- 2. token spellings


@pytest.mark.parametrize(("attrs", "want"), [
    # Strands on Bedrock: input exclusive of cache, total = all four (the heuristic alone would keep 2000)
    ({"gen_ai.usage.input_tokens": 2000, "gen_ai.usage.cache_read_input_tokens": 300,
      "gen_ai.usage.cache_write_input_tokens": 900, "gen_ai.usage.output_tokens": 50, "gen_ai.usage.total_tokens": 3250},
     {"input_tokens": 3200, "cached_input_tokens": 300, "cache_write_tokens": 900, "output_tokens": 50}),
    # the same parts reported inclusive: total says so
    ({"gen_ai.usage.input_tokens": 3200, "gen_ai.usage.cache_read_input_tokens": 300,
      "gen_ai.usage.cache_write_input_tokens": 900, "gen_ai.usage.output_tokens": 50, "gen_ai.usage.total_tokens": 3250},
     {"input_tokens": 3200, "output_tokens": 50}),
    # a small exclusive input the heuristic catches without a total
    ({"gen_ai.usage.input_tokens": 20, "gen_ai.usage.cache_write_input_tokens": 900, "gen_ai.usage.output_tokens": 5},
     {"input_tokens": 920, "cache_write_tokens": 900}),
    # current semconv spellings
    ({"gen_ai.usage.input_tokens": 500, "gen_ai.usage.cache_creation.input_tokens": 100,
      "gen_ai.usage.cache_read.input_tokens": 200, "gen_ai.usage.output_tokens": 9},
     {"input_tokens": 500, "cached_input_tokens": 200, "cache_write_tokens": 100}),
    # ADK before 2.3: output holds only the visible part, reasoning under the experimental key
    ({"gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 30,
      "gen_ai.usage.experimental.reasoning_tokens": 12}, {"output_tokens": 42, "reasoning_tokens": 12}),
    # ... unless a total says the output already includes it
    ({"gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 42, "gen_ai.usage.total_tokens": 542,
      "gen_ai.usage.experimental.reasoning_tokens": 12}, {"output_tokens": 42, "reasoning_tokens": 12}),
    # Gemini-style total = prompt + candidates + thoughts decides exclusive reasoning on a current key too
    ({"gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 30, "gen_ai.usage.total_tokens": 542,
      "gen_ai.usage.reasoning.output_tokens": 12}, {"output_tokens": 42}),
    # pydantic-ai details
    ({"gen_ai.usage.input_tokens": 70, "gen_ai.usage.output_tokens": 40, "gen_ai.usage.details.reasoning_tokens": 16,
      "gen_ai.usage.details.cache_read_tokens": 64}, {"reasoning_tokens": 16, "cached_input_tokens": 64, "output_tokens": 40}),
    # Vercel: camelCase, a string count
    ({"ai.usage.inputTokens": 120, "ai.usage.outputTokens": 30, "ai.usage.cachedInputTokens": "64",
      "ai.usage.reasoningTokens": 8, "ai.usage.totalTokens": 150},
     {"input_tokens": 120, "cached_input_tokens": 64, "output_tokens": 30, "reasoning_tokens": 8}),
    ({"ai.usage.promptTokens": 12, "ai.usage.completionTokens": 3}, {"input_tokens": 12, "output_tokens": 3}),
])  # fmt: skip
def test_token_spellings_and_the_total_check(attrs, want):
    a = rec({"gen_ai.operation.name": "chat", **attrs})
    assert {k: getattr(a, k) for k in want} == want
    assert a.skipped == []


def test_explain_says_how_tokens_were_read():
    a = rec({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 50,
             "gen_ai.usage.cache_read_input_tokens": 300, "gen_ai.usage.total_tokens": 2350})  # fmt: skip
    (e,) = explanations([a])
    assert e["token_rule"] == "total: input exclusive of cache"
    assert e["tokens"]["cache read"] == {"value": 300, "from": "gen_ai.usage.cache_read_input_tokens=300"}


# ------------------------------------------------------------------------------- 3. no operation name

PYDANTIC_AGENT = {"gen_ai.agent.name": "support", "agent_name": "support", "model_name": "gpt-4o",
                  "gen_ai.usage.input_tokens": 900, "gen_ai.usage.output_tokens": 80}  # fmt: skip
PYDANTIC_TOOL = {"gen_ai.tool.name": "get_weather", "gen_ai.tool.call.id": "call_1", "tool_arguments": "{}"}
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 400, "gen_ai.usage.output_tokens": 40}  # fmt: skip


def test_agent_and_tool_spans_without_operation_name():
    exc = SpanEvent("exception", 5, {"exception.type": "ValueError", "exception.message": "city unknown"})
    spans = trace(
        bspan("1", None, PYDANTIC_AGENT, name="agent run"),
        bspan("2", "1", CHAT | {"gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 40}),
        bspan("3", "1", PYDANTIC_TOOL, name="running tool", error=True, events=[exc]),
        bspan("4", "1", CHAT),
    )
    agent, tool = spans["1".rjust(16, "0")], spans["3".rjust(16, "0")]
    assert (agent.kind, agent.agent_name, agent.is_run_root_kind) == ("agent", "support", True)
    assert (tool.kind, tool.tool_name, tool.tool_call_id) == ("tool", "get_weather", "call_1")
    assert (tool.error, tool.error_type, tool.error_message) == (True, "ValueError", "boom")
    (run,) = assemble(spans)
    assert run.tools == {"get_weather": 1}
    # the agent span's aggregated usage is not billed again
    assert (run.total("input_tokens"), run.total("output_tokens")) == (900, 80)
    assert [u.calls for u in run.models] == [2]


# ------------------------------------------------------------------------------- 4. framework ≠ provider


@pytest.mark.parametrize(("attrs", "scope", "provider", "framework"), [
    ({"gen_ai.system": "gcp.vertex.agent", "llm.provider": "google", "openinference.span.kind": "LLM",
      "llm.model_name": "gemini-2.5-flash"}, "", "gcp.gemini", "google-adk"),
    ({"gen_ai.system": "gcp.vertex.agent", "gen_ai.request.model": "gemini-2.5-flash"}, "", "gcp.gemini", "google-adk"),
    ({"gen_ai.operation.name": "chat", "gen_ai.system": "strands-agents",
      "gen_ai.request.model": "us.anthropic.claude-sonnet-4-20250514-v1:0"}, "", "aws.bedrock", "strands-agents"),
    ({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "strands-agents", "gen_ai.request.model": "gpt-4o"},
     "", "openai", "strands-agents"),
    ({"gen_ai.operation.name": "chat", "gen_ai.system": "strands-agents", "gen_ai.request.model": "my-finetune"},
     "", None, "strands-agents"),
    ({"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "claude-x"},
     "pydantic-ai", "openai", "pydantic-ai"),  # a named provider is never second-guessed from the model
    ({"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic"}, "strands.telemetry.tracer", "anthropic",
     "strands-agents"),
])  # fmt: skip
def test_framework_is_not_a_provider(attrs, scope, provider, framework):
    a = rec(attrs, scope=scope)
    assert (a.kind, a.provider, a.framework) == ("llm", provider, framework)


# ------------------------------------------------------------------------------- 5. Vercel AI SDK


def test_vercel_ai_sdk_trace():
    base = {"ai.model.id": "gpt-4o-mini", "ai.model.provider": "openai.chat", "ai.telemetry.functionId": "weather"}
    step = {
        **base,
        "ai.operationId": "ai.generateText.doGenerate",
        "operation.name": "ai.generateText.doGenerate",
        "gen_ai.system": "openai.chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "ai.response.model": "gpt-4o-mini-2024-07-18",
        "ai.usage.inputTokens": 100,
        "ai.usage.outputTokens": 20,
    }
    spans = trace(
        bspan("1", None, {**base, "ai.operationId": "ai.generateText", "ai.usage.inputTokens": 250,
                          "ai.usage.outputTokens": 50, "ai.usage.cachedInputTokens": "64"}, name="ai.generateText"),
        bspan("2", "1", step, name="ai.generateText.doGenerate"),
        bspan("3", "1", {**base, "ai.operationId": "ai.toolCall", "ai.toolCall.name": "get_weather",
                         "ai.toolCall.id": "call_9"}, name="ai.toolCall"),
        bspan("4", "1", step | {"ai.usage.inputTokens": 150, "ai.usage.outputTokens": 30}),
    )  # fmt: skip
    root, call, tool = (spans[s.rjust(16, "0")] for s in "123")
    assert (root.kind, root.agent_name, root.cached_input_tokens) == ("agent", "weather", 64)
    assert (call.kind, call.model, call.request_model, call.provider) == (
        "llm",
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-mini",
        "openai",
    )
    assert (tool.kind, tool.tool_name, tool.tool_call_id) == ("tool", "get_weather", "call_9")
    (run,) = assemble(spans)
    assert (run.root is root, run.total("input_tokens"), run.total("output_tokens")) == (True, 250, 50)
    assert run.models[0].calls == 2 and run.tools == {"get_weather": 1}


# ------------------------------------------------------------------------------- 6. one model call, one bill

ADK_CALL = {"gen_ai.system": "gcp.vertex.agent", "gen_ai.request.model": "gemini-2.5-flash",
            "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 30}  # fmt: skip
GENAI_CALL = {"gen_ai.operation.name": "generate_content", "gen_ai.system": "gemini",
              "gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 300,
              "gen_ai.usage.output_tokens": 30}  # fmt: skip


def test_a_framework_llm_span_wrapping_the_provider_span_is_a_step():
    spans = trace(
        bspan("1", None, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}),
        bspan("2", "1", ADK_CALL, name="call_llm"),
        bspan("3", "2", GENAI_CALL, name="generate_content gemini-2.5-flash"),
        bspan("4", "1", ADK_CALL, name="call_llm"),  # no provider span under it: billed itself
    )
    outer, inner, alone = (spans[s.rjust(16, "0")] for s in "234")
    (run,) = assemble(spans)
    assert (outer.kind, outer.billed_in) == ("chain", inner.span_id)
    assert (outer.operation, outer.input_tokens, outer.provider) == (
        None,
        300,
        "gcp.gemini",
    )  # figures kept, not billed
    assert (inner.kind, inner.billed_in, inner.framework) == ("llm", None, "google-adk")
    assert alone.kind == "llm" and alone.provider == "gcp.gemini"
    assert (run.models[0].calls, run.total("input_tokens"), run.total("output_tokens")) == (2, 600, 60)
    e = {x["span_id"]: x for x in explanations(list(spans.values()))}
    assert e[outer.span_id]["billed"] == f"no: a step wrapping the model call billed in span {inner.span_id}"
    assert e[inner.span_id]["billed"] == f"yes (the call wrapped by span {outer.span_id})"
    assert assemble(spans)[0].models[0].calls == 2  # deciding again changes nothing


def test_the_billed_span_takes_only_what_it_lacks():
    bare = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai"}  # a provider span with no usage recorded
    spans = trace(
        bspan("1", None, {"gen_ai.operation.name": "chat", "gen_ai.system": "strands-agents",
                          "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 70,
                          "gen_ai.usage.output_tokens": 7}),
        bspan("2", "1", bare),
    )  # fmt: skip
    assert bill_once(spans.values()) == 1
    inner = spans["2".rjust(16, "0")]
    assert (inner.model, inner.provider, inner.input_tokens, inner.output_tokens) == ("gpt-4o", "openai", 70, 7)


def test_sibling_calls_and_a_call_under_a_tool_are_all_billed():
    spans = trace(
        bspan("1", None, {"gen_ai.operation.name": "invoke_agent"}),
        bspan("2", "1", CHAT),
        bspan("3", "1", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}),
        bspan("4", "3", CHAT),
        bspan("5", "1", CHAT | {"gen_ai.operation.name": "embeddings"}),
    )
    assert bill_once(spans.values()) == 0
    assert assemble(spans)[0].models[0].calls == 2


# ------------------------------------------------------------------------------- 7. explain, metrics, CLI


def test_ignored_attributes_name_what_an_unknown_producer_sends():
    a = rec(
        CHAT
        | {"gen_ai.usage.weird_tokens": 5, "llm.fancy": "x", "http.method": "POST", "gen_ai.prompt.0.content": "hi"}
    )
    assert ignored_attributes(a) == ["gen_ai.usage.weird_tokens", "llm.fancy"]


def test_unknown_operations_reach_metrics():
    pipeline = Pipeline({}, PipelineOptions(wait=60))
    try:
        doc = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [
            {"traceId": T, "spanId": "0" * 15 + "9", "name": "x", "kind": 1,
             "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "teleport_agent"}},
                            {"key": "gen_ai.system", "value": {"stringValue": "openai"}}]}]}]}]}  # fmt: skip
        pipeline.submit_spans(spans_from_otlp_json(orjson.dumps(doc)).items)
        text = metrics_text(pipeline.stats()).decode()
    finally:
        pipeline.shutdown(1)
    assert 'otel_bridge_unknown_operations_total{operation="teleport_agent"}' in text


def test_cli_explain_on_a_fixture():
    out = subprocess.run([sys.executable, "-m", "otel_bridge.cli", "inspect", "--explain", "--json",
                          str(FIXTURES / "openllmetry.traces.pb")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(x) for x in out.stdout.splitlines()]
    calls = [x for x in lines if x["kind"]["value"] == "llm"]
    assert len(calls) == 4 and all(x["kind"]["from"] == "gen_ai.operation.name='chat'" for x in calls)
    assert {x["billed"] for x in calls} == {"yes"}
    text = subprocess.run([sys.executable, "-m", "otel_bridge.cli", "inspect", "--explain",
                           str(FIXTURES / "openllmetry.traces.pb")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert text.returncode == 0 and "billed     yes" in text.stdout


def test_clickhouse_rows_keep_framework_and_the_billed_span():
    from otel_bridge.exporters.clickhouse import span_row

    spans = trace(bspan("2", None, ADK_CALL, name="call_llm"), bspan("3", "2", GENAI_CALL))
    assemble(spans)
    outer, inner = spans["2".rjust(16, "0")], spans["3".rjust(16, "0")]
    row = span_row(outer)
    assert (row.kind, row.attributes["framework"], row.attributes["billed_in"]) == (
        "chain",
        "google-adk",
        inner.span_id,
    )
    row = span_row(inner)
    assert (row.kind, row.provider, row.input_tokens, row.attributes["framework"]) == (
        "llm",
        "gcp.gemini",
        300,
        "google-adk",
    )


@pytest.mark.parametrize(("inner_out", "billed_out"), [(61, 94), (94, 94), (70, 70)])
def test_a_part_only_the_wrapper_reports_completes_the_billed_span(inner_out, billed_out):
    """ADK's call_llm knows the thinking tokens; the provider span inside may report only the visible output."""
    outer = ADK_CALL | {"gen_ai.usage.output_tokens": 61, "gen_ai.usage.experimental.reasoning_tokens": 33}
    spans = trace(bspan("2", None, outer), bspan("3", "2", GENAI_CALL | {"gen_ai.usage.output_tokens": inner_out}))
    bill_once(spans.values())
    inner = spans["3".rjust(16, "0")]
    assert (inner.output_tokens, inner.reasoning_tokens) == (billed_out, 33)
    assert inner.sources["reasoning_tokens"] == f"(wrapping span {'2'.rjust(16, '0')})"


@pytest.mark.parametrize(("attrs", "kind"), [
    ({"openinference.span.kind": "TOOL"}, "chain"),  # OpenInference's Agents-SDK handoff: names no tool
    ({"openinference.span.kind": "TOOL", "tool.name": "get_weather"}, "tool"),
    ({"gen_ai.operation.name": "execute_tool"}, "tool"),  # the operation itself says a tool ran
])  # fmt: skip
def test_a_tool_is_counted_by_its_name(attrs, kind):
    assert rec(attrs, name="handoff to weather-agent").kind == kind


def test_an_openinference_llm_span_that_got_no_completion_is_not_a_call():
    """CrewAI asks OpenAI's input-token count before each call: OK, no answering model, no usage."""
    count = {"openinference.span.kind": "LLM", "llm.provider": "openai",
             "llm.invocation_parameters": '{"model": "gpt-4o-mini"}', "output.value": '{"object":"response.input_tokens"}'}  # fmt: skip
    ok = recognise(BridgeSpan(T, "1".rjust(16, "0"), None, "InputTokenCountResponse", 1, 0, 1, 1, "", count, [], {}))
    assert ok.kind == "chain" and "not a model call" in ok.sources["kind"]
    failed = rec(count, error=True)  # a failed call stays a (failed) call
    assert (failed.kind, failed.model) == ("llm", "gpt-4o-mini")
    answered = recognise(BridgeSpan(T, "1".rjust(16, "0"), None, "ChatCompletion", 1, 0, 1, 1, "",
                                    count | {"llm.model_name": "gpt-4o-mini-2024-07-18"}, [], {}))  # fmt: skip
    assert answered.kind == "llm"


def test_an_agent_graph_node_names_the_agent():
    a = rec({"openinference.span.kind": "AGENT", "graph.node.id": "Weather researcher"})
    assert (a.kind, a.agent_name) == ("agent", "Weather researcher")
    assert rec({"openinference.span.kind": "CHAIN", "graph.node.id": "tools"}).agent_name is None


def test_the_enclosing_agent_names_the_agent_of_every_other_span():
    """The OpenAI Agents instrumentation stamps gen_ai.agent.name="OpenAI Agent" on every span; the invoke_agent
    span around them says which agent ran."""
    stamp = {"gen_ai.agent.name": "OpenAI Agent", "gen_ai.agent.id": "agent"}
    spans = trace(
        bspan(
            "1",
            None,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-agent", "gen_ai.agent.id": "agent"},
        ),
        bspan("2", "1", {"gen_ai.operation.name": "unknown", **stamp}),
        bspan("3", "2", CHAT | stamp),
        bspan("4", None, CHAT | stamp),  # no agent encloses it: its own attribute stands
    )
    from otel_bridge.semconv import inherit_context

    inherit_context(spans.values())
    assert [spans[s.rjust(16, "0")].agent_name for s in "234"] == ["weather-agent", "weather-agent", "OpenAI Agent"]
