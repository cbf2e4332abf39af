"""SkillFlaw / Langflow monitor items → a standard OTLP ``ExportTraceServiceRequest``.

The receiver hands the serialized request to the same persist-and-submit step as the OTLP receivers, so the spool,
redaction, run assembly and every exporter apply unchanged. Ids are deterministic (DESIGN decision 3): a flow run's
trace id is its Langflow trace UUID (or a digest of its first item), span ids are digests of the SkillFlaw ids, so a
re-import produces the same spans and every destination de-duplicates them.

Shapes written (conventions the recogniser reads, ``semconv.py``):
- a flow run: ``gen_ai.operation.name=invoke_agent`` (an agent run), agent name = flow name, agent id = flow id,
  session = thread;
- a component (one vertex in a run; trace span, transactions and build merged): ``openinference.span.kind=CHAIN``;
- a model call inside it (Langflow's LangChain span): ``gen_ai.operation.name=chat`` with model and tokens;
- a chat message: its own span carrying a ``chat`` span event (role, content, thread_id, the message id as
  ``event_id``, ``metadata.revision`` counting edits), so an edit replaces the event instead of adding one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otel_bridge.agentspan import run_id

SCOPE = InstrumentationScope(name="otel_bridge.receivers.skillflaw", version="1")
TEXT_LIMIT = 8192  # characters of a component's inputs/outputs kept as input.value / output.value
ROLES = {"user": "user", "machine": "assistant", "ai": "assistant", "assistant": "assistant"}


def trace_id_of(key: str) -> bytes:
    """A Langflow UUID is already 128 bits; anything else is digested."""
    try:
        return uuid.UUID(key).bytes
    except ValueError:
        return hashlib.blake2b(key.encode(), digest_size=16).digest()


def span_id_of(*parts: str) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=_attrs(v)))
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        out = AnyValue()
        out.array_value.values.extend(AnyValue(string_value=x) for x in v)
        return out
    return AnyValue(string_value=v if isinstance(v, str) else orjson.dumps(v, default=str).decode())


def _attrs(d: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in d.items() if v is not None and v != ""]


def text_of(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """A component's inputs/outputs as text: strings as they are, anything else as JSON."""
    if value is None or value == {} or value == []:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text[:limit]


# ------------------------------------------------------------------------------------------------ model


@dataclass
class Call:
    """A model call inside a component (Langflow's LangChain span of type llm)."""

    key: str
    name: str
    start_ns: int
    end_ns: int
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    kind: str = "llm"


@dataclass
class Component:
    """One vertex's execution in a run, merged from its trace span, transactions and build."""

    vertex_id: str
    name: str
    start_ns: int
    end_ns: int
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    kind: str = "chain"  # or "tool"
    attributes: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)


@dataclass
class FlowRun:
    key: str  # Langflow trace id, or a synthetic key for servers without /monitor/traces
    flow_id: str
    flow_name: str
    start_ns: int
    end_ns: int
    session_id: str | None = None
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    total_tokens: int | None = None
    synthetic: bool = False
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def trace_id(self) -> bytes:
        return trace_id_of(self.key)

    @property
    def root_span_id(self) -> bytes:
        return span_id_of("run", self.key)


@dataclass
class ChatMessage:
    id: str
    flow_id: str
    session_id: str | None
    role: str
    sender_name: str | None
    text: str
    time_ns: int
    revision: int = 0
    run: FlowRun | None = None
    usage: dict[str, int] = field(default_factory=dict)
    edited: bool = False
    error: bool = False  # Langflow shows a failed component's error as a chat message (category "error")


# ------------------------------------------------------------------------------------------------ spans


def _span(trace_id: bytes, span_id: bytes, parent: bytes | None, name: str, start: int, end: int,
          attrs: Mapping[str, Any], error: str | None = None) -> Span:  # fmt: skip
    span = Span(trace_id=trace_id, span_id=span_id, name=name, kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=start, end_time_unix_nano=max(start, end), attributes=_attrs(attrs))  # fmt: skip
    if parent:
        span.parent_span_id = parent
    if error:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error[:1024]))
    else:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_OK))
    return span


def run_spans(run: FlowRun, *, root: bool = True) -> list[Span]:
    """The run's root span, one span per component, one per model call; ``root=False`` for components that
    arrived after their run went out (the root must not be replaced by a stub)."""
    tid, root_id = run.trace_id, run.root_span_id
    attrs = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": run.flow_name, "gen_ai.agent.id": run.flow_id,
        "session.id": run.session_id, "gen_ai.conversation.id": run.session_id,
        "input.value": text_of(run.inputs), "output.value": text_of(run.outputs),
        "skillflaw.flow_id": run.flow_id, "skillflaw.run_id": None if run.synthetic else run.key,
        "skillflaw.total_tokens": run.total_tokens,
    }  # fmt: skip
    spans = [_span(tid, root_id, None, run.flow_name, run.start_ns, run.end_ns, attrs, run.error)] if root else []
    for c in run.components.values():
        # a late component gets its own id: it must never replace the fuller span its run already sent
        sid = span_id_of("component", run.key, c.vertex_id, *(() if root else ("late", str(c.end_ns))))
        kind = (
            {"openinference.span.kind": "TOOL", "tool.name": c.name}
            if c.kind == "tool"
            else {"openinference.span.kind": "CHAIN"}
        )
        # ``metadata`` is what the recogniser hands on to every destination (ClickHouse attributes, event metadata)
        meta = {"skillflaw.vertex_id": c.vertex_id, **{k: v for k, v in c.attributes.items() if v is not None}}
        cattrs = {**kind, "input.value": text_of(c.inputs), "output.value": text_of(c.outputs), "metadata": meta}
        spans.append(_span(tid, sid, root_id, c.name, c.start_ns, c.end_ns, cattrs, c.error))
        for call in c.calls:
            lattrs = {"gen_ai.operation.name": "chat", "gen_ai.response.model": call.model,
                      "gen_ai.usage.input_tokens": call.input_tokens, "gen_ai.usage.output_tokens": call.output_tokens,
                      "skillflaw.span_id": call.key}  # fmt: skip
            if call.kind != "llm":
                lattrs = {"openinference.span.kind": call.kind.upper(), "skillflaw.span_id": call.key}
            spans.append(
                _span(tid, span_id_of("call", call.key), sid, call.name, call.start_ns, call.end_ns, lattrs, call.error)
            )
    return spans


def message_span(m: ChatMessage) -> Span:
    """A message's own span (kind ``other``: not a run, not a model call) carrying its ``chat`` event."""
    meta: dict[str, Any] = {"source": "skillflaw", "message_id": m.id, "flow_id": m.flow_id,
                            "sender_name": m.sender_name, "revision": m.revision}  # fmt: skip
    if m.usage:
        meta["usage"] = dict(m.usage)
    if m.edited:
        meta["edited"] = True
    if m.error:
        meta["error"] = True
    event: dict[str, Any] = {
        "role": m.role,
        "content": m.text,
        "thread_id": m.session_id,
        "event_id": m.id,
        "metadata": meta,
    }
    if m.run is not None:
        event["run_id"] = run_id(m.run.trace_id.hex(), m.run.root_span_id.hex())
    attrs = {"session.id": m.session_id, "skillflaw.message_id": m.id, "skillflaw.flow_id": m.flow_id}
    span = _span(trace_id_of(m.id), span_id_of("message", m.id), None, f"message {m.role}", m.time_ns, m.time_ns, attrs)
    span.events.add(time_unix_nano=m.time_ns, name="chat", attributes=_attrs(event))
    return span


def export_request(spans_by_resource: Iterable[tuple[Mapping[str, Any], list[Span]]]) -> bytes:
    """Serialized ``ExportTraceServiceRequest``, one ResourceSpans per (resource, spans) pair."""
    req = ExportTraceServiceRequest()
    for resource, spans in spans_by_resource:
        if spans:
            req.resource_spans.append(ResourceSpans(
                resource=Resource(attributes=_attrs(resource)),
                scope_spans=[ScopeSpans(scope=SCOPE, spans=spans)],
            ))  # fmt: skip
    return req.SerializeToString()


def resource_of(flow_id: str, flow_name: str) -> dict[str, Any]:
    return {
        "service.name": flow_name or flow_id,
        "skillflaw.flow_id": flow_id,
        "telemetry.sdk.name": "otel-bridge skillflaw receiver",
    }
