"""The decoder's wire-compatible views (``otel_bridge.otlp_proto``) read every OTLP span exactly as the standard
``ExportTraceServiceRequest`` parse does: same fields, same values, same refusals; only faster."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otel_bridge.otlp_proto import MappedSpan, ProtoAttributes, TracesEnvelope, proto_value
from otel_bridge.spans import DecodeError, spans_from_otlp_proto

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))


def _fields(descriptor) -> dict[int, tuple[str, int, bool]]:
    return {f.number: (f.name, f.type, f.is_repeated) for f in descriptor.fields}


def test_views_keep_every_field_number_name_and_type():
    """A field added to trace.proto must be added here too: the views would otherwise drop it silently."""
    span, mapped = _fields(Span.DESCRIPTOR), _fields(MappedSpan.DESCRIPTOR)
    assert {n: v for n, v in mapped.items() if n != 9} == {n: v for n, v in span.items() if n != 9}
    entry = MappedSpan.DESCRIPTOR.fields_by_number[9].message_type
    key_value = _fields(KeyValue.DESCRIPTOR)
    key_value.pop(3, None)  # key_strindex: the profiles signal's string-table index, never set on spans
    assert entry.GetOptions().map_entry and _fields(entry) == key_value
    request = TracesEnvelope.DESCRIPTOR
    assert _fields(request) == _fields(ExportTraceServiceRequest.DESCRIPTOR)
    resource_spans = request.fields_by_number[1].message_type
    assert _fields(resource_spans) == _fields(ResourceSpans.DESCRIPTOR)
    scope_spans = resource_spans.fields_by_number[2].message_type
    ours, theirs = _fields(scope_spans), _fields(ScopeSpans.DESCRIPTOR)
    assert ours.pop(2) == ("spans", 12, True) and theirs.pop(2)[0] == "spans" and ours == theirs  # 12: TYPE_BYTES


def _reference(body: bytes) -> list[dict]:
    """What the standard classes say, converted the plain way."""
    out = []
    for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
        resource = {kv.key: proto_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "ids": (s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None), "name": s.name,
                    "kind": s.kind, "times": (s.start_time_unix_nano, s.end_time_unix_nano),
                    "status": (s.status.code, s.status.message), "resource": resource,
                    "scope": (ss.scope.name, ss.scope.version), "size": s.ByteSize(),
                    "attributes": {kv.key: proto_value(kv.value) for kv in s.attributes},
                    "events": [(e.name, e.time_unix_nano, {kv.key: proto_value(kv.value) for kv in e.attributes})
                               for e in s.events],
                })  # fmt: skip
    return out


def _ours(body: bytes) -> list[dict]:
    return [
        {
            "ids": (s.trace_id, s.span_id, s.parent_span_id),
            "name": s.name,
            "kind": s.kind,
            "times": (s.start_ns, s.end_ns),
            "status": (s.status_code, s.status_message),
            "resource": s.resource,
            "scope": (s.scope_name, s.scope_version),
            "size": s.size,
            "attributes": dict(s.attributes),
            "events": [(e.name, e.time_ns, dict(e.attributes)) for e in s.events],
        }  # fmt: skip
        for s in spans_from_otlp_proto(body).items
    ]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.traces.pb")), ids=lambda p: p.name.split(".")[0])
def test_every_fixture_decodes_as_the_standard_parse_reads_it(path):
    body = path.read_bytes()
    assert _ours(body) == _reference(body)


def _body(*attributes: KeyValue, name: str = "s") -> bytes:
    span = Span(trace_id=TRACE, span_id=SPAN, name=name, attributes=attributes, status=Status(code=2, message="x"))
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=Resource(), scope_spans=[ScopeSpans(spans=[span])])]
    )
    return request.SerializeToString()


def kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def test_unusual_attributes_read_as_before():
    """A repeated key keeps its last value, a missing value is None, nested values convert, and every kind of
    value reads the same through ``pick`` and through the mapping."""
    nested = AnyValue(kvlist_value=KeyValueList(values=[kv("a", int_value=1)]))
    body = _body(
        kv("k", string_value="first"), kv("k", int_value=7), KeyValue(key="none"), kv("empty", string_value=""),
        kv("zero", int_value=0), kv("b", bool_value=True), kv("d", double_value=0.5), kv("raw", bytes_value=b"\x00"),
        kv("list", array_value=ArrayValue(values=[AnyValue(string_value="x"), nested])),
        kv("traceloop.association.properties.user_id", string_value="u"),
    )  # fmt: skip
    expected = {
        "k": 7, "none": None, "empty": "", "zero": 0, "b": True, "d": 0.5, "raw": b"\x00", "list": ["x", {"a": 1}],
        "traceloop.association.properties.user_id": "u",
    }  # fmt: skip
    assert _ours(body)[0]["attributes"] == expected == _reference(body)[0]["attributes"]
    (span,) = spans_from_otlp_proto(body).items
    assert isinstance(span.attributes, ProtoAttributes)
    rest: dict = {}
    picked = span.attributes.pick(
        frozenset(expected) - {"traceloop.association.properties.user_id"}, "traceloop.", rest
    )
    assert picked == {k: v for k, v in expected.items() if not k.startswith("traceloop.")}
    assert rest == {"traceloop.association.properties.user_id": "u"}
    assert list(span.attributes) == sorted(expected)  # no wire order in a map: by key, the same on every run
    assert "missing" not in span.attributes and span.attributes.get("missing", 1) == 1 and 5 not in span.attributes
    with pytest.raises(KeyError):
        span.attributes["missing"]
    assert len(span.attributes) == len(expected) and "missing" not in span.attributes  # a lookup inserts nothing


@pytest.mark.parametrize("where", ["key", "value", "name"])
def test_invalid_utf8_is_refused_as_the_standard_parse_refuses_it(where):
    body = _body(kv("k\u00e9", string_value="v\u00e8"), name="n\u00ea")
    broken = {"key": "\u00e9", "value": "\u00e8", "name": "\u00ea"}[where].encode()
    body = body.replace(broken, b"\xff" + broken[1:])
    with pytest.raises(Exception):  # noqa: B017, PT011 - upb's DecodeError: the reference refuses it
        ExportTraceServiceRequest.FromString(body)
    with pytest.raises(DecodeError, match="not an OTLP ExportTraceServiceRequest"):
        spans_from_otlp_proto(body)


def test_garbage_inside_a_span_refuses_the_body():
    """The envelope reads a span as bytes; the span's own parse still refuses what the standard parse refuses."""
    good = _body(kv("k", string_value="v"))
    assert b"\x0a\x01k\x12\x03\x0a\x01v" in good
    bad = good.replace(b"\x0a\x01k\x12\x03", b"\x0a\x01k\x12\x09")  # the value claims more bytes than it has
    TracesEnvelope.FromString(bad)  # the envelope alone cannot tell
    with pytest.raises(Exception):  # noqa: B017, PT011 - upb's DecodeError
        ExportTraceServiceRequest.FromString(bad)
    with pytest.raises(DecodeError, match="not an OTLP ExportTraceServiceRequest"):
        spans_from_otlp_proto(bad)


def test_an_sdk_message_is_accepted_as_well_as_bytes():
    body = (FIXTURES / "openllmetry.traces.pb").read_bytes()
    as_message = spans_from_otlp_proto(ExportTraceServiceRequest.FromString(body)).items
    assert [(s.span_id, s.size) for s in as_message] == [(s.span_id, s.size) for s in spans_from_otlp_proto(body).items]
