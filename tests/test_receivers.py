"""OTLP receivers over real transports: the SDK's own exporters in subprocesses, httpx and raw gRPC calls.

Every refusal is checked for its status and message, and each is followed by a good request that must succeed.
"""

from __future__ import annotations

import gzip
import hmac
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.receivers import otlp
from otel_bridge.receivers.otlp import MiB, ReceiverSettings, ReceiverStats, Refused, authorized, check_bind, decompress_capped
from otel_bridge.receivers.otlp_grpc import start_grpc_receiver
from otel_bridge.receivers.otlp_http import otlp_router
from otel_bridge.spans import span_from_sdk, spans_from_otlp_proto
from otel_bridge.synthetic import emit, plan_runs

from conftest import FIXTURES
from test_observatory_path import _free_port

PB, JSON = "application/x-protobuf", "application/json"
SEND = Path(__file__).parent / "apps" / "send_otlp.py"
TOKEN = "test-receiver-token-not-secret"
LIMIT = 256 * 1024
GOOD_PB = (FIXTURES / "openai_v2.traces.pb").read_bytes()
GOOD_SPANS = len(spans_from_otlp_proto(GOOD_PB).items)


@dataclass
class Bridge:
    consumer: Any
    settings: ReceiverSettings
    stats: ReceiverStats
    url: str  # http://127.0.0.1:port
    target: str  # 127.0.0.1:port (gRPC)
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # HTTP (path, content-encoding)

    def spans(self) -> int:
        return self.consumer.stats()["pipeline"]["spans"]

    def requests(self, transport: str, signal: str = "traces") -> dict[str, int]:
        return self.stats.snapshot()[transport][signal]["requests"]


def _serve_http(app: FastAPI, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    return server, thread


@pytest.fixture
def bridge() -> Iterator[Any]:
    """``bridge(consumer=None, **settings)``: both receivers on free loopback ports around one consumer."""
    stops: list[Any] = []

    def start(consumer: Any = None, **settings: Any) -> Bridge:
        if consumer is None:
            consumer = Pipeline({}, PipelineOptions(wait=0.05, max_wait=0.5))
            stops.append(lambda: consumer.shutdown(1))
        gport, hport = _free_port(), _free_port()
        s = ReceiverSettings(grpc_endpoint=f"127.0.0.1:{gport}", http_endpoint=f"127.0.0.1:{hport}", **settings)
        b = Bridge(consumer, s, ReceiverStats(), f"http://127.0.0.1:{hport}", s.grpc_endpoint)
        grpc_server = start_grpc_receiver(consumer, s, b.stats)
        stops.append(lambda: grpc_server.stop(0))
        app = FastAPI()
        app.include_router(otlp_router(consumer, s, b.stats))

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            b.seen.append((request.url.path, request.headers.get("content-encoding")))
            return await call_next(request)

        server, thread = _serve_http(app, hport)
        stops.append(lambda: (setattr(server, "should_exit", True), thread.join(5)))
        return b

    yield start
    for stop in reversed(stops):
        stop()


def _post(b: Bridge, body: bytes, content_type: str | None = PB, path: str = "/v1/traces", **headers: str) -> httpx.Response:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type:
        h["content-type"] = content_type
    return httpx.post(b.url + path, content=body, headers=h, timeout=10)


def _grpc(b: Bridge, body: bytes, signal: str = "traces", metadata: tuple = (), compression: Any = None) -> Any:
    service, response = ("trace.v1.TraceService", ExportTraceServiceResponse) if signal == "traces" else ("logs.v1.LogsService", ExportLogsServiceResponse)
    with grpc.insecure_channel(b.target) as channel:
        call = channel.unary_unary(f"/opentelemetry.proto.collector.{service}/Export", request_serializer=None, response_deserializer=response.FromString)
        return call(body, metadata=metadata, compression=compression, timeout=10)


def _grpc_error(b: Bridge, body: bytes, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _grpc(b, body, **kw)
    return info.value


def _still_serving(b: Bridge, **headers: str) -> None:
    before = b.spans()
    assert _post(b, GOOD_PB, **headers).status_code == 200
    metadata = (("authorization", headers["authorization"]),) if "authorization" in headers else ()
    assert not _grpc(b, GOOD_PB, metadata=metadata).HasField("partial_success")
    assert b.spans() == before + 2 * GOOD_SPANS


def _send(transport: str, b: Bridge, *args: str) -> subprocess.Popen:
    endpoint = b.target if transport == "grpc" else b.url.removeprefix("http://")
    return subprocess.Popen([sys.executable, str(SEND), transport, endpoint, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------------- real SDK clients


def _observatory_pipeline(sink: Any, **exporter: Any) -> Pipeline:
    sender = BatchExporter(ObservatorySender(sink.url, sink.api_key), interval=0.05, **exporter)
    return Pipeline({"observatory": sender}, PipelineOptions(wait=0.05, max_wait=0.5))


def test_sdk_exporters_deliver_spans_and_logs(bridge, observatory_sink):
    pipeline = _observatory_pipeline(observatory_sink)
    b = bridge(pipeline)
    procs = [_send("grpc", b, "--runs", "2"), _send("http", b, "--runs", "2")]
    for p in procs:
        code, out = _finish(p)
        assert code == 0 and "ok=True" in out, out
    assert ("/v1/traces", "gzip") in b.seen and ("/v1/logs", "gzip") in b.seen
    snap = b.stats.snapshot()
    for transport in ("grpc", "http"):
        assert snap[transport]["traces"]["accepted"] == snap[transport]["traces"]["received"] > 0
        assert snap[transport]["logs"] == {"received": 1, "accepted": 1, "refused": 0, "requests": {"ok": 1}}
    assert pipeline.stats()["pipeline"]["logs"] == 2
    pipeline.shutdown(5)
    names = [e["name"] for e in observatory_sink.events]
    assert names.count("agent_end") == 4 and names.count("llm_end") >= 4
    assert {e["metadata"]["service.name"] for e in observatory_sink.events} == {"send-otlp"}


def test_sdk_exporters_with_bearer_token(bridge):
    b = bridge(bearer_token=TOKEN)
    ok = [_send(t, b, "--token", TOKEN) for t in ("grpc", "http")]
    bad = [_send(t, b, "--token", "wrong", "--timeout", "3") for t in ("grpc", "http")]
    none = [_send(t, b, "--timeout", "3") for t in ("grpc", "http")]
    assert all(_finish(p)[0] == 0 for p in ok)
    assert all(_finish(p)[0] == 1 for p in bad + none)  # 401 / UNAUTHENTICATED are not retried
    for transport in ("grpc", "http"):
        assert b.requests(transport) == {"ok": 1, "unauthenticated": 2}


def _fill_spans(runs: int) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for run in plan_runs(runs, seed=5, agents=("filler-agent",), error_rate=0.0):
        emit(provider.get_tracer("fill"), run)
    return [span_from_sdk(s) for s in memory.get_finished_spans()]


def test_backpressure_refuses_then_sdk_retries(bridge, observatory_sink):
    """A full queue (sink answering 503) → 503 + Retry-After / UNAVAILABLE + RetryInfo; the SDK retries and lands."""
    observatory_sink.fail_next(503, 10_000, retry_after=0.2)
    pipeline = _observatory_pipeline(observatory_sink, max_queue=40, max_batch=20, max_attempts=10_000)
    exporter = pipeline.exporters["observatory"]
    b = bridge(pipeline, retry_after=0.5)
    def full() -> bool:  # the worker holds a batch it keeps retrying, and the queue behind it is full
        return (exporter.stats()["retried"] > 0 and exporter.queue_depth == 40) or pipeline.submit_spans(_fill_spans(3)) < 0

    assert _wait(full)
    before = b.spans()

    r = _post(b, GOOD_PB)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    status = status_pb2.Status.FromString(r.content)
    info = error_details_pb2.RetryInfo()
    assert status.code == 14 and "pipeline is full" in status.message and status.details[0].Unpack(info)
    r = _post(b, (FIXTURES / "openai_v2.traces.json").read_bytes(), JSON)
    assert r.status_code == 503 and r.json() == {"code": 14, "message": "pipeline is full, retry later"}
    err = _grpc_error(b, GOOD_PB)
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "pipeline is full" in err.details()
    retry = error_details_pb2.RetryInfo.FromString(dict(err.trailing_metadata())["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.ToTimedelta().total_seconds() == 0.5
    assert b.spans() == before  # nothing accepted

    procs = [_send("grpc", b, "--no-logs"), _send("http", b, "--no-logs")]
    assert _wait(lambda: b.requests("grpc").get("unavailable", 0) >= 2 and b.requests("http").get("unavailable", 0) >= 3)
    with observatory_sink._cond:  # the sink comes back: the exporter drains, the SDKs' retries are accepted
        observatory_sink._script.clear()
    for p in procs:
        code, out = _finish(p)
        assert code == 0, out
    for transport in ("grpc", "http"):
        assert b.requests(transport)["ok"] == 1
    assert b.stats.snapshot()["http"]["traces"]["refused"] >= 2 * GOOD_SPANS
    pipeline.shutdown(5)
    assert observatory_sink.wait_for(1)
    assert any(e["metadata"].get("service.name") == "send-otlp" for e in observatory_sink.events)
