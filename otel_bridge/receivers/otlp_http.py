"""OTLP/HTTP receiver: ``POST /v1/traces`` and ``POST /v1/logs`` (https://opentelemetry.io/docs/specs/otlp/#otlphttp).

A router, not an app: the server mounts it next to the rest of the HTTP API on one listener. The body is read
with a cap and inflated with a cap; decoding runs in a worker thread so a big request never stalls the event loop.
Answers use the request's content type: protobuf responses / ``google.rpc.Status``, or their OTLP/JSON forms.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import orjson
from fastapi import APIRouter, Request, Response
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.concurrency import run_in_threadpool

from otel_bridge.receivers.otlp import (
    ReceiverSettings,
    ReceiverStats,
    Refused,
    SpanConsumer,
    authorized,
    check_encoding,
    decompress_capped,
    receive,
)

log = logging.getLogger(__name__)

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_FORMATS = {PROTOBUF: "proto", JSON: "json"}
_MEDIA = {"proto": PROTOBUF, "json": JSON}


def _format_of(content_type: str | None) -> str | None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return _FORMATS.get(media)


async def read_capped(request: Request, limit: int) -> bytes:
    """The wire body, refused as soon as it passes ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused("too_large", f"body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused("too_large", f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _checked_body(request: Request, settings: ReceiverSettings) -> tuple[bytes, str, str]:
    """Auth, content type, encoding and wire size, in that order; returns (body, format, encoding)."""
    fmt = _format_of(request.headers.get("content-type"))
    if not authorized(request.headers.get("authorization"), settings.bearer_token):
        raise Refused("unauthenticated", "missing or invalid bearer token")
    if fmt is None:
        given = request.headers.get("content-type")
        raise Refused("unsupported", f"content-type {given!r} is not supported, use {PROTOBUF} or {JSON}")
    encoding = check_encoding(request.headers.get("content-encoding"))
    return await read_capped(request, settings.max_request_body_size), fmt, encoding


def _error(r: Refused, fmt: str | None, settings: ReceiverSettings) -> Response:
    """A ``google.rpc.Status`` in the request's encoding (JSON when the content type was not understood)."""
    headers: dict[str, str] = {}
    status = status_pb2.Status(code=r.grpc_code, message=r.message)
    if r.reason == "unavailable":
        headers["Retry-After"] = str(max(1, math.ceil(settings.retry_after)))  # RFC 9110: whole seconds
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=math.ceil(settings.retry_after)))
        detail = any_pb2.Any()
        detail.Pack(info)
        status.details.append(detail)
    elif r.reason == "unauthenticated":
        headers["WWW-Authenticate"] = "Bearer"
    if fmt == "proto":
        return Response(status.SerializeToString(), r.http_status, headers, media_type=PROTOBUF)
    body = orjson.dumps({"code": r.grpc_code, "message": r.message})
    return Response(body, r.http_status, headers, media_type=JSON)


def _success(signal: str, fmt: str, rejected: int, message: str | None) -> Response:
    if fmt == "json":
        doc: dict = {}
        if rejected:
            key = "rejectedSpans" if signal == "traces" else "rejectedLogRecords"
            doc["partialSuccess"] = {key: str(rejected), "errorMessage": message or ""}  # int64 → JSON string
        return Response(orjson.dumps(doc), 200, media_type=JSON)
    if signal == "traces":
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = message or ""
    else:
        response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message or ""
    return Response(response.SerializeToString(), 200, media_type=PROTOBUF)


async def _handle(
    request: Request, signal: str, consumer: SpanConsumer, settings: ReceiverSettings, stats: ReceiverStats
) -> Response:
    try:
        body, fmt, encoding = await _checked_body(request, settings)
    except Refused as r:
        stats.refuse("http", signal, r)
        log.debug("otlp http %s refused: %s", signal, r.reason)
        return _error(r, _format_of(request.headers.get("content-type")), settings)
    inflate = partial(decompress_capped, encoding=encoding, limit=settings.max_request_body_size)
    try:
        _, rejected, message = await run_in_threadpool(receive, consumer, stats, "http", signal, body, fmt, inflate)
    except Refused as r:  # already counted by receive
        return _error(r, fmt, settings)
    return _success(signal, fmt, rejected, message)


def otlp_router(consumer: SpanConsumer, settings: ReceiverSettings, stats: ReceiverStats) -> APIRouter:
    """``POST /v1/traces`` and ``POST /v1/logs``; the caller mounts it and checks the bind with ``check_bind``."""
    router = APIRouter(tags=["otlp"])

    @router.post("/v1/traces", include_in_schema=False)
    async def traces(request: Request) -> Response:
        return await _handle(request, "traces", consumer, settings, stats)

    @router.post("/v1/logs", include_in_schema=False)
    async def logs(request: Request) -> Response:
        return await _handle(request, "logs", consumer, settings, stats)

    return router
