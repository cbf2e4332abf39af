"""Synthetic agent traffic through the real OTel SDK: the demo's load and the tests' known data.

Spans follow the current GenAI conventions (``invoke_agent`` → ``chat`` / ``execute_tool``) with explicit start and
end times, so every figure downstream (tokens, latency, errors, cost) is known in advance.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

MODELS = (  # provider, model, typical (input, cached, output, reasoning)
    ("openai", "gpt-4o-mini", (900, 300, 180, 0)),
    ("openai", "gpt-4o", (1400, 512, 260, 0)),
    ("openai", "o4-mini", (800, 0, 400, 250)),
    ("anthropic", "claude-sonnet-4-5", (2000, 1024, 350, 0)),
)
AGENTS = ("support-agent", "billing-agent", "research-agent")
TOOLS = ("get_weather", "search_kb", "lookup_order", "send_email")


@dataclass
class LlmCall:
    provider: str
    model: str
    input_tokens: int  # inclusive of cached
    cached_input_tokens: int
    output_tokens: int  # inclusive of reasoning
    reasoning_tokens: int
    latency_ms: int


@dataclass
class PlannedRun:
    agent: str
    calls: list[LlmCall]
    tools: list[str]
    fail: bool
    start_ns: int
    latency_ms: int
    user: str = "user-1"
    conversation_id: str | None = None
    error_type: str = "RateLimitError"
    extra: dict = field(default_factory=dict)
    question: str | None = None  # with chat: the user's turn on the first call, an answer on the last
    answer: str | None = None
    feedback: tuple[str, str] | None = None  # (rating, comment) as a "feedback" span event on the agent span


QUESTIONS = (
    ("Where is my order #4411?", "It left the warehouse yesterday and should arrive on Thursday."),
    ("Why was I charged twice in May?", "One of the two charges was a pre-authorisation; it was released on May 3."),
    (
        "Summarise the refund policy for EU customers.",
        "EU customers can return items within 30 days for a full refund.",
    ),
    ("What's the weather in Lisbon tomorrow?", "Sunny, 24 °C, light wind from the north-west."),
)
RATINGS = (("up", "quick and correct"), ("down", "did not answer the question"), ("up", ""))


def plan_runs(
    n: int,
    *,
    seed: int = 7,
    start_ns: int | None = None,
    error_rate: float = 0.1,
    slow: float = 1.0,
    agents: tuple[str, ...] = AGENTS,
    models: tuple = MODELS,
    chat: bool = False,
    spacing_s: float = 2.0,
) -> list[PlannedRun]:
    """``n`` runs with a reproducible mix of agents, models, tools, latencies and failures, all in the past."""
    rng = random.Random(seed)
    talk = random.Random(seed + 1_000_003)
    step = int(spacing_s * 1_000_000_000)
    t = start_ns if start_ns is not None else time.time_ns() - n * step - 60 * 1_000_000_000
    runs = []
    for i in range(n):
        calls = []
        for _ in range(rng.randint(1, 3)):
            provider, model, (inp, cached, out, reasoning) = rng.choice(models)
            scale = rng.uniform(0.5, 1.5)
            calls.append(
                LlmCall(
                    provider,
                    model,
                    int(inp * scale),
                    int(cached * scale),
                    int(out * scale),
                    int(reasoning * scale),
                    int(rng.uniform(200, 1500) * slow),
                )
            )
        tools = rng.sample(TOOLS, rng.randint(0, 2))
        latency = sum(c.latency_ms for c in calls) + 40 * len(tools) + rng.randint(5, 50)
        runs.append(
            PlannedRun(
                rng.choice(agents),
                calls,
                tools,
                rng.random() < error_rate,
                t,
                latency,
                user=f"user-{i % 5}@example.com",
                conversation_id=f"conv-{i}",
            )
        )
        if chat:  # its own generator, so runs with and without chat have the same figures
            runs[-1].question, runs[-1].answer = talk.choice(QUESTIONS)
            runs[-1].feedback = talk.choice(RATINGS) if talk.random() < 0.3 else None
        t += step
    return runs


def emit(tracer: Tracer, run: PlannedRun) -> None:
    """Record one planned run as real SDK spans."""
    agent = tracer.start_span(
        f"invoke_agent {run.agent}",
        kind=SpanKind.INTERNAL,
        start_time=run.start_ns,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": run.agent,
            "gen_ai.agent.id": run.agent,
            "gen_ai.conversation.id": run.conversation_id or "",
            "user.email": run.user,
            **run.extra,
        },
    )
    ctx = trace.set_span_in_context(agent)
    t = run.start_ns + 5_000_000
    for k, call in enumerate(run.calls):
        attrs = _llm_attributes(call) | _messages(run, first=k == 0, last=k == len(run.calls) - 1)
        span = tracer.start_span(
            f"chat {call.model}", context=ctx, kind=SpanKind.CLIENT, start_time=t, attributes=attrs
        )
        t += call.latency_ms * 1_000_000
        span.end(end_time=t)
    for tool in run.tools:
        span = tracer.start_span(
            f"execute_tool {tool}",
            context=ctx,
            start_time=t,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.type": "function",
            },
        )
        t += 40_000_000
        span.end(end_time=t)
    if run.feedback:
        agent.add_event("feedback", {"rating": run.feedback[0], "comment": run.feedback[1]}, timestamp=t)
    if run.fail:
        agent.set_attribute("error.type", run.error_type)
        agent.set_status(Status(StatusCode.ERROR, f"{run.error_type}: upstream refused"))
    agent.end(end_time=run.start_ns + run.latency_ms * 1_000_000)


def _messages(run: PlannedRun, first: bool, last: bool) -> dict:
    """GenAI current-convention message attributes (JSON), only for runs planned with chat."""
    if not run.question:
        return {}
    out = {}
    if first:
        out["gen_ai.input.messages"] = json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": run.question}]}]
        )
    if last:
        out["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": run.answer}], "finish_reason": "stop"}]
        )
    return out


def _llm_attributes(call: LlmCall) -> dict:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": call.model,
        "gen_ai.response.model": call.model,
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.cache_read.input_tokens": call.cached_input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
        "gen_ai.usage.reasoning.output_tokens": call.reasoning_tokens,
    }


def emit_all(tracer: Tracer, runs: list[PlannedRun]) -> Iterator[PlannedRun]:
    for run in runs:
        emit(tracer, run)
        yield run
