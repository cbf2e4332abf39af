"""OTLP/gRPC receiver: ``TraceService/Export`` and ``LogsService/Export`` (https://opentelemetry.io/docs/specs/otlp/#otlpgrpc).

Requests are registered with a pass-through deserializer, so the bytes reach ``otlp.decode``: an undecodable body
becomes INVALID_ARGUMENT (grpcio would answer INTERNAL itself) and an unauthenticated one is never parsed.
gzip (``grpc-encoding: gzip``) is inflated by grpc core, which also enforces the size limit after inflating.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otel_bridge.receivers.otlp import (
    ReceiverSettings,
    ReceiverStats,
    Refused,
    SpanConsumer,
    authorized,
    check_bind,
    receive,
)
from otel_bridge.tls import grpc_server_credentials

log = logging.getLogger(__name__)

_CODES = {c.value[0]: c for c in grpc.StatusCode}
_ALL_COMPRESSION = 0b111  # identity | deflate | gzip: accept every algorithm grpc core implements


class _Status(NamedTuple):
    """A ``grpc.Status`` (the interface ``abort_with_status`` takes), so details travel without grpcio-status."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, Any], ...]


def _status_for(r: Refused, retry_after: float) -> _Status:
    """The refusal as a status; UNAVAILABLE carries RetryInfo as a google.rpc.Status detail.

    It is also sent as ``google.rpc.retryinfo-bin``, the trailer the OTel Python exporter reads.
    """
    metadata: tuple[tuple[str, Any], ...] = ()
    if r.reason == "unavailable":
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(retry_after), nanos=int(retry_after % 1 * 1e9))
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=r.grpc_code, message=r.message, details=[detail])
        metadata = (
            ("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", info.SerializeToString()),
        )
    return _Status(_CODES[r.grpc_code], r.message, metadata)


class _Receiver:
    """The Export behaviour shared by both services; ``signal`` picks the decoder and the response type."""

    def __init__(self, signal: str, consumer: SpanConsumer, settings: ReceiverSettings, stats: ReceiverStats) -> None:
        self.signal, self.consumer, self.settings, self.stats = signal, consumer, settings, stats

    def export(self, request: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return self._response(*self._receive(request, context))
        except Refused as r:
            refused = r
        context.abort_with_status(_status_for(refused, self.settings.retry_after))  # raises: kept out of the try

    def _receive(self, request: bytes, context: grpc.ServicerContext) -> tuple[int, int, str | None]:
        if self.settings.bearer_token:
            header = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
            if not authorized(header if isinstance(header, str) else None, self.settings.bearer_token):
                r = Refused("unauthenticated", "missing or invalid bearer token")
                self.stats.refuse("grpc", self.signal, r)
                raise r
        return receive(self.consumer, self.stats, "grpc", self.signal, request, "proto")

    def _response(self, accepted: int, rejected: int, message: str | None) -> Any:
        if self.signal == "traces":
            response = trace_service_pb2.ExportTraceServiceResponse()
            if rejected:
                response.partial_success.rejected_spans = rejected
                response.partial_success.error_message = message or ""
        else:
            response = logs_service_pb2.ExportLogsServiceResponse()
            if rejected:
                response.partial_success.rejected_log_records = rejected
                response.partial_success.error_message = message or ""
        return response


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: _Receiver) -> None:
        self._receiver = receiver

    def Export(self, request: bytes, context: grpc.ServicerContext) -> Any:  # noqa: N802 - the generated name
        return self._receiver.export(request, context)


class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: _Receiver) -> None:
        self._receiver = receiver

    def Export(self, request: bytes, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._receiver.export(request, context)


def _handler(module: Any, service: str, servicer: Any, response_type: Any) -> grpc.GenericRpcHandler:
    """The generated registration, but with raw request bytes (no deserializer)."""
    name = module.DESCRIPTOR.services_by_name[service].full_name
    method = grpc.unary_unary_rpc_method_handler(
        servicer.Export, request_deserializer=None, response_serializer=response_type.SerializeToString
    )
    return grpc.method_handlers_generic_handler(name, {"Export": method})


def start_grpc_receiver(consumer: SpanConsumer, settings: ReceiverSettings, stats: ReceiverStats) -> grpc.Server:
    """Bind ``settings.grpc_endpoint`` (refused off loopback without a token), start serving, return the server."""
    check_bind(
        settings.grpc_endpoint,
        settings.bearer_token,
        key="receivers.otlp.grpc.endpoint",
        tls=settings.grpc_tls,
        allow_plaintext_token=settings.allow_plaintext_token,
    )
    credentials = grpc_server_credentials(settings.grpc_tls, "receivers.otlp.protocols.grpc.tls")  # None: plaintext
    options = [
        ("grpc.max_receive_message_length", settings.max_recv_msg_size),
        ("grpc.compression_enabled_algorithms_bitset", _ALL_COMPRESSION),
        ("grpc.so_reuseport", 0),  # a port already in use is an error, not a silently shared socket
    ]
    pool = ThreadPoolExecutor(max_workers=settings.grpc_max_workers, thread_name_prefix="otlp-grpc")
    server = grpc.server(pool, options=options)
    traces = TraceService(_Receiver("traces", consumer, settings, stats))
    logs = LogsService(_Receiver("logs", consumer, settings, stats))
    server.add_generic_rpc_handlers(
        (
            _handler(trace_service_pb2, "TraceService", traces, trace_service_pb2.ExportTraceServiceResponse),
            _handler(logs_service_pb2, "LogsService", logs, logs_service_pb2.ExportLogsServiceResponse),
        )
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.grpc_endpoint)
        else:
            port = server.add_secure_port(settings.grpc_endpoint, credentials)
    except RuntimeError as exc:
        raise OSError(f"receivers.otlp.grpc.endpoint: cannot bind {settings.grpc_endpoint!r}: {exc}") from None
    if not port:
        raise OSError(f"receivers.otlp.grpc.endpoint: cannot bind {settings.grpc_endpoint!r}")
    server.start()
    log.info("OTLP/gRPC receiver listening on %s%s", settings.grpc_endpoint, " (tls)" if credentials else "")
    return server
