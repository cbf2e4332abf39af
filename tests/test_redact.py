"""Secrets never leave otel-bridge: masked in every exported text by default; PII only when asked."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

import otel_bridge
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.processors import redact
from otel_bridge.processors.redact import _PII, _SECRETS, MASK, Redactor, _mask

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def test_redactor_patterns():
    r = Redactor()
    assert r(f"use {KEY} please") == f"use {MASK} please"
    assert r("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345") == f"Authorization: {MASK}"
    assert r("api_key=supersecretvalue123") == f"api_key={MASK}"
    assert r("AKIAABCDEFGHIJKLMNOP and ghp_" + "a" * 36) == f"{MASK} and {MASK}"
    assert r("mail ann@example.com") == "mail ann@example.com"  # PII is opt-in
    assert Redactor(pii=True)("mail ann@example.com, call +1 415 555 0100") == f"mail {MASK}, call {MASK}"
    assert Redactor(secrets=False)(KEY) == KEY and r(None) is None


def _reference(text: str, pii: bool) -> str:
    """Every pattern over the whole text, in order: what the redactor's shortcuts must be equal to."""
    for rule in _SECRETS + (_PII if pii else []):
        text = rule.pattern.sub(_mask, text)
    return text


_PIECES = [KEY, "Bearer abcdefghijklmnop0123", "token: 12345678abc", "TOKEN=zz", "AKIA" + "Q" * 16, "xoxb-1234567890a",
           "ghp_" + "b" * 30, "AIza" + "c" * 35, "eyJabcdefgh.ijklmnopq.rstuvwxyz", "password = hunter2hunter2", "sk-",
           "ann@example.com", "+1 415 555 0100", "4111 1111 1111 1111", "xsk-" + "d" * 20, "\u0130", "ß", " ", "\n",
           '"max_tokens": 100', "api-key", "secretive"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=12)), max_size=12), st.booleans())
def test_redactor_equals_every_pattern_run_over_the_whole_text(pieces: list[str], pii: bool):
    """The length cut-off, the literal pre-check and matching only where a literal occurs change nothing."""
    text = "".join(pieces)
    assert Redactor(pii=pii)(text) == _reference(text, pii)


def test_redactor_remembers_texts_within_a_bound(monkeypatch):
    """A text seen again gets the same answer and counts its masks again; the memo never holds more characters
    than its bound, and a text over a sixteenth of it is never held."""
    monkeypatch.setattr(redact, "MEMO_CHARS", 1600)
    r = Redactor()
    text = f"system: never print {KEY}; " + "x" * 40
    for n in range(1, 4):
        assert r(text) == _reference(text, False) and r.redacted == n
    for i in range(200):  # distinct texts, about 90 characters each: the memo empties and refills
        other = f"{i} {KEY} " + "y" * 60
        assert r(other) == _reference(other, False)
        assert r._memo_chars <= 1600 and sum(map(len, r._memo)) == r._memo_chars
    long_text = "z" * 101 + KEY
    assert r(long_text) == _reference(long_text, False) and long_text not in r._memo
    nothing = Redactor(secrets=False)  # no rules: every text passes as it is, none is remembered
    assert nothing(text) == text and not nothing._memo


def test_secrets_masked_in_events(observatory_sink):
    provider = TracerProvider()
    exporter = BatchExporter(ObservatorySender(observatory_sink.url, observatory_sink.api_key), interval=0.1)
    pipeline = Pipeline({"observatory": exporter}, PipelineOptions(wait=0.05, max_wait=0.5))
    otel_bridge.install(provider, pipeline=pipeline)
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"my key is {KEY}"}]}])
    with provider.get_tracer("t").start_as_current_span(
        "chat",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.input.messages": messages,
        },
    ):
        otel_bridge.track_event("chat", role="user", content=f"again {KEY}")
    provider.shutdown()
    wire = json.dumps(observatory_sink.events)
    assert KEY not in wire and MASK in wire
    assert pipeline.stats()["pipeline"]["redacted"] >= 3  # start input, end input, chat events


def _proto_span(*events: tuple[str, dict[str, str]]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), name="chat gpt-4o", start_time_unix_nano=1,
        end_time_unix_nano=2,
    )  # fmt: skip
    span.attributes.add(key="gen_ai.operation.name", value=AnyValue(string_value="chat"))
    for name, attributes in events:
        event = span.events.add(name=name, time_unix_nano=2)
        event.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items())
    return request.SerializeToString()


def test_redact_stage_masks_custom_events_of_protobuf_spans_and_leaves_other_events_unread():
    from otel_bridge.processors.stages import redact_span
    from otel_bridge.semconv import recognise
    from otel_bridge.spans import ProtoEvents, spans_from_otlp_proto

    body = _proto_span(("gen_ai.choice", {"message": "hi"}), ("feedback", {"rating": "up", "comment": f"see {KEY}"}))
    a = redact_span(recognise(spans_from_otlp_proto(body).items[0]), Redactor())
    assert [(e.name, dict(e.attributes)) for e in a.span.events] == [
        ("gen_ai.choice", {"message": "hi"}), ("feedback", {"rating": "up", "comment": f"see {MASK}"}),
    ]  # fmt: skip
    plain = redact_span(recognise(spans_from_otlp_proto(_proto_span(("exception", {}))).items[0]), Redactor())
    assert type(plain.span.events) is ProtoEvents and plain.span.events._list is None  # names read, events not made
