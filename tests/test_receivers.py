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
from conftest import FIXTURES
from fastapi import FastAPI, Request
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_observatory_path import _free_port

from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.receivers import otlp
from otel_bridge.receivers.otlp import (
    MiB,
    ReceiverSettings,
    ReceiverStats,
    Refused,
    authorized,
    check_bind,
    decompress_capped,
)
from otel_bridge.receivers.otlp_grpc import start_grpc_receiver
from otel_bridge.receivers.otlp_http import otlp_router
from otel_bridge.spans import span_from_sdk, spans_from_otlp_proto
from otel_bridge.synthetic import emit, plan_runs

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


def _post(
    b: Bridge, body: bytes, content_type: str | None = PB, path: str = "/v1/traces", **headers: str
) -> httpx.Response:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type:
        h["content-type"] = content_type
    return httpx.post(b.url + path, content=body, headers=h, timeout=10)


def _grpc(b: Bridge, body: bytes, signal: str = "traces", metadata: tuple = (), compression: Any = None) -> Any:
    service, response = (
        ("trace.v1.TraceService", ExportTraceServiceResponse)
        if signal == "traces"
        else ("logs.v1.LogsService", ExportLogsServiceResponse)
    )
    with grpc.insecure_channel(b.target) as channel:
        call = channel.unary_unary(
            f"/opentelemetry.proto.collector.{service}/Export",
            request_serializer=None,
            response_deserializer=response.FromString,
        )
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
    return subprocess.Popen(
        [sys.executable, str(SEND), transport, endpoint, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
        return (exporter.stats()["retried"] > 0 and exporter.queue_depth == 40) or bool(
            pipeline.submit_spans(_fill_spans(3)) and False
        )

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
    assert _wait(
        lambda: b.requests("grpc").get("unavailable", 0) >= 2 and b.requests("http").get("unavailable", 0) >= 3
    )
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


# ---------------------------------------------------------------------------------------------- fixtures, both encodings


def test_fixtures_over_http_json_protobuf_gzip_and_grpc(bridge):
    """Every committed fixture (protobuf and wire-form JSON), plain and gzip over HTTP, gzip over gRPC."""
    b = bridge()
    for path in sorted(FIXTURES.glob("*.traces.*")) + sorted(FIXTURES.glob("*.logs.*")):
        signal = "logs" if ".logs." in path.name else "traces"
        data, fmt = path.read_bytes(), (JSON if path.suffix == ".json" else PB)
        for body, enc in ((data, "identity"), (gzip.compress(data), "gzip")):
            r = _post(b, body, fmt, path=f"/v1/{signal}", content_encoding=enc)
            assert r.status_code == 200 and r.headers["content-type"] == fmt, (path.name, r.text)
            if fmt == JSON:
                assert r.json() == {}
            else:
                response = (ExportTraceServiceResponse if signal == "traces" else ExportLogsServiceResponse).FromString(
                    r.content
                )
                assert not response.HasField("partial_success")
        if fmt == PB:  # the same bytes over gRPC, gzip-compressed by the client
            assert not _grpc(b, data, signal=signal, compression=grpc.Compression.Gzip).HasField("partial_success")
    n = sum(len(spans_from_otlp_proto(p.read_bytes()).items) for p in FIXTURES.glob("*.traces.pb"))
    snap = b.stats.snapshot()
    assert snap["http"]["traces"]["accepted"] == 4 * n and snap["grpc"]["traces"]["accepted"] == n  # JSON = protobuf
    logs = snap["grpc"]["logs"]["accepted"]
    assert logs > 0 and snap["http"]["logs"]["accepted"] == 4 * logs
    assert b.spans() == 5 * n and b.consumer.stats()["pipeline"]["logs"] == 5 * logs
    assert all(c["refused"] == 0 for t in snap.values() for c in t.values())


# ---------------------------------------------------------------------------------------------- bad input


def _with_bad_spans() -> bytes:
    doc = orjson.loads((FIXTURES / "openai_v2.traces.json").read_bytes())
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"] += [
        {"traceId": "zz", "spanId": "0102030405060708", "name": "not hex"},
        {"spanId": "0102030405060708", "name": "no trace id"},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "startTimeUnixNano": "soon"},
        {"traceId": 17, "spanId": "b7ad6b7169203332", "name": "trace id of the wrong type"},
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203333", "attributes": {"k": 1}},
        "a span that is a string",
    ]
    return orjson.dumps(doc)


def test_one_bad_span_among_good_ones_is_rejected_alone(bridge):
    b = bridge()
    good = GOOD_SPANS
    for body, enc in ((_with_bad_spans(), "identity"), (gzip.compress(_with_bad_spans()), "gzip")):
        r = _post(b, body, JSON, content_encoding=enc)
        assert r.status_code == 200
        partial = r.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "6" and "spans[" in partial["errorMessage"]
    request = ExportTraceServiceRequest.FromString(GOOD_PB)
    request.resource_spans[0].scope_spans[0].spans.add(trace_id=b"\x01" * 4, span_id=b"\x02" * 8, name="short trace id")
    r = _post(b, request.SerializeToString())
    partial = ExportTraceServiceResponse.FromString(r.content).partial_success
    assert r.status_code == 200 and partial.rejected_spans == 1 and "trace_id must be 16 bytes" in partial.error_message
    partial = _grpc(b, request.SerializeToString()).partial_success
    assert partial.rejected_spans == 1 and "trace_id" in partial.error_message
    assert b.spans() == 2 * good + 2 * good  # the good ones of every request were kept
    snap = b.stats.snapshot()
    assert snap["http"]["traces"]["refused"] == 13 and snap["http"]["traces"]["requests"] == {"partial": 3}
    logs = orjson.loads((FIXTURES / "openai_v2_content.logs.json").read_bytes())
    logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"].append({"traceId": "zz", "body": {"stringValue": "x"}})
    r = _post(b, orjson.dumps(logs), JSON, path="/v1/logs")
    assert (
        r.json()["partialSuccess"]["rejectedLogRecords"] == "1"
        and "traceId" in r.json()["partialSuccess"]["errorMessage"]
    )
    _still_serving(b)


BOMB = gzip.compress(bytes(32 * MiB))  # ~32 KiB on the wire
BAD_HTTP = [  # name, body, content type, headers, status, message fragment
    ("malformed protobuf", b"\x0a\xff\xff\xff\xff\x0f", PB, {}, 400, "not an OTLP ExportTraceServiceRequest protobuf"),
    ("malformed json", b'{"resourceSpans": [', JSON, {}, 400, "body is not valid JSON"),
    ("json of the wrong shape", b'{"resourceSpans": {"spans": 1}}', JSON, {}, 400, "'resourceSpans' array"),
    ("json that is a list", b"[1, 2]", JSON, {}, 400, "'resourceSpans' array"),
    (
        "json with a scope of the wrong type",
        b'{"resourceSpans": [{"scopeSpans": [7]}]}',
        JSON,
        {},
        400,
        "could not be decoded",
    ),
    ("unsupported content type", b"hello", "text/plain", {}, 415, "content-type 'text/plain' is not supported"),
    ("no content type", b"hello", None, {}, 415, "content-type None is not supported"),
    ("unsupported encoding", GOOD_PB, PB, {"content-encoding": "br"}, 415, "content-encoding 'br' is not supported"),
    ("not gzip", GOOD_PB, PB, {"content-encoding": "gzip"}, 400, "body is not valid gzip"),
    ("truncated gzip", gzip.compress(GOOD_PB)[:-20], PB, {"content-encoding": "gzip"}, 400, "truncated"),
    ("oversized body", bytes(LIMIT + 1), PB, {}, 413, f"larger than {LIMIT} bytes"),
    (
        "oversized json, gzip",
        gzip.compress(b" " * (LIMIT * 2)),
        JSON,
        {"content-encoding": "gzip"},
        413,
        "after decompression",
    ),
    ("gzip bomb", BOMB, PB, {"content-encoding": "gzip"}, 413, "after decompression"),
]


@pytest.mark.parametrize("name,body,ctype,headers,status,message", BAD_HTTP, ids=[c[0] for c in BAD_HTTP])
def test_http_bad_input(bridge, name, body, ctype, headers, status, message):
    b = bridge(max_request_body_size=LIMIT)
    r = _post(b, body, ctype, **{k.replace("-", "_"): v for k, v in headers.items()})
    assert r.status_code == status, r.content
    if ctype == PB:  # answered in the request's encoding: a google.rpc.Status
        assert r.headers["content-type"] == PB
        got = status_pb2.Status.FromString(r.content)
        assert got.code == {400: 3, 413: 8, 415: 3}[status] and message in got.message, got
    else:
        assert r.headers["content-type"] == JSON
        assert r.json()["code"] == {400: 3, 413: 8, 415: 3}[status] and message in r.json()["message"], r.json()
    assert b.requests("http") == {{400: "invalid", 413: "too_large", 415: "unsupported"}[status]: 1}
    _still_serving(b)


def test_http_body_larger_than_limit_streamed_without_length(bridge):
    b = bridge(max_request_body_size=LIMIT)

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield bytes(LIMIT // 4)

    r = httpx.post(b.url + "/v1/traces", content=chunks(), headers={"content-type": PB}, timeout=10)
    assert r.status_code == 413 and b.requests("http") == {"too_large": 1}
    _still_serving(b)


def test_grpc_bad_input(bridge):
    b = bridge(max_recv_msg_size=LIMIT)
    err = _grpc_error(b, b"\x0a\xff\xff\xff\xff\x0f")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "not an OTLP ExportTraceServiceRequest" in err.details()
    err = _grpc_error(b, b"\x0a\xff\xff\xff\xff\x0f", signal="logs")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ExportLogsServiceRequest" in err.details()
    assert _grpc_error(b, bytes(LIMIT + 1)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    bomb = ExportTraceServiceRequest()
    bomb.resource_spans.add().resource.attributes.add(key="k").value.string_value = "x" * (4 * LIMIT)
    err = _grpc_error(b, bomb.SerializeToString(), compression=grpc.Compression.Gzip)  # small on the wire
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _still_serving(b)
    assert b.requests("grpc") == {"invalid": 1, "ok": 1} and b.requests("grpc", "logs") == {"invalid": 1}


def test_decompression_never_allocates_past_the_limit():
    tracemalloc.start()
    try:
        with pytest.raises(Refused) as info:
            decompress_capped(BOMB, "gzip", 1 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_large" and peak < 3 * MiB
    assert decompress_capped(gzip.compress(b"ab") + gzip.compress(b"cd"), "GZIP", 10) == b"abcd"  # gzip members
    assert decompress_capped(b"raw", None, 10) == b"raw"


# ---------------------------------------------------------------------------------------------- auth and bind


def test_bearer_token_on_both_transports(bridge, caplog, monkeypatch):
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(otlp.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    caplog.set_level("DEBUG")
    b = bridge(bearer_token=TOKEN)
    for headers in (
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": TOKEN},
        {"authorization": f"Basic {TOKEN}"},
    ):
        for fmt in (PB, JSON):
            r = _post(b, GOOD_PB, fmt, **headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert status_pb2.Status.FromString(_post(b, GOOD_PB, **headers).content).code == 16
        err = _grpc_error(b, GOOD_PB, metadata=tuple(headers.items()))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == "missing or invalid bearer token"
    assert _post(b, b"garbage", "text/plain").status_code == 401  # auth comes before anything else
    assert b.spans() == 0 and compared
    _still_serving(b, authorization=f"Bearer {TOKEN}")
    assert TOKEN not in caplog.text


def test_authorized_and_check_bind():
    assert authorized(None, None) and authorized("anything", "")
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer  {TOKEN} ", TOKEN)
    for bad in (None, "Bearer", f"Bearer {TOKEN}x", f"Token {TOKEN}", "Bearer ünïcode"):
        assert not authorized(bad, TOKEN)
    for loopback in ("127.0.0.1:4317", "localhost:4318", "[::1]:4317", "127.1.2.3:1", "::1"):
        check_bind(loopback, None)
    for endpoint in ("0.0.0.0:4317", ":4318", "[::]:4317", "10.1.2.3:4318", "collector.example.com:4317", ""):
        with pytest.raises(ValueError, match="requires a bearer token"):
            check_bind(endpoint, None)
        with pytest.raises(ValueError, match="receivers.otlp.grpc.endpoint: binding"):
            start_grpc_receiver(None, ReceiverSettings(grpc_endpoint=endpoint), ReceiverStats())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="would receive the bearer token in clear"):  # tests/test_tls.py: with tls
            check_bind(endpoint, TOKEN)
        check_bind(endpoint, TOKEN, allow_plaintext_token=True)
    assert TOKEN not in repr(ReceiverSettings(bearer_token=TOKEN))


def test_garbage_never_crashes_either_transport(bridge):
    """Mutated fixtures and pathological JSON: always 200 or 400 / OK or INVALID_ARGUMENT, never a crash."""
    import random

    b = bridge()
    rng = random.Random(7)
    json_doc = (FIXTURES / "openai_v2.traces.json").read_bytes()
    deep = (
        b'{"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": ' + b'{"arrayValue": {"values": [' * 300
    )
    deep += b"]}}" * 300 + b"}]}}]}"
    bodies = [(deep, JSON), (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"events": [1]}]}]}]}', JSON)]
    for _ in range(40):
        for data, fmt in ((GOOD_PB, PB), (json_doc, JSON)):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            bodies.append((bytes(mutated), fmt))
    for body, fmt in bodies:
        assert _post(b, body, fmt).status_code in (200, 400)
        if fmt == PB:
            try:
                _grpc(b, body)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "internal" not in b.requests("http") and "internal" not in b.requests("grpc")
    _still_serving(b)
