"""OTLP protobuf as the decoder reads it (``spans.spans_from_otlp_proto``): wire-compatible views that make its
reads cheap, and the lazy attribute mappings over them.

- ``TracesEnvelope``: ``ExportTraceServiceRequest`` with ``ScopeSpans.spans`` declared ``repeated bytes`` instead of
  ``repeated Span``. A length-delimited field reads the same either way
  (https://protobuf.dev/programming-guides/encoding/#length-types), so one parse gives every span's own bytes; their
  length is the span's encoded size as received (what run assembly bounds), which ``Span.ByteSize()`` on upb would
  compute by encoding the span again.
- ``MappedSpan``: ``Span`` with ``attributes`` declared ``map<string, AnyValue>`` instead of ``repeated KeyValue``.
  A map is encoded as repeated entries of ``key = 1, value = 2``
  (https://protobuf.dev/programming-guides/proto3/#backwards), which is exactly ``KeyValue``: upb indexes the keys in
  C while parsing, so finding a dozen known keys among a span's attributes costs no Python object per attribute.
  What differs from ``repeated KeyValue``: a repeated key keeps its last value (as every reader here did), and the
  map does not keep the wire order (``spans.ProtoAttributes`` iterates by key).

Every string and nested value is parsed and UTF-8-checked by upb as the standard classes do, so a body is refused
or accepted exactly as ``ExportTraceServiceRequest.FromString`` would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2  # noqa: F401 - registers the types the view refers to
from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: F401
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: F401

_FILE = "otel_bridge/otlp_proto.proto"
_PACKAGE = "otel_bridge.envelope"
_F = descriptor_pb2.FieldDescriptorProto


def _field(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int, repeated: bool = False,
           type_name: str = "") -> None:  # fmt: skip
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    f = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        f.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    """trace.proto's request, resource-spans and scope-spans messages with field numbers unchanged."""
    fd = descriptor_pb2.FileDescriptorProto(
        name=_FILE,
        package=_PACKAGE,
        syntax="proto3",
        dependency=[
            "opentelemetry/proto/common/v1/common.proto",
            "opentelemetry/proto/resource/v1/resource.proto",
            "opentelemetry/proto/trace/v1/trace.proto",
        ],
    )
    _mapped_span(fd.message_type.add(name="Span"))
    scope_spans = fd.message_type.add(name="ScopeSpans")
    _field(scope_spans, "scope", 1, _F.TYPE_MESSAGE, type_name=".opentelemetry.proto.common.v1.InstrumentationScope")
    _field(scope_spans, "spans", 2, _F.TYPE_BYTES, repeated=True)  # each an encoded opentelemetry Span
    _field(scope_spans, "schema_url", 3, _F.TYPE_STRING)
    resource_spans = fd.message_type.add(name="ResourceSpans")
    _field(resource_spans, "resource", 1, _F.TYPE_MESSAGE, type_name=".opentelemetry.proto.resource.v1.Resource")
    _field(resource_spans, "scope_spans", 2, _F.TYPE_MESSAGE, repeated=True, type_name=f".{_PACKAGE}.ScopeSpans")
    _field(resource_spans, "schema_url", 3, _F.TYPE_STRING)
    request = fd.message_type.add(name="ExportTraceServiceRequest")
    _field(request, "resource_spans", 1, _F.TYPE_MESSAGE, repeated=True, type_name=f".{_PACKAGE}.ResourceSpans")
    return fd


_TRACE = ".opentelemetry.proto.trace.v1"


def _mapped_span(span: descriptor_pb2.DescriptorProto) -> None:
    """trace.proto's ``Span``, field for field, but ``attributes`` a map."""
    entry = span.nested_type.add(name="AttributesEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=".opentelemetry.proto.common.v1.AnyValue")
    for name, number, kind in (
        ("trace_id", 1, _F.TYPE_BYTES), ("span_id", 2, _F.TYPE_BYTES), ("trace_state", 3, _F.TYPE_STRING),
        ("parent_span_id", 4, _F.TYPE_BYTES), ("name", 5, _F.TYPE_STRING), ("start_time_unix_nano", 7, _F.TYPE_FIXED64),
        ("end_time_unix_nano", 8, _F.TYPE_FIXED64), ("dropped_attributes_count", 10, _F.TYPE_UINT32),
        ("dropped_events_count", 12, _F.TYPE_UINT32), ("dropped_links_count", 14, _F.TYPE_UINT32),
        ("flags", 16, _F.TYPE_FIXED32),
    ):  # fmt: skip
        _field(span, name, number, kind)
    _field(span, "kind", 6, _F.TYPE_ENUM, type_name=f"{_TRACE}.Span.SpanKind")
    _field(span, "attributes", 9, _F.TYPE_MESSAGE, repeated=True, type_name=f".{_PACKAGE}.Span.AttributesEntry")
    _field(span, "events", 11, _F.TYPE_MESSAGE, repeated=True, type_name=f"{_TRACE}.Span.Event")
    _field(span, "links", 13, _F.TYPE_MESSAGE, repeated=True, type_name=f"{_TRACE}.Span.Link")
    _field(span, "status", 15, _F.TYPE_MESSAGE, type_name=f"{_TRACE}.Status")


def _classes() -> tuple[type, type]:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        pool.Add(_file())
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest")),
        get(pool.FindMessageTypeByName(f"{_PACKAGE}.Span")),
    )


# ``TracesEnvelope.FromString(body).resource_spans[i].scope_spans[j].spans[k]`` is the k-th span's bytes;
# ``MappedSpan.FromString(those bytes)`` the span, its attributes a map.
TracesEnvelope, MappedSpan = _classes()


# ---------------------------------------------------------------------------------------------- attributes

_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value", "bytes_value"})


def proto_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as lists, key-value lists as dicts, unset as None)."""
    kind = v.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(v, kind)
    if kind == "array_value":
        return [proto_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: proto_value(kv.value) for kv in v.kvlist_value.values}
    return None


class SpanSource:
    """One protobuf span's encoded bytes and, while it is parsed, its parse (``MappedSpan``): what its
    ``ProtoAttributes`` and ``ProtoEvents`` read. ``release`` drops the parse while the span waits for its run
    (upb's parse of a span takes ~4 KB besides its wire bytes); the next read parses the bytes again, once for
    both, which costs a few microseconds against the hundreds a conversion takes."""

    __slots__ = ("encoded", "_span")

    def __init__(self, encoded: bytes, span: Any) -> None:
        self.encoded, self._span = encoded, span

    def span(self) -> Any:
        s = self._span
        if s is None:
            s = self._span = MappedSpan.FromString(self.encoded)
        return s

    def release(self) -> None:
        self._span = None


class ProtoAttributes(Mapping[str, Any]):
    """Attributes of a protobuf span, converted to Python values on first read.

    They arrive as the ``map<string, AnyValue>`` upb built while parsing (``MappedSpan``): looking a
    key up costs no Python object per attribute. The map keeps no wire order, so iteration is by key (sorted), the
    same on every run. ``release`` lets go of the map (values already read stay); it is read again from the span's
    ``SpanSource`` when needed; its key names stay (one shared str per name, kept by the first ``pick``), so a
    later ``pick`` that wants none of them — a span without message content, at conversion — parses nothing."""

    __slots__ = ("_map", "_done", "_source", "_names")

    def __init__(self, values: Any, source: SpanSource | None = None) -> None:
        self._map = values
        self._done: dict[str, Any] | None = None  # made on the first read: most spans are read through ``pick``
        self._source = source
        self._names: Sequence[str] | None = None

    def _values(self) -> Any:
        values = self._map
        if values is None:
            values = self._map = self._source.span().attributes  # type: ignore[union-attr]
        return values

    def _keys(self) -> Any:
        """The key names: kept by the first ``pick`` (iterating upb's map makes a str per key each time, slowly),
        else the map's own."""
        return self._names if self._names is not None else self._map

    def release(self) -> None:
        if self._source is not None and self._map is not None:
            self._names = shared_names(self._map if self._names is None else self._names)
            self._map = None

    def __getitem__(self, key: str) -> Any:
        done = self._done
        if done is None:
            done = self._done = {}
        elif key in done:
            return done[key]
        values = self._values()
        if key not in values:  # a message-valued map would insert a missing key on ``[]``
            raise KeyError(key)
        value = done[key] = _any_value(values[key])
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        values = self._map  # a hash lookup while parsed; the kept names (a short tuple) once released
        return isinstance(key, str) and key in (values if values is not None else self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys()))

    def __len__(self) -> int:
        return len(self._keys())

    def pick(self, keys: frozenset[str], prefix: str | tuple[str, ...], rest: dict[str, Any] | None = None) -> dict:
        """One pass converting only the wanted keys (and those under ``prefix``, into ``rest`` when given): the
        recogniser's hot path. The span is parsed again only when one is wanted."""
        out: dict[str, Any] = {}
        under = out if rest is None else rest
        values = self._map
        names = self._names
        if names is None:  # the first pick (recognition) keeps them: release and later picks need no map walk
            names = self._names = list(values)
        for key in names:
            if key in keys:
                target = out
            elif key.startswith(prefix):
                target = under
            else:
                continue
            if values is None:
                values = self._values()
            v = values[key]
            value = v.string_value or v.int_value  # most values are strings or counts: no WhichOneof for them
            target[key] = value if value else _any_value(v)
        return out


_NAMES: dict[str, str] = {}  # attribute key or event name → one shared str of it
_MAX_NAMES = 1 << 16


def shared_names(names: Iterable[str]) -> tuple[str, ...]:
    """One str per distinct name, for what held spans keep of their parse."""
    if len(_NAMES) > _MAX_NAMES:  # names of unbounded variety (ids in names): stop sharing old ones
        _NAMES.clear()
    if not isinstance(names, list | tuple):  # a upb map: walked once
        names = list(names)
    return tuple(map(_NAMES.setdefault, names, names))


def _any_value(v: Any) -> Any:
    text = v.string_value
    if text:
        return text
    kind = v.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(v, kind)
    return proto_value(v)


def _kv_dict(key_values: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


class EventAttributes(Mapping[str, Any]):
    """A span event's attributes (``repeated KeyValue``, wire order kept), converted all at once on first read:
    most events are never read (an exception event is read when its span failed, message events when content is)."""

    __slots__ = ("_kvs", "_dict")

    def __init__(self, key_values: Any) -> None:
        self._kvs = key_values
        self._dict: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._dict is None:
            self._dict = _kv_dict(self._kvs)
        return self._dict

    def __getitem__(self, key: str) -> Any:
        return self._read()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._read().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def resource_attributes(resource: Any) -> dict[str, Any]:
    """A resource's attributes, converted once per distinct resource: a service sends the same one with every
    request (and a Collector's batch holds a few services'). Nothing downstream mutates them."""
    if not resource.attributes:
        return {}
    encoded = resource.SerializeToString()
    attributes = _RESOURCES.get(encoded)
    if attributes is None:
        if len(_RESOURCES) >= 256:
            _RESOURCES.clear()
        attributes = _RESOURCES[encoded] = _kv_dict(resource.attributes)
    return attributes


_RESOURCES: dict[bytes, dict[str, Any]] = {}
