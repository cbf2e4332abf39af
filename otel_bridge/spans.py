"""BridgeSpan: the one normalised span model every receiver produces (DESIGN decision 1).

Three builders, one per source: an SDK ``ReadableSpan``, an OTLP protobuf ``ExportTraceServiceRequest`` and
OTLP/JSON as the OTLP specification maps it (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding).
GenAI log records (message content some instrumentations send as logs) get the same treatment as ``BridgeLog``.

Protobuf attributes stay lazy: a span keeps the attribute map upb built while parsing (``otlp_proto``) and
converts a value only when a processor reads it, because the recogniser looks at a dozen keys of spans that carry
dozens. While run assembly holds a span it keeps only the span's encoded bytes (``release_parse``): upb's parse
takes ~4 KB more, and is made again when the run is converted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_bridge.otlp_proto import (
    EventAttributes,
    MappedSpan,
    ProtoAttributes,
    SpanSource,
    TracesEnvelope,
    proto_value,
    resource_attributes,
    shared_names,
)

# OTLP enums (the SDK's SpanKind is offset by one from the wire's).
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
SPAN_KIND_NAMES = ("unspecified", "internal", "server", "client", "producer", "consumer")
_KIND_BY_NAME = {f"SPAN_KIND_{n.upper()}": i for i, n in enumerate(SPAN_KIND_NAMES)}
_STATUS_BY_NAME = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


@dataclass(slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, Any]


@dataclass(slots=True)
class BridgeSpan:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None
    name: str
    kind: int  # OTLP SpanKind
    start_ns: int
    end_ns: int
    status_code: int  # OTLP StatusCode
    status_message: str
    attributes: Mapping[str, Any]
    events: Sequence[SpanEvent] = field(default_factory=list)  # a list, or ``ProtoEvents`` read on demand
    resource: Mapping[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    parent_remote: bool = False  # the parent lives in another process (W3C context propagated in)
    size: int = 0  # encoded bytes as received (OTLP protobuf), 0 when unknown: what run assembly bounds

    @property
    def local_root(self) -> bool:
        """The first span of this trace in this process: no parent, or a remote one."""
        return self.parent_span_id is None or self.parent_remote


@dataclass(slots=True)
class BridgeLog:
    """A log record that may carry GenAI event content for a span (e.g. ``gen_ai.user.message``)."""

    trace_id: str | None
    span_id: str | None
    time_ns: int
    event_name: str
    body: Any
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any] = field(default_factory=dict)


class Decoded(NamedTuple):
    """What a receiver got out of one request: the good items, and how many were refused and why."""

    items: list
    rejected: int = 0
    error: str | None = None


class DecodeError(ValueError):
    """The request as a whole could not be read (bad protobuf, bad JSON, wrong top-level shape)."""


# ---------------------------------------------------------------------------------------------- protobuf


def pick(
    attrs: Mapping[str, Any], keys: frozenset[str], prefix: str | tuple[str, ...], rest: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The wanted attributes of any span as a plain dict; those matched only by ``prefix`` go to ``rest`` if given."""
    if type(attrs) is ProtoAttributes:  # noqa: E721 - exact type: an ABC isinstance check costs more than the pick
        return attrs.pick(keys, prefix, rest)
    if rest is None:
        return {k: v for k, v in attrs.items() if k in keys or k.startswith(prefix)}
    out = {}
    for k, v in attrs.items():
        if k in keys:
            out[k] = v
        elif k.startswith(prefix):
            rest[k] = v
    return out


class ProtoEvents(Sequence[SpanEvent]):
    """A protobuf span's events, made into ``SpanEvent``s on first read: most are never read (an exception event
    when its span failed, message events when content is). ``release`` lets go of them (and of the parse they
    point into) but keeps their names, so a stage looking for an event it does not have parses nothing; they are
    read again from the span's ``SpanSource`` when needed."""

    __slots__ = ("_events", "_list", "_source", "_count", "_names")

    def __init__(self, events: Any, source: SpanSource | None = None) -> None:
        self._events, self._source, self._count = events, source, len(events)
        self._list: list[SpanEvent] | None = None
        self._names: tuple[str, ...] | None = None

    def _parsed(self) -> Any:
        events = self._events
        if events is None:
            events = self._events = self._source.span().events  # type: ignore[union-attr]
        return events

    def _read(self) -> list[SpanEvent]:
        if self._list is None:
            self._list = [SpanEvent(e.name, e.time_unix_nano, EventAttributes(e.attributes)) for e in self._parsed()]
        return self._list

    def names(self) -> Sequence[str]:
        """The events' names, without making the events."""
        if self._names is not None:
            return self._names
        return [e.name for e in (self._list if self._list is not None else self._parsed())]

    def release(self) -> None:
        if self._source is not None:
            if self._names is None and self._count:
                self._names = shared_names(self.names())
            self._events = self._list = None

    def __getitem__(self, index: Any) -> Any:
        return self._read()[index]

    def __iter__(self) -> Iterator[SpanEvent]:
        return iter(self._read())

    def __len__(self) -> int:
        return self._count


def has_event(events: Sequence[SpanEvent], names: Collection[str]) -> bool:
    """Whether a span has an event named one of ``names``, read from the names alone: a stage looking for a few
    kinds of event (custom, message) makes no event of a span that has none of them — most spans."""
    if not events:
        return False
    found = events.names() if type(events) is ProtoEvents else [e.name for e in events]  # noqa: E721 - as ``pick``
    return any(name in names for name in found)


def release_parse(span: BridgeSpan) -> None:
    """Let a protobuf span's parse go while it is held (run assembly): it keeps its encoded bytes, the values
    already read and its own fields, and reads attributes and events from the bytes again when a stage asks.
    Other spans (OTLP/JSON, in-process) hold plain Python values and are left as they are."""
    attributes = span.attributes
    if type(attributes) is ProtoAttributes:  # noqa: E721 - exact type, as ``pick``
        attributes.release()
        events = span.events
        if type(events) is ProtoEvents:  # noqa: E721
            events.release()
        source = attributes._source  # noqa: SLF001 - the source both share
        if source is not None:
            source.release()


def _decode_error(exc: Exception) -> DecodeError:
    return DecodeError(f"body is not an OTLP ExportTraceServiceRequest protobuf: {exc}")


def spans_from_otlp_proto(request: ExportTraceServiceRequest | bytes) -> Decoded:
    """OTLP protobuf → BridgeSpans. Spans with invalid ids are refused and counted, the rest kept.

    The request is read through ``otlp_proto``'s views: each span comes still encoded (its length is its size as
    received, ``BridgeSpan.size``) and is parsed with its attributes as a map; an unreadable span makes the whole
    body unreadable, as the standard request parse would."""
    body = request.SerializeToString() if isinstance(request, ExportTraceServiceRequest) else bytes(request)
    try:
        envelope = TracesEnvelope.FromString(body)
    except Exception as exc:  # protobuf raises DecodeError, but upb may raise others on garbage
        raise _decode_error(exc) from exc
    out: list[BridgeSpan] = []
    append, make, parse, hexes = out.append, BridgeSpan, MappedSpan.FromString, {}
    rejected, error = 0, None
    for rs in envelope.resource_spans:
        resource = resource_attributes(rs.resource)
        for ss in rs.scope_spans:
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for encoded in ss.spans:
                try:
                    s = parse(encoded)
                except Exception as exc:
                    raise _decode_error(exc) from exc
                trace_id, span_id = s.trace_id, s.span_id
                if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO16 or span_id == _ZERO8:
                    rejected += 1
                    error = error or f"span {s.name!r}: trace_id must be 16 bytes and span_id 8 bytes, non-zero"
                    continue
                trace_hex = hexes.get(trace_id)
                if trace_hex is None:  # the spans of a trace usually travel together
                    trace_hex = hexes[trace_id] = trace_id.hex()
                parent, events = s.parent_span_id, s.events
                source = SpanSource(encoded, s)
                if s.HasField("status"):  # most spans leave it unset: one read instead of three
                    status = s.status
                    code, message = status.code, status.message
                else:
                    code, message = STATUS_UNSET, ""
                append(
                    make(
                        trace_hex,
                        span_id.hex(),
                        parent.hex() if len(parent) == 8 else None,
                        s.name,
                        s.kind,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        code,
                        message,
                        ProtoAttributes(s.attributes, source),
                        ProtoEvents(events, source) if events else (),
                        resource,
                        scope_name,
                        scope_version,
                        s.flags & _REMOTE_FLAGS == _REMOTE_FLAGS,
                        len(encoded),
                    )
                )
    return Decoded(out, rejected, error)


_ZERO16, _ZERO8 = bytes(16), bytes(8)
# SpanFlags: CONTEXT_HAS_IS_REMOTE (0x100) | CONTEXT_IS_REMOTE (0x200), see trace.proto.
_REMOTE_FLAGS = 0x300


def logs_from_otlp_proto(request: ExportLogsServiceRequest | bytes) -> Decoded:
    if isinstance(request, (bytes, bytearray, memoryview)):
        try:
            request = ExportLogsServiceRequest.FromString(bytes(request))
        except Exception as exc:
            raise DecodeError(f"body is not an OTLP ExportLogsServiceRequest protobuf: {exc}") from exc
    out: list[BridgeLog] = []
    for rl in request.resource_logs:
        resource = {kv.key: proto_value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for r in sl.log_records:
                attrs = {kv.key: proto_value(kv.value) for kv in r.attributes}
                out.append(
                    BridgeLog(
                        r.trace_id.hex() if len(r.trace_id) == 16 and r.trace_id != _ZERO16 else None,
                        r.span_id.hex() if len(r.span_id) == 8 and r.span_id != _ZERO8 else None,
                        r.time_unix_nano or r.observed_time_unix_nano,
                        r.event_name or str(attrs.get("event.name") or ""),
                        proto_value(r.body) if r.HasField("body") else None,
                        attrs,
                        resource,
                    )
                )
    return Decoded(out)


# ---------------------------------------------------------------------------------------------- OTLP/JSON


def _get(obj: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    """OTLP/JSON keys are lowerCamelCase; protobuf's JSON parser also accepts the field names, so do we."""
    value = obj.get(camel)
    if value is None:
        value = obj.get(snake, default)
    return default if value is None else value


def _json_int(value: Any, what: str) -> int:
    """64-bit integers arrive as JSON strings or numbers."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{what} must be an integer, got {value!r}")


def _json_value(v: Any) -> Any:
    if not isinstance(v, Mapping):
        raise ValueError(f"attribute value must be an AnyValue object, got {type(v).__name__}")
    if "stringValue" in v or "string_value" in v:
        return _get(v, "stringValue", "string_value", "")
    if "intValue" in v or "int_value" in v:
        return _json_int(_get(v, "intValue", "int_value"), "intValue")
    if "doubleValue" in v or "double_value" in v:
        return float(_get(v, "doubleValue", "double_value"))
    if "boolValue" in v or "bool_value" in v:
        return bool(_get(v, "boolValue", "bool_value"))
    if "arrayValue" in v or "array_value" in v:
        return [_json_value(x) for x in _get(v, "arrayValue", "array_value", {}).get("values", [])]
    if "kvlistValue" in v or "kvlist_value" in v:
        return _json_attrs(_get(v, "kvlistValue", "kvlist_value", {}).get("values", []))
    if "bytesValue" in v or "bytes_value" in v:
        return base64.b64decode(_get(v, "bytesValue", "bytes_value"))
    return None


def _json_attrs(key_values: Any) -> dict[str, Any]:
    if not isinstance(key_values, list):
        raise ValueError("attributes must be a list of {key, value}")
    return {kv["key"]: _json_value(kv.get("value", {})) for kv in key_values}


def _hex_id(value: Any, size: int, what: str, required: bool = True) -> str | None:
    if value in (None, ""):
        if required:
            raise ValueError(f"{what} is missing")
        return None
    if not isinstance(value, str) or len(value) != size * 2:
        raise ValueError(f"{what} must be {size * 2} hex characters, got {value!r}")
    try:
        raw = binascii.unhexlify(value)
    except binascii.Error:
        raise ValueError(f"{what} must be hex, got {value!r}") from None
    if raw == bytes(size):
        raise ValueError(f"{what} must not be all zeros")
    return value.lower()


def _enum(value: Any, names: Mapping[str, int], what: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _json_int(value if value is not None else 0, what)


def _json_span(s: Mapping[str, Any], resource: Mapping[str, Any], scope: Mapping[str, Any]) -> BridgeSpan:
    status = _get(s, "status", "status", {})
    events = [
        SpanEvent(
            e.get("name", ""),
            _json_int(_get(e, "timeUnixNano", "time_unix_nano", 0), "event timeUnixNano"),
            _json_attrs(e.get("attributes", [])),
        )
        for e in s.get("events", [])
    ]
    return BridgeSpan(
        _hex_id(_get(s, "traceId", "trace_id"), 16, "traceId"),
        _hex_id(_get(s, "spanId", "span_id"), 8, "spanId"),
        _hex_id(_get(s, "parentSpanId", "parent_span_id"), 8, "parentSpanId", required=False),
        s.get("name", ""),
        _enum(s.get("kind"), _KIND_BY_NAME, "kind"),
        _json_int(_get(s, "startTimeUnixNano", "start_time_unix_nano", 0), "startTimeUnixNano"),
        _json_int(_get(s, "endTimeUnixNano", "end_time_unix_nano", 0), "endTimeUnixNano"),
        _enum(status.get("code"), _STATUS_BY_NAME, "status.code"),
        status.get("message", ""),
        _json_attrs(s.get("attributes", [])),
        events,
        resource,
        scope.get("name", ""),
        scope.get("version", ""),
        _json_int(s.get("flags", 0), "flags") & _REMOTE_FLAGS == _REMOTE_FLAGS,
    )


def _json_document(body: bytes | str | Mapping[str, Any], top: str) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get(top, []), list):
        raise DecodeError(f"OTLP/JSON body must be an object with a {top!r} array")
    return doc


def _walk_json(doc: Mapping[str, Any], top: str, scopes: str, leaf: str, build: Any) -> Decoded:
    """Walk resource → scope → leaf; a malformed leaf is refused and counted, its neighbours kept."""
    try:
        return _walk_json_blocks(doc, top, scopes, leaf, build)
    except (AttributeError, TypeError) as exc:  # a resource or scope block that is not an object, a list that is not
        raise DecodeError(f"body could not be decoded as OTLP json: {top!r} has the wrong shape: {exc}") from exc


def _walk_json_blocks(doc: Mapping[str, Any], top: str, scopes: str, leaf: str, build: Any) -> Decoded:
    out: list = []
    rejected, error = 0, None
    for block in doc.get(top, []):
        try:
            resource = _json_attrs(block.get("resource", {}).get("attributes", []))
            scope_blocks = list(block.get(scopes, []))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            n = sum(len(sb.get(leaf, [])) for sb in block.get(scopes, []) if isinstance(sb, dict))
            rejected, error = rejected + n, error or f"{top}: resource: {exc}"
            continue
        for sb in scope_blocks:
            scope = sb.get("scope") or {}
            for i, item in enumerate(sb.get(leaf, [])):
                try:
                    out.append(build(item, resource, scope))
                except (AttributeError, KeyError, TypeError, ValueError) as exc:
                    rejected += 1
                    error = error or f"{leaf}[{i}]: {exc}"
    return Decoded(out, rejected, error)


def spans_from_otlp_json(body: bytes | str | Mapping[str, Any]) -> Decoded:
    """OTLP/JSON → BridgeSpans (hex ids, lowerCamelCase keys, int64 as string or number, integer enums)."""
    doc = _json_document(body, "resourceSpans")
    return _walk_json(doc, "resourceSpans", "scopeSpans", "spans", _json_span)


def _log_id(value: Any, size: int, what: str) -> str | None:
    """A log record outside any span carries no ids, or all-zero ones: both mean "none"."""
    if isinstance(value, str) and value and set(value) == {"0"}:
        return None
    return _hex_id(value, size, what, required=False)


def _json_log(r: Mapping[str, Any], resource: Mapping[str, Any], scope: Mapping[str, Any]) -> BridgeLog:
    attrs = _json_attrs(r.get("attributes", []))
    body = r.get("body")
    return BridgeLog(
        _log_id(_get(r, "traceId", "trace_id"), 16, "traceId"),
        _log_id(_get(r, "spanId", "span_id"), 8, "spanId"),
        _json_int(
            _get(r, "timeUnixNano", "time_unix_nano", 0)
            or _get(r, "observedTimeUnixNano", "observed_time_unix_nano", 0),
            "timeUnixNano",
        ),
        _get(r, "eventName", "event_name", "") or str(attrs.get("event.name") or ""),
        _json_value(body) if body is not None else None,
        attrs,
        resource,
    )


def logs_from_otlp_json(body: bytes | str | Mapping[str, Any]) -> Decoded:
    doc = _json_document(body, "resourceLogs")
    return _walk_json(doc, "resourceLogs", "scopeLogs", "logRecords", _json_log)


# ---------------------------------------------------------------------------------------------- SDK


def span_from_sdk(span: Any) -> BridgeSpan:
    """An SDK ``ReadableSpan`` (finished, or still running when called from ``on_start``)."""
    ctx = span.context
    parent = span.parent
    status = span.status
    resource = _sdk_resource(span.resource)
    scope = span.instrumentation_scope
    return BridgeSpan(
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
        f"{parent.span_id:016x}" if parent is not None and parent.span_id else None,
        span.name,
        span.kind.value + 1,
        span.start_time or 0,
        span.end_time or 0,
        status.status_code.value if status is not None else STATUS_UNSET,
        (status.description or "") if status is not None else "",
        _copy(span.attributes),
        [SpanEvent(e.name, e.timestamp, _copy(e.attributes)) for e in span.events] if span.events else [],
        resource,
        scope.name if scope is not None else "",
        (scope.version or "") if scope is not None else "",
        bool(parent is not None and parent.is_remote),
    )


def _copy(attributes: Any) -> dict[str, Any]:
    """A plain dict of SDK attributes. ``copy()`` reaches ``BoundedAttributes._dict.copy()`` (through the read-only
    proxy) in C; ``dict(...)`` would walk the Mapping protocol key by key in Python."""
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    return copy() if copy is not None else dict(attributes)


_resources: dict[int, tuple[Any, dict[str, Any]]] = {}


def _sdk_resource(resource: Any) -> Mapping[str, Any]:
    """A provider has one Resource for all its spans: copy its attributes to a plain dict once."""
    if resource is None:
        return {}
    cached = _resources.get(id(resource))
    if cached is None or cached[0] is not resource:
        if len(_resources) > 64:
            _resources.clear()
        cached = _resources[id(resource)] = (resource, _copy(resource.attributes))
    return cached[1]


def log_from_sdk(record: Any) -> BridgeLog:
    """An SDK log record (``ReadWriteLogRecord``/``ReadableLogRecord``, or a bare API ``LogRecord``)."""
    resource: Mapping[str, Any] = {}
    if hasattr(record, "log_record"):
        resource = record.resource.attributes if record.resource is not None else {}
        record = record.log_record
    attrs = dict(record.attributes or {})
    trace_id, span_id = record.trace_id or 0, record.span_id or 0
    return BridgeLog(
        f"{trace_id:032x}" if trace_id else None,
        f"{span_id:016x}" if span_id else None,
        record.timestamp or record.observed_timestamp or 0,
        getattr(record, "event_name", None) or str(attrs.get("event.name") or ""),
        record.body,
        attrs,
        resource,
    )
