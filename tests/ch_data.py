"""A generated, deterministic data set of agent traces with known figures, for the ClickHouse tests.

Spans are real ``BridgeSpan`` objects recognised by ``semconv.recognise_trace`` and assembled by
``processors.runs.assemble`` — the same path production data takes. ``expected_runs`` is an independent
pure-Python reading of Observatory's filter set that the SQL answers are compared against.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from otel_bridge.pricing import PriceTable
from otel_bridge.processors.runs import Run, assemble
from otel_bridge.semconv import AgentSpan, recognise_trace
from otel_bridge.spans import STATUS_ERROR, STATUS_OK, BridgeSpan

# Four recent days (rows older than the table TTL would be dropped on insert), starting at a UTC midnight.
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
BASE_NS = int(BASE.timestamp()) * 1_000_000_000
MS = 1_000_000
AGENTS = ("claims-approval", "triage", "writer")
MODELS = (
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini-2024-07-18"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("openai", "o3"),
    ("acme", "mystery-model-1"),  # no price row: unpriced
)
TAGS = ("high-risk", "beta", "eu", "internal")
EMAILS = ("ana@example.com", "bo@example.com", "cy@example.com")
RELEASES = ("1.0.0", "1.1.0")


def bridge(
    trace: int,
    span: int,
    parent: int | None,
    name: str,
    start_ns: int,
    dur_ms: float,
    attrs: dict[str, Any],
    *,
    error: bool = False,
    release: str = "1.0.0",
    service: str = "svc-a",
) -> BridgeSpan:
    return BridgeSpan(
        trace_id=f"{trace:032x}",
        span_id=f"{span:016x}",
        parent_span_id=f"{parent:016x}" if parent is not None else None,
        name=name,
        kind=1,
        start_ns=start_ns,
        end_ns=start_ns + int(dur_ms * MS),
        status_code=STATUS_ERROR if error else STATUS_OK,
        status_message="boom" if error else "",
        attributes=attrs,
        resource={"service.name": service, "service.version": release, "deployment.environment.name": "test"},
    )


def llm_attrs(
    provider: str, model: str, inp: int, out: int, cached: int = 0, write: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
    }
    if cached:
        attrs["gen_ai.usage.cache_read.input_tokens"] = cached
    if write:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = write
    if reasoning:
        attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning
    return attrs


def _trace(i: int, rnd: random.Random, first_trace: int = 0) -> list[BridgeSpan]:
    """One agent run: an agent span, 1–3 LLM calls, a tool call and an un-recognised span."""
    tid = first_trace + i
    start = BASE_NS + i * 2 * 3600 * 1_000_000_000 + rnd.randrange(0, 3600) * 1_000_000_000
    release, service = RELEASES[i % 2], ("svc-a", "svc-b")[i % 3 == 0]
    tags = [TAGS[i % 4]] + ([TAGS[(i + 1) % 4]] if i % 5 == 0 else [])
    agent_attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": AGENTS[i % 3],
        "tag.tags": orjson.dumps(tags).decode(),
        "user.email": EMAILS[i % 3],
    }
    agent_err = i % 7 == 3
    common = {"release": release, "service": service}
    spans = [bridge(tid, 1, None, f"invoke_agent {AGENTS[i % 3]}", start, 0, agent_attrs, error=agent_err, **common)]
    t = start + 5 * MS
    for k in range(1 + i % 3):
        provider, model = MODELS[(i + k) % len(MODELS)]
        inp, out = rnd.randrange(100, 5000), rnd.randrange(10, 800)
        cached = rnd.randrange(0, inp // 2) if k % 2 == 0 else 0
        write = rnd.randrange(0, inp // 4) if provider == "anthropic" else 0
        reasoning = rnd.randrange(0, out) if model == "o3" else 0
        dur = rnd.randrange(200, 9000) + rnd.random()
        attrs = llm_attrs(provider, model, inp, out, cached, write, reasoning)
        err = (i + k) % 11 == 4
        spans.append(bridge(tid, 10 + k, 1, f"chat {model}", t, dur, attrs, error=err, **common))
        t += int(dur * MS) + MS
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": ("search", "lookup")[i % 2]}
    spans.append(bridge(tid, 20, 1, "execute_tool", t, rnd.randrange(5, 1500), tool, **common))
    t += 1600 * MS
    spans.append(bridge(tid, 30, 1, "http get", t, 3, {"http.method": "GET"}, **common))
    t += 5 * MS
    # the agent span ends last: rebuild it with its real end
    root = spans[0]
    spans[0] = bridge(tid, 1, None, root.name, start, (t - start) / MS, agent_attrs, error=agent_err, **common)
    return spans


@dataclass
class Dataset:
    spans: list[AgentSpan]  # every recognised span, including kind "other"
    runs: list[Run]

    @property
    def stored(self) -> list[AgentSpan]:
        return [a for a in self.spans if a.kind != "other"]


def make_dataset(n_traces: int = 48, seed: int = 7, first_trace: int = 0) -> Dataset:
    """``first_trace`` offsets the trace ids, so data sets sharing one store never share a span identity."""
    rnd = random.Random(seed)
    spans: list[AgentSpan] = []
    runs: list[Run] = []
    for i in range(n_traces):
        recognised = recognise_trace(_trace(i, rnd, first_trace))
        spans.extend(recognised)
        runs.extend(assemble({a.span_id: a for a in recognised}))
    return Dataset(spans, runs)


def status_of(a: AgentSpan) -> str:
    return "error" if a.error else "success"


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def expected_runs(spans: Iterable[AgentSpan], prices: PriceTable, **f: Any) -> set[str]:
    """Observatory's filter set, read literally, in plain Python."""
    out = set()
    for a in spans:
        if a.kind == "other":
            continue
        cost, lat = prices.cost(a), a.latency_ms / 1000
        checks = (
            f.get("status") in (None, status_of(a)),
            f.get("model") in (None, a.model),
            f.get("agent") in (None, a.agent),
            f.get("user_email") in (None, a.user_email),
            f.get("min_latency_s") is None or lat >= f["min_latency_s"],
            f.get("max_latency_s") is None or lat <= f["max_latency_s"],
            f.get("min_cost") is None or cost >= f["min_cost"],
            f.get("max_cost") is None or cost <= f["max_cost"],
            not f.get("tags") or bool(set(f["tags"]) & set(a.tags)),
            f.get("from") is None or a.span.start_ns >= _ns(f["from"]),
            f.get("to") is None or a.span.start_ns <= _ns(f["to"]),
        )
        if all(checks):
            out.add(a.run_id)
    return out


def _ns(value: str) -> int:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
