"""Every agent-framework fixture, read from protobuf and from OTLP/JSON, gives exactly what the fake model server
answered (``<name>.expected.json``, written from the server's records and the run script's report, never from
otel-bridge's output): kind, model, provider and each token field of every model call, one billed span per call,
the billed total per fixture, tool counts and tool errors, agents.

The only per-fixture knowledge here is ``NOT_EMITTED``: the figures a producer does not put on its spans at all
(checked: no attribute of any convention carries them), so otel-bridge cannot report them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from otel_bridge.inspect import agent_spans
from otel_bridge.processors.runs import assemble
from otel_bridge.semconv import AgentSpan
from otel_bridge.semconv_tables import FRAMEWORKS, PROVIDER_KEYS, TEXT_FIELDS, TOKEN_FIELDS

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
EXPECTED = {p.name.split(".")[0]: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.expected.json"))}
# Fixtures of agent frameworks: their expected.json counts model calls ("model_calls", or "llm_calls" in the
# manifest of the second fixture generator; both written from the server's records).
AGENT_FIXTURES = sorted(n for n, e in EXPECTED.items() if {"model_calls", "llm_calls"} & set(e.get("counts", {})))
LEGACY_FIXTURES = sorted(set(EXPECTED) - set(AGENT_FIXTURES))  # the three reference instrumentations

# expected.json token field → AgentSpan field
FIELDS = {
    "prompt_tokens": "input_tokens",
    "cached_tokens": "cached_input_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "completion_tokens": "output_tokens",
    "reasoning_tokens": "reasoning_tokens",
}
# What a producer leaves off its spans of what the server sent (keys of FIELDS, "response_model", or "provider":
# no attribute names the provider, so it is known only where the model name implies it).
NOT_EMITTED: dict[str, set[str]] = {
    "adk_genai": {
        "cached_tokens"
    },  # neither ADK 2.2's call_llm nor google-genai's span carries cachedContentTokenCount
    "openai_agents_genai": {"cached_tokens", "reasoning_tokens"},  # contrib instrumentation: input/output only
    "strands": {"provider"},  # gen_ai.system is the framework; the Bedrock model id names the provider, fail-model not
    "strands_swarm": {"provider"},
    "langgraph_openinference": {"agent_name"},  # AGENT spans without agent.name: the name is only the span name
    "strands_prev": {"provider"},
    "semantic_kernel": {"response_model", "cached_tokens", "reasoning_tokens"},  # request model, input/output only
    "vercel_ai_genai": {"reasoning_tokens"},  # @ai-sdk/otel's GenAI integration writes no reasoning count
}
# Agents a producer declares beyond the script's: the AI SDK makes every generateText/streamText call an agent
# invocation named by its functionId (its GenAI integration maps them to invoke_agent; so do we for ai.*).
FUNCTION_AGENTS: dict[str, set[str]] = {
    "vercel_ai": {"greeter", "fallback_agent"},
    "vercel_ai_genai": {"greeter", "fallback_agent"},
}
# How a producer's spans map onto the server's calls, when not one span per request (each verified below):
# "client retries": the SDK retries a failed request inside one span (the server saw each attempt);
# "last call per agent": every model call of an agent invocation writes its attributes onto the same span, so
# only the last one survives (OpenInference's ADK wrapper sets them on the current span, ADK 2.x's invoke_agent).
SPAN_MAPPING: dict[str, str] = {
    "strands": "client retries",  # botocore retries the 500 of fail-model within Strands' one chat span
    "strands_prev": "client retries",
    "adk_openinference": "last call per agent",
}
# Tool calls a framework executes as a handoff, not as a tool: its span is a handoff step (GenAI ``agent_handoff``,
# OpenInference's nameless TOOL span), counted as such below.
HANDOFF_TOOLS: dict[str, set[str]] = {
    "openai_agents_genai": {"transfer_to_weather_agent"},
    "openai_agents_openinference": {"transfer_to_weather_agent"},
    "openai_agents_openllmetry": {"transfer_to_weather_agent"},
}


def visible_calls(name: str) -> list[dict]:
    """The server's calls as the producer's spans can show them (``SPAN_MAPPING``)."""
    calls = EXPECTED[name]["calls"]
    mapping = SPAN_MAPPING.get(name)
    if mapping == "client retries":
        return [
            c
            for i, c in enumerate(calls)
            if not (i and c["error"] and calls[i - 1]["error"] and c["request_model"] == calls[i - 1]["request_model"])
        ]
    if mapping == "last call per agent":
        last = {c["plan"]: i for i, c in enumerate(calls)}
        return [c for i, c in enumerate(calls) if last[c["plan"]] == i]
    return calls


def facts(expected: dict) -> dict:
    """The two manifests' spellings of the same facts. A handoff is a tool call the model makes that the
    framework executes as a handoff, not as a tool (listed with ``handoff: true``)."""
    counts = expected["counts"]
    handoffs = HANDOFF_TOOLS.get(expected["fixture"], set())
    tools = [t for t in expected["tool_calls"] if not t.get("handoff") and t["name"] not in handoffs]
    return {
        "model_calls": counts.get("model_calls", counts.get("llm_calls")),
        "traces": counts.get("traces", 1),
        "tools": tools,
        "tool_errors": counts.get("tool_errors", sum(1 for t in tools if t.get("error"))),
        "agents": expected.get("agents"),
        "handoffs": [t for t in expected["tool_calls"] if t.get("handoff") or t["name"] in handoffs],
    }


def billed_tokens(name: str) -> int:
    if name not in SPAN_MAPPING:
        return EXPECTED[name]["totals"]["billed_tokens"]
    return sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in visible_calls(name) if not c["error"])


def spans_of(name: str, suffix: str = "pb") -> list[AgentSpan]:
    files = [FIXTURES / f"{name}.traces.{suffix}"]
    logs = FIXTURES / f"{name}.logs.{suffix}"
    spans = agent_spans(files + ([logs] if logs.exists() else []))
    by_trace: dict[str, dict[str, AgentSpan]] = defaultdict(dict)
    for a in spans:
        by_trace[a.trace_id][a.span_id] = a
    for members in by_trace.values():
        assemble(members)  # where the pipeline decides, once a trace is complete
    return sorted(spans, key=lambda a: (a.span.start_ns, a.span_id))


def _carries(spans: list[AgentSpan], field: str) -> bool:
    keys = TOKEN_FIELDS.get(field, ())
    return any(k in a.span.attributes for a in spans for k in keys)


def test_not_emitted_is_true_of_the_spans():
    """A declared gap is the producer's: none of its spans carries any attribute for that figure."""
    for name, gaps in NOT_EMITTED.items():
        spans = spans_of(name)
        for gap in gaps - {"response_model", "provider", "agent_name"}:
            assert not _carries(spans, FIELDS[gap]), f"{name} does emit {gap}: read it instead of declaring a gap"
        if "response_model" in gaps:
            assert not any(k in a.span.attributes for a in spans for k in TEXT_FIELDS["response_model"]), name
        if "provider" in gaps:  # only framework names where a provider would be
            named = {a.span.attributes[k] for a in spans for k in PROVIDER_KEYS if k in a.span.attributes}
            assert named and named <= set(FRAMEWORKS), named


def test_span_mappings_are_needed():
    """A declared mapping changes what is expected (else it hides nothing and must go)."""
    for name in SPAN_MAPPING:
        assert len(visible_calls(name)) < len(EXPECTED[name]["calls"]), name


@pytest.mark.parametrize("name", AGENT_FIXTURES)
@pytest.mark.parametrize("suffix", ["pb", "json"])
def test_model_calls(name, suffix):
    expected = EXPECTED[name]
    gaps = NOT_EMITTED.get(name, set())
    spans = spans_of(name, suffix)
    billed = [a for a in spans if a.kind == "llm"]
    calls = visible_calls(name)
    assert len(calls) == facts(expected)["model_calls"] or name in SPAN_MAPPING
    assert len(billed) == len(calls), [a.name for a in billed]
    for a, call in zip(billed, calls, strict=True):
        where = f"{name}: span {a.name!r} vs call {call['response_id']}"
        model = call["request_model"] if "response_model" in gaps else call["response_model"] or call["request_model"]
        if "provider" in gaps and a.provider is None:  # the model name implies none either
            assert call["error"], where
        else:
            assert a.provider == call["provider"], where
        assert a.model == model, where
        for theirs, ours in FIELDS.items():
            got = getattr(a, ours)
            if theirs in gaps:
                assert got is None, (where, ours)
            else:  # a zero the server sent may be left off; a failed call reporting 0 bills nothing either
                assert (got or 0) == (call.get(theirs) or 0), (where, ours, got, call.get(theirs))
        assert a.error == (call["error"] is not None), where
    wrappers = [a for a in spans if a.billed_in]
    assert all(a.kind == "chain" for a in wrappers)
    assert {a.billed_in for a in wrappers} <= {a.span_id for a in billed}


@pytest.mark.parametrize("name", AGENT_FIXTURES)
def test_billed_total(name):
    expected = EXPECTED[name]
    spans = spans_of(name)
    by_trace: dict[str, dict[str, AgentSpan]] = defaultdict(dict)
    for a in spans:
        by_trace[a.trace_id][a.span_id] = a
    runs = [r for members in by_trace.values() for r in assemble(members)]
    assert len(by_trace) == facts(expected)["traces"]
    billed = sum(r.total("input_tokens") + r.total("output_tokens") for r in runs)
    assert billed == billed_tokens(name)
    assert sum(u.calls for r in runs for u in r.models) == len(visible_calls(name))


@pytest.mark.parametrize("name", AGENT_FIXTURES)
def test_tools_and_their_errors(name):
    want = facts(EXPECTED[name])
    tools = [a for a in spans_of(name) if a.kind == "tool"]
    assert Counter(a.tool_name for a in tools) == Counter(t["name"] for t in want["tools"])
    failed = Counter(a.tool_name for a in tools if a.error)
    assert sum(failed.values()) == want["tool_errors"]
    assert failed == Counter(t["name"] for t in want["tools"] if t.get("error"))
    steps = [
        a
        for a in spans_of(name)
        if a.kind == "chain" and (a.operation in ("agent_handoff", "handoff") or "names no tool" in a.sources["kind"])
    ]
    assert len(steps) == len(want["handoffs"])


@pytest.mark.parametrize("name", [n for n in AGENT_FIXTURES if facts(EXPECTED[n])["agents"] is not None])
def test_agents(name):
    spans = spans_of(name)
    names = {a.agent_name for a in spans if a.kind == "agent"} - {None}  # a framework's unnamed root span
    want = {x if isinstance(x, str) else x["name"] for x in facts(EXPECTED[name])["agents"]}
    if "agent_name" in NOT_EMITTED.get(name, set()):
        assert not any(k in a.span.attributes for a in spans for k in TEXT_FIELDS["agent_name"])
        assert names == set() and want <= {a.name for a in spans if a.kind == "agent"}
    else:
        assert names == want | FUNCTION_AGENTS.get(name, set())
    for extra in FUNCTION_AGENTS.get(name, ()):  # named so by the producer itself
        assert any(
            a.span.attributes.get(k) == extra for a in spans for k in ("gen_ai.agent.name", "ai.telemetry.functionId")
        )


@pytest.mark.parametrize("name", LEGACY_FIXTURES)
def test_reference_instrumentations_billed_total(name):
    """The three reference instrumentations: chat calls billed once (embeddings are not LLM calls)."""
    totals = EXPECTED[name]["totals"]
    spans = spans_of(name)
    (run,) = assemble({a.span_id: a for a in spans})
    assert (
        run.total("input_tokens") + run.total("output_tokens")
        == totals["chat_prompt_tokens"] + totals["chat_completion_tokens"]
    )


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in AGENT_FIXTURES
        if "by_agent" in EXPECTED[n] and n not in SPAN_MAPPING and "agent_name" not in NOT_EMITTED.get(n, ())
    ],
)
def test_billed_per_agent_invocation(name):
    """Each trace here is one agent invocation: the billed tokens of its calls, by the agent they ran under."""
    billed: Counter = Counter()
    for a in spans_of(name):
        if a.kind == "llm":
            billed[a.agent_name] += (a.input_tokens or 0) + (a.output_tokens or 0)
    want = {agent: v["billed_tokens"] for agent, v in EXPECTED[name]["by_agent"].items()}
    assert {k: v for k, v in billed.items() if v or k in want} == want
