"""Secrets never leave otel-bridge: masked in every exported text by default; PII only when asked."""

import json

from opentelemetry.sdk.trace import TracerProvider

import otel_bridge
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.processors.redact import MASK, Redactor

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
