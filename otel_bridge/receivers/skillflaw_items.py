"""SkillFlaw / Langflow monitor JSON → the receiver's model (``skillflaw_otlp``), and components → flow runs.

Each ``parse_*`` raises ``Malformed`` for an item it cannot use; the poller skips and counts it. Joins:
- a Langflow trace's component span has id ``uuid5(LANGFLOW_SPAN_NAMESPACE, f"{trace_id}-{vertex_id}")`` (Langflow's
  native tracer), so transactions and builds, which name their vertex, merge into the same component;
- a transaction or build belongs to the run of its flow whose time window holds its timestamp;
- where no run holds it (a server without ``/monitor/traces``), components of one flow whose executions touch or
  follow each other within ``RUN_GAP_NS`` form one synthetic run, keyed by its first item's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_bridge.receivers.skillflaw_client import parse_timestamp, to_ns
from otel_bridge.receivers.skillflaw_otlp import ROLES, Call, ChatMessage, Component, FlowRun

LANGFLOW_SPAN_NAMESPACE = uuid.UUID("a3e1c2d4-5b6f-7890-abcd-ef1234567890")  # langflow/services/tracing/span_sorting.py
RUN_GAP_NS = 1_000_000_000
WINDOW_SLACK_NS = 2_000_000_000  # a build is recorded just after its trace's clock stopped


class Malformed(ValueError):
    """An item without the fields its mapping needs."""


def _get(d: Any, *keys: str) -> Any:
    if not isinstance(d, Mapping):
        raise Malformed(f"expected an object, got {type(d).__name__}")
    for k in keys:
        if k in d:
            return d[k]
    return None


def _ts(d: Mapping[str, Any], *keys: str) -> int:
    value = _get(d, *keys)
    try:
        return to_ns(parse_timestamp(value))
    except ValueError as exc:
        raise Malformed(f"{keys[0]}: {exc}") from None


def _required(d: Mapping[str, Any], *keys: str) -> str:
    value = _get(d, *keys)
    if not isinstance(value, str) or not value:
        raise Malformed(f"{keys[0]}: missing")
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# ------------------------------------------------------------------------------------------------ items


@dataclass
class Item:
    """A transaction or a build: one component execution record."""

    kind: str  # "transactions" | "builds"
    id: str
    flow_id: str
    vertex_id: str
    end_ns: int
    duration_ns: int = 0
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def start_ns(self) -> int:
        return self.end_ns - self.duration_ns


def parse_transaction(d: Any, flow_id: str) -> Item:
    status = _get(d, "status")
    error = _get(d, "error")
    failed = isinstance(status, str) and status.lower() not in ("success", "ok", "")
    return Item(
        "transactions", _required(d, "id"), str(_get(d, "flow_id") or flow_id), _required(d, "vertex_id"),
        _ts(d, "timestamp"), error=(str(error) if error else (f"status {status}" if failed else None)),
        inputs=_get(d, "inputs"), outputs=_get(d, "outputs"),
        attributes={"skillflaw.transaction.target_id": _get(d, "target_id"), "skillflaw.transaction.status": status},
    )  # fmt: skip


def parse_build(vertex_id: str, d: Any, flow_id: str) -> Item:
    valid = _get(d, "valid")
    if not isinstance(valid, bool):
        raise Malformed("valid: missing")
    data = _get(d, "data") or {}
    seconds = data.get("timedelta") if isinstance(data, Mapping) else None
    duration = int(seconds * 1e9) if isinstance(seconds, (int, float)) and seconds >= 0 else 0
    outputs = data.get("outputs") if isinstance(data, Mapping) else None
    error = None if valid else _build_error(data)
    params = _get(d, "params")
    return Item(
        "builds", _required(d, "build_id", "id"), str(_get(d, "flow_id") or flow_id), str(_get(d, "id") or vertex_id),
        _ts(d, "timestamp"), duration, error, outputs=outputs,
        attributes={"skillflaw.build.id": _get(d, "build_id"), "skillflaw.build.valid": valid, "skillflaw.build.params": params if params != "None" else None,
                    "skillflaw.build.duration": data.get("duration") if isinstance(data, Mapping) else None},
    )  # fmt: skip


def _build_error(data: Any) -> str:
    """An invalid build's reason: Langflow puts the error text in its outputs/params; say at least that it failed."""
    if isinstance(data, Mapping):
        for value in (data.get("outputs") or {}).values() if isinstance(data.get("outputs"), Mapping) else ():
            msg = value.get("message") if isinstance(value, Mapping) else None
            if isinstance(msg, Mapping) and msg.get("errorMessage"):
                return str(msg["errorMessage"])
            if isinstance(msg, str) and msg:
                return msg
    return "build failed (valid: false)"


def parse_message(d: Any, flow_id: str) -> ChatMessage:
    sender = _get(d, "sender")
    role = ROLES.get(str(sender).lower()) if isinstance(sender, str) else None
    error = _get(d, "category") == "error"  # a component's failure shown in the chat (sender: the component)
    if role is None and not error:
        raise Malformed(f"sender: expected User or Machine, got {str(sender)[:20]!r}")
    text = _get(d, "text")
    if not isinstance(text, str):
        raise Malformed("text: missing")
    props = _get(d, "properties")
    props = props if isinstance(props, Mapping) else {}
    usage = props.get("usage") if isinstance(props.get("usage"), Mapping) else {}
    return ChatMessage(
        _required(d, "id"), str(_get(d, "flow_id") or flow_id), _get(d, "session_id") or None, role or "assistant",
        _get(d, "sender_name"), text, _ts(d, "timestamp"),
        usage={k: v for k in ("input_tokens", "output_tokens", "total_tokens") if (v := _int(usage.get(k))) is not None},
        edited=bool(_get(d, "edit") is True or props.get("edited") is True), error=error,
    )  # fmt: skip


def parse_trace(summary: Any, detail: Any, flow_name: str) -> FlowRun:
    """A Langflow trace (list entry + ``/monitor/traces/{id}``) as a run with its components and model calls."""
    key = _required(summary, "id")
    start = _ts(summary, "startTime", "start_time")
    latency = _int(_get(summary, "totalLatencyMs", "total_latency_ms")) or 0
    d = detail if isinstance(detail, Mapping) else {}
    end = _ts(d, "endTime", "end_time") if d.get("endTime") or d.get("end_time") else start + latency * 1_000_000
    status = str(_get(summary, "status") or "")
    run = FlowRun(
        key, _required(summary, "flowId", "flow_id"), flow_name, start, end,
        session_id=_get(summary, "sessionId", "session_id") or None,
        error="flow run failed" if status.lower() == "error" else None,
        inputs=_get(summary, "input"), outputs=_get(summary, "output"),
        total_tokens=_int(_get(summary, "totalTokens", "total_tokens")),
    )  # fmt: skip
    for span in d.get("spans") or []:
        c = _component(span)
        if c is not None:
            run.components[c.vertex_id] = c
            run.error = run.error or (f"{c.name}: {c.error}" if c.error else None)
    return run


def _component(span: Any) -> Component | None:
    if not isinstance(span, Mapping) or not span.get("id"):
        return None
    start = _ts(span, "startTime", "start_time")
    end = _ts(span, "endTime", "end_time") if span.get("endTime") or span.get("end_time") else start
    c = Component(f"span:{span['id']}", str(span.get("name") or "component"), start, end,
                  error=span.get("error") or None, inputs=span.get("inputs"), outputs=span.get("outputs"),
                  kind="tool" if span.get("type") == "tool" else "chain")  # fmt: skip
    c.attributes["skillflaw.span_id"] = str(span["id"])
    _calls(c, span.get("children") or [])
    if not c.calls and span.get("type") == "llm" and span.get("modelName"):
        c.calls.append(_call(span, start, end, f"{span['id']}:call"))  # a model component without LangChain children
    return c


def _call(span: Mapping[str, Any], start: int, end: int, key: str) -> Call:
    usage = span.get("tokenUsage") or span.get("token_usage") or {}
    usage = usage if isinstance(usage, Mapping) else {}
    return Call(key, str(span.get("name") or "llm"),
                start, end, model=span.get("modelName") or span.get("model_name"),
                input_tokens=_int(usage.get("promptTokens")), output_tokens=_int(usage.get("completionTokens")),
                error=span.get("error") or None)  # fmt: skip


def _calls(c: Component, children: Iterable[Any]) -> None:
    """Descendant LangChain spans: model calls keep their tokens; others (tools, chains) keep their kind."""
    for child in children:
        if not isinstance(child, Mapping) or not child.get("id"):
            continue
        start = _ts(child, "startTime", "start_time")
        end = _ts(child, "endTime", "end_time") if child.get("endTime") or child.get("end_time") else start
        if child.get("type") == "llm":
            c.calls.append(_call(child, start, end, str(child["id"])))
        elif child.get("type") in ("tool", "retriever", "embedding"):
            c.calls.append(Call(str(child["id"]), str(child.get("name") or child["type"]), start, end,
                                error=child.get("error") or None, kind=str(child["type"])))  # fmt: skip
        _calls(c, child.get("children") or [])


# ------------------------------------------------------------------------------------------------ joins


def component_span_id(trace_key: str, vertex_id: str) -> str:
    return str(uuid.uuid5(LANGFLOW_SPAN_NAMESPACE, f"{trace_key}-{vertex_id}"))


def merge(run: FlowRun, item: Item) -> None:
    """Fold a transaction or build into its run's component for the same vertex (created if the trace had none)."""
    target = run.components.get(f"span:{component_span_id(run.key, item.vertex_id)}")
    if target is not None:  # the trace's own span for this vertex: re-key it by vertex id
        del run.components[target.vertex_id]
        target.vertex_id = item.vertex_id
        run.components[item.vertex_id] = target
    c = run.components.get(item.vertex_id)
    if c is None:
        c = run.components[item.vertex_id] = Component(
            item.vertex_id, item.vertex_id.rsplit("-", 1)[0], item.start_ns, item.end_ns
        )
    elif target is None and item.duration_ns:  # no trace timing: the build's own is the best there is
        c.start_ns, c.end_ns = min(c.start_ns, item.start_ns), max(c.end_ns, item.end_ns)
    c.error = c.error or item.error
    c.inputs = c.inputs if c.inputs is not None else item.inputs
    c.outputs = c.outputs if c.outputs is not None else item.outputs
    for k, v in item.attributes.items():
        if v is None:
            continue
        if k == "skillflaw.transaction.target_id":
            targets = c.attributes.setdefault("skillflaw.transaction.target_ids", [])
            if v not in targets:
                targets.append(str(v))
        else:
            c.attributes[k] = v
    c.attributes[f"skillflaw.{item.kind}"] = c.attributes.get(f"skillflaw.{item.kind}", 0) + 1
    if item.error and run.error is None:
        run.error = f"{c.name}: {item.error}"


def covering(runs: Iterable[FlowRun], item_flow: str, ns: int) -> FlowRun | None:
    """The flow's run whose window holds ``ns``, else the nearest within ``WINDOW_SLACK_NS`` (runs a second apart
    must not swallow each other's items)."""
    best, best_gap = None, WINDOW_SLACK_NS + 1
    for run in runs:
        if run.flow_id != item_flow:
            continue
        gap = max(run.start_ns - ns, ns - run.end_ns, 0)
        if gap < best_gap:
            best, best_gap = run, gap
    return best


def synthetic_runs(items: list[Item], flow_name: str) -> list[FlowRun]:
    """Group one flow's uncovered items into runs: executions that overlap or follow within ``RUN_GAP_NS``."""
    runs: list[FlowRun] = []
    current: FlowRun | None = None
    for item in sorted(items, key=lambda i: (i.start_ns, i.end_ns, i.id)):
        if current is None or item.start_ns > current.end_ns + RUN_GAP_NS:
            current = FlowRun(
                f"{item.flow_id}:{item.id}", item.flow_id, flow_name, item.start_ns, item.end_ns, synthetic=True
            )
            runs.append(current)
        current.end_ns = max(current.end_ns, item.end_ns)
        merge(current, item)
    return runs
