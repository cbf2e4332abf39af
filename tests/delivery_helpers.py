"""Helpers for the delivery-ledger tests: OTLP/JSON requests built from plain values, and an in-process ``serve``
(the real Service: spool, pipeline, exporters, embedded chDB) fed through the receivers' own ``receive`` step."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import bridge_server
import orjson

from otel_bridge.config import parse_config
from otel_bridge.receivers.otlp import Refused, receive
from otel_bridge.serve import Service

SERVICE_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: null
      http: {endpoint: "127.0.0.1:9"}  # never bound: requests go through receive() directly
    spool: {max_size: "${env:T_SPOOL_MAX:-64MiB}"}
processors:
  runs: {wait: "${env:T_WAIT:-200ms}", max_wait: "${env:T_MAX_WAIT:-1s}", max_traces: "${env:T_MAX_TRACES:-10000}"}
  flightdeck: {release_id: rel_test, tenant_id: tenant_test, task_id: task_test}
  redact: {}
exporters:
  clickhouse: {data_dir: "${env:T_DATA_DIR}",
               batch: {interval: "${env:T_CH_INTERVAL:-100ms}", max_queue_bytes: "${env:T_CH_QUEUE_BYTES:-64MiB}"}}
  observatory:
    url: "${env:T_OBSERVATORY_URL:-}"
    api_key: "${env:T_OBSERVATORY_KEY:-}"
    batch: {interval: 50ms, max_batch: 50, max_queue: "${env:T_OBS_QUEUE:-20000}", max_elapsed: "${env:T_MAX_ELAPSED:-1h}",
            initial_backoff: 50ms, max_backoff: 200ms}
  flightdeck:
    url: "${env:T_FLIGHTDECK_URL:-}"
    batch: {interval: 50ms, max_elapsed: "${env:T_MAX_ELAPSED:-1h}", initial_backoff: 50ms, max_backoff: 200ms}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [runs, observatory, flightdeck, redact], exporters: [clickhouse, observatory, flightdeck]}
  workers: ${env:T_WORKERS:-1}  # 1: the stages in this process, where the tests look at them
"""


def service(tmp: Path, **env: str) -> Service:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("T_")},
        "T_DATA_DIR": str(tmp / "data"),
        **env,
    }
    return Service.build(parse_config(SERVICE_CONFIG, environ=environ))


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def llm_span(i: int, *, start_ns: int | None = None, attrs: dict[str, Any] | None = None, name: Any = None,
             status: dict | None = None) -> dict[str, Any]:  # fmt: skip
    """One chat span, its own trace (a local root with an LLM call: one run)."""
    start = start_ns if start_ns is not None else time.time_ns() - 5_000_000_000
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}  # fmt: skip
    span = {
        "traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": name if name is not None else f"chat {i}",
        "kind": 3, "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000),
        "attributes": [attr(k, v) for k, v in {**base, **(attrs or {})}.items()],
    }  # fmt: skip
    if status:
        span["status"] = status
    return span


def request(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> bytes:
    res = {"service.name": "svc", "service.version": "1.0", **(resource or {})}
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": [attr(k, v) for k, v in res.items()]},
                                            "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]})  # fmt: skip


def send(svc: Service, body: bytes) -> tuple[int, int, str | None]:
    """One OTLP/JSON traces request through the receivers' shared step: (accepted, rejected, message)."""
    return receive(svc.consumer, svc.stats, "http", "traces", body, "json")


def try_send(svc: Service, body: bytes) -> int | None:
    """Accepted span count, or None when refused with the retryable status."""
    try:
        return send(svc, body)[0]
    except Refused as r:
        assert r.reason == "unavailable", r.message
        return None


def count(svc: Service, sql: str) -> int:
    return int(next(iter(svc.store.query(sql)[0].values())))


def dead_letters(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


wait_until = functools.partial(bridge_server.wait_until, interval=0.05)  # in-process: poll more often
