"""Property-based fuzzing (issue 10): OTLP protobuf/JSON decoding, recognition and every conversion with random
attribute types, and the vendor-format ingest routes. Never an unhandled exception, never a 5xx for a client's
mistake."""

from __future__ import annotations

import json

import orjson
import pytest
from delivery_helpers import service
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_bridge import admission
from otel_bridge.exporters.clickhouse import event_row, run_row, span_row
from otel_bridge.processors.flightdeck import FlightDeckMapping, run_events
from otel_bridge.processors.observatory import ObservatoryConverter
from otel_bridge.processors.redact import Redactor
from otel_bridge.processors.runs import Run
from otel_bridge.processors.stages import redact_span
from otel_bridge.receivers.otlp import Refused, decode
from otel_bridge.semconv import recognise

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

KEYS = st.sampled_from([
    "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.provider.name", "gen_ai.system",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.agent.name", "gen_ai.agent.id", "gen_ai.conversation.id", "gen_ai.input.messages", "gen_ai.output.messages",
    "gen_ai.tool.name", "openinference.span.kind", "llm.model_name", "llm.token_count.prompt", "input.value",
    "output.value", "traceloop.span.kind", "traceloop.entity.input", "traceloop.association.properties.session_id",
    "session.id", "user.id", "user.email", "tag.tags", "metadata", "error.type", "service.name", "llm.input_messages.0.message.content",
])  # fmt: skip
SCALARS = st.one_of(
    st.text(max_size=20).map(lambda s: {"stringValue": s}),
    st.integers(min_value=-(2**63), max_value=2**64 - 1).map(lambda i: {"intValue": str(i)}),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"doubleValue": f if f == f and abs(f) != float("inf") else str(f)}
    ),
    st.booleans().map(lambda b: {"boolValue": b}),
    st.binary(max_size=8).map(lambda b: {"bytesValue": __import__("base64").b64encode(b).decode()}),
    st.just({}),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"arrayValue": {"values": v}}),
        st.lists(st.tuples(KEYS, inner), max_size=3).map(
            lambda kv: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kv]}}
        ),
    ),
    max_leaves=6,
)
ATTRS = st.lists(st.tuples(KEYS, ANY), max_size=8).map(lambda kv: [{"key": k, "value": v} for k, v in kv])
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
                       lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)  # fmt: skip


def _span(attrs: list, start: object, end: object, name: object, status: object) -> dict:
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": name, "kind": 3,
            "startTimeUnixNano": start, "endTimeUnixNano": end, "attributes": attrs, "status": status}  # fmt: skip


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["proto", "json"]), st.sampled_from(["traces", "logs"]))
def test_decoding_garbage_is_refused_or_decoded_never_raised(body, fmt, signal):
    try:
        decode(signal, body, fmt)
    except Refused as r:
        assert r.reason == "invalid" and r.http_status == 400


@FUZZ
@given(ATTRS, ATTRS, st.one_of(st.integers(min_value=0, max_value=2**64 - 1).map(str), st.integers(), st.text(max_size=5)),
       st.one_of(st.integers(min_value=0, max_value=2**64 - 1).map(str), st.none()), JSONISH,
       st.one_of(st.none(), st.fixed_dictionaries({"code": st.integers(0, 2), "message": st.text(max_size=20)})))  # fmt: skip
def test_random_attribute_types_never_break_recognition_or_conversion(attrs, resource, start, end, name, status):
    doc = {
        "resourceSpans": [
            {"resource": {"attributes": resource}, "scopeSpans": [{"spans": [_span(attrs, start, end, name, status)]}]}
        ]
    }
    try:
        decoded = decode("traces", json.dumps(doc).encode(), "json")
    except Refused:
        return
    for s in decoded.items:
        a = recognise(s)
        redact_span(a, Redactor(pii=True))
        span_row(a).values()
        if admission.check(a, None) is not None:
            continue  # refused per span in partial_success: never converted (the pipeline's order)
        events = ObservatoryConverter().convert(a)
        orjson.dumps(events, default=str, option=orjson.OPT_NON_STR_KEYS)
        for e in events:
            if e["name"] in ("chat", "feedback", "saved"):
                event_row(e).values()
        run = Run(a, [a])
        run_row(run).values()
        orjson.dumps(run_events(run, FlightDeckMapping(release_id="rel_x")), default=str)


@pytest.fixture(scope="module")
def ingest_client(tmp_path_factory):
    svc = service(tmp_path_factory.mktemp("fuzz"))
    with TestClient(svc.app(), raise_server_exceptions=False) as client:
        yield client
    svc.stop(10)


EVENT = st.fixed_dictionaries(
    {},
    optional={"name": st.sampled_from(["llm_start", "llm_end", "chat", "feedback", "x"]) | JSONISH,
              "type": st.sampled_from(["llm", "agent", "chat", "feedback"]) | JSONISH,
              "run_id": st.text(max_size=10) | JSONISH, "timestamp": st.just("2026-11-30T00:00:00Z") | JSONISH,
              "latency": JSONISH, "prompt_tokens": JSONISH, "metadata": JSONISH, "input": JSONISH, "tags": JSONISH,
              "api_version": st.just("v1") | JSONISH, "release_id": JSONISH, "usage": JSONISH, "metrics": JSONISH},
)  # fmt: skip


@FUZZ
@given(st.sampled_from(["/api/report", "/v1/events"]),
       st.one_of(st.lists(EVENT, max_size=4).map(lambda ev: {"events": ev}), JSONISH, st.binary(max_size=40)))  # fmt: skip
def test_ingest_routes_answer_4xx_never_5xx_for_client_mistakes(ingest_client, path, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = ingest_client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text, content[:200])
