"""A wire-compatible view of ``ExportTraceServiceRequest`` that leaves each span encoded.

``ScopeSpans.spans`` is declared ``repeated bytes`` instead of ``repeated Span``: a length-delimited field reads the
same either way (https://protobuf.dev/programming-guides/encoding/#length-types), so one parse of the request gives
every span's own bytes. Their length is the span's encoded size as received (what run assembly bounds), which
``Span.ByteSize()`` on upb would otherwise compute by encoding the span again; each span is then parsed with the
standard ``Span`` class, so what is accepted and refused is what the standard request parse accepts and refuses.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2  # noqa: F401 - registers the types the view refers to
from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: F401

_FILE = "otel_bridge/otlp_envelope.proto"
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
        dependency=["opentelemetry/proto/common/v1/common.proto", "opentelemetry/proto/resource/v1/resource.proto"],
    )
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


def _request_class() -> type:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        pool.Add(_file())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest"))


# ``TracesEnvelope.FromString(body).resource_spans[i].scope_spans[j].spans[k]`` is the k-th span's bytes.
TracesEnvelope = _request_class()
