"""The two vendor formats as ingest: apps already on Observatory's or FlightDeck's SDK can point at otel-bridge.

``POST /api/report`` Observatory events and ``POST /v1/events`` FlightDeck RunEvents become rows of the same
``spans`` / ``runs`` / ``events`` tables the OTLP path fills. Ids that are not UUIDs (Observatory's SDK sends ULIDs)
are mapped to a stable UUID; the original is kept in the row's attributes.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from otel_bridge.exporters.clickhouse import event_row
from otel_bridge.exporters.rows import RunRow, SpanRow
from otel_bridge.flightdeck_schema import RunEvent
from otel_bridge.processors.observatory import CUSTOM_EVENTS, EVENT_TYPES

OBSERVATORY_KEYS = ("name", "type", "run_id", "timestamp")


class IngestError(ValueError):
    """One event that cannot be stored; the message names it by index."""


def stable_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return str(uuid.UUID(bytes=hashlib.blake2b(str(value).encode(), digest_size=16).digest()))


def _ns(timestamp: Any, where: str) -> int:
    if not isinstance(timestamp, str):
        raise IngestError(f"{where}.timestamp: expected an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise IngestError(f"{where}.timestamp: not ISO 8601: {timestamp!r}") from None
    if dt.tzinfo is None:
        raise IngestError(f"{where}.timestamp: needs a UTC offset (e.g. Z)")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _int(event: Mapping[str, Any], key: str, where: str) -> int:
    value = event.get(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IngestError(f"{where}.{key}: expected an integer >= 0")
    return value


def _seconds(event: Mapping[str, Any], key: str, where: str) -> float:
    value = event.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise IngestError(f"{where}.{key}: expected a number of seconds >= 0")
    return float(value)


def observatory_rows(events: Any) -> list[tuple[str, tuple]]:
    """Observatory ``{"events": [...]}`` → rows; raises IngestError naming the first bad event."""
    if not isinstance(events, list):
        raise IngestError("events: expected a list")
    rows = []
    for i, event in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(event, Mapping):
            raise IngestError(f"{where}: expected an object")
        missing = [k for k in OBSERVATORY_KEYS if k not in event]
        if missing:
            raise IngestError(f"{where}: missing {', '.join(missing)}")
        name, kind = event["name"], event["type"]
        if name in CUSTOM_EVENTS:
            _ns(event["timestamp"], where)
            rows.append(("events", event_row({**event, "run_id": stable_uuid(str(event["run_id"]))})))
        elif kind in EVENT_TYPES and name in (f"{kind}_start", f"{kind}_end"):
            rows.append(("spans", _observatory_span(event, where)))
        else:
            raise IngestError(f"{where}: unknown event {name!r} of type {kind!r}")
    return rows


def _observatory_span(event: Mapping[str, Any], where: str) -> SpanRow:
    meta = event.get("metadata") if isinstance(event.get("metadata"), Mapping) else {}
    at = _ns(event["timestamp"], where)
    ended = event["name"].endswith("_end")
    latency_ms = _seconds(event, "latency", where) * 1000 if ended else 0.0
    start = at - int(latency_ms * 1e6) if ended else at
    run = stable_uuid(str(event["run_id"]))
    parent = event.get("parent_run_id")
    tags = meta.get("tags") or event.get("tags") or []
    attributes = {"observatory.run_id": str(event["run_id"])}
    if event.get("app_id"):
        attributes["observatory.app_id"] = str(event["app_id"])
    text = lambda v: "" if v is None else (v if isinstance(v, str) else str(v))  # noqa: E731
    status = ("error" if event.get("status") == "error" else "success") if ended else "started"
    error = event.get("error")
    return SpanRow.of(
        text(meta.get("trace_id")), text(meta.get("span_id")), run, "", stable_uuid(str(parent)) if parent else None,
        event["type"], "", text(meta.get("name") or event["type"]),
        text(meta.get("service.name")), text(meta.get("service.version")), text(meta.get("deployment.environment")),
        text(meta.get("release_id")), text(meta.get("agent")), "", text(event.get("model")), text(meta.get("provider")),
        _int(event, "prompt_tokens", where), _int(event, "cached_tokens", where), _int(event, "cache_write_tokens", where),
        _int(event, "completion_tokens", where), _int(event, "reasoning_tokens", where),
        start, at, latency_ms, status, text(error.get("type") if isinstance(error, Mapping) else error),
        text(meta.get("user_id")), text(meta.get("user_email") or event.get("user_email")), text(meta.get("conversation_id")),
        text(meta.get("session_id")), [str(t) for t in tags] if isinstance(tags, list) else [], attributes,
        text(event.get("input"))[:4096], text(event.get("output"))[:4096], at * 2 + (1 if ended else 0),
    )  # fmt: skip


def flightdeck_rows(events: Any) -> list[tuple[str, tuple]]:
    """FlightDeck RunEvents, validated as FlightDeck 1.3.0 validates them, → ``runs`` rows (run_end only)."""
    if not isinstance(events, list) or not events:
        raise IngestError("events: expected a non-empty list")
    rows = []
    for i, raw in enumerate(events):
        try:
            event = RunEvent.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise IngestError(f"events[{i}]: invalid RunEvent: {problems}") from None
        if event.type == "run_end":
            rows.append(("runs", _run_row(event, f"events[{i}]")))
    return rows


def _run_row(e: RunEvent, where: str) -> RunRow:
    end = _ns(e.timestamp.isoformat() if isinstance(e.timestamp, datetime) else str(e.timestamp), where)
    latency = float(e.metrics.latency_ms or 0) if e.metrics else 0.0
    m = e.usage.model
    request = e.request
    labels = e.labels or {}
    tools = {t.tool_name: t.invocations for t in e.usage.tools}
    inclusive = m.input_tokens + m.cached_input_tokens  # FlightDeck's input excludes cache reads; ours includes them
    return RunRow.of(
        stable_uuid(e.run_id), (request.trace_id if request else None) or "", (request.span_id if request else None) or "",
        e.release_id, e.agent_id, e.tenant_id, e.task_id, e.environment,
        labels.get("service.name", ""), labels.get("service.version", ""),
        end - int(latency * 1e6), end, latency, bool(e.metrics.success if e.metrics else True),
        (e.metrics.error_type if e.metrics else None) or "", 0,
        inclusive, m.cached_input_tokens, 0, m.output_tokens, 0, [m.model],
        [m.model], [m.provider], [1], [inclusive], [m.cached_input_tokens], [0], [m.output_tokens], [0],
        tools, end * 2 + 1,
    )  # fmt: skip


CONVERTERS = {"observatory": observatory_rows, "flightdeck": flightdeck_rows}


def rows_of(kind: str, events: Any, redactor: Any = None) -> list[tuple[str, Any]]:
    """Validated rows of one vendor-format body's events, every text through the redaction stage first."""
    if redactor:
        from otel_bridge.processors.stages import redact_value

        events = redact_value(events, redactor)
    try:
        return CONVERTERS[kind](events)
    except IngestError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:  # a client's odd value, not ours
        raise IngestError(f"events: a value could not be read ({type(exc).__name__}: {exc})") from None
