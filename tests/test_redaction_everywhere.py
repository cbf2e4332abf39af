"""Redaction is one stage over every text that leaves (issue 10): a secret placed in every field a span, a custom
event or a vendor-format body can carry reaches none of the three destinations."""

from __future__ import annotations

import json
import uuid

import orjson
from delivery_helpers import llm_span, request, send, service, wait_until

SECRET = "sk-proj-" + "Q7w" * 10
AWS = "AKIA" + "ABCDEFGHIJKLMNOP"


def _everywhere() -> dict:
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"my key is {SECRET}"}]}])
    return {
        "gen_ai.agent.name": "redact-agent", "session.id": f"s-{SECRET}", "gen_ai.conversation.id": f"c-{SECRET}",
        "tag.tags": json.dumps([f"t-{SECRET}"]), "metadata": json.dumps({"note": f"m-{SECRET}", "release_id": "rel_x"}),
        "traceloop.association.properties.customer": f"p-{SECRET}", "user.id": f"u-{SECRET}",
        "gen_ai.input.messages": messages, "input.value": f"in {SECRET}", "output.value": f"out {AWS}",
        "error.type": "ValueError",
    }  # fmt: skip


def test_a_secret_in_every_field_reaches_no_destination(tmp_path, observatory_sink, flightdeck_server):
    fd = flightdeck_server
    release = fd.register_release("redact-agent", "gpt-4o-mini", f"redact-{uuid.uuid4().hex[:6]}")
    svc = service(
        tmp_path,
        T_OBSERVATORY_URL=observatory_sink.url,
        T_OBSERVATORY_KEY=observatory_sink.api_key,
        T_FLIGHTDECK_URL=fd.base_url,
    )
    svc.pipeline.options.flightdeck.release_id = release
    try:
        spans = [
            llm_span(i, attrs=_everywhere(), status={"code": 2, "message": f"failed with Bearer {SECRET}"})
            for i in range(3)
        ]
        assert send(svc, request(spans))[:2] == (3, 0)
        report = {"events": [{"name": "feedback", "type": "feedback", "run_id": str(uuid.uuid4()), "timestamp": "2026-11-30T00:00:00Z",
                              "rating": "negative", "comment": f"leaked {SECRET}", "metadata": {"k": f"v {AWS}"}},
                             {"name": "llm_end", "type": "llm", "run_id": "01HXYZ", "timestamp": "2026-11-30T00:00:01Z",
                              "input": {"prompt": SECRET}, "output": {"text": AWS}, "latency": 0.5,
                              "metadata": {"session_id": SECRET, "tags": [SECRET]}}]}  # fmt: skip
        body = orjson.dumps(report)
        assert svc.ingest("observatory", body, report["events"]) == 2
        assert observatory_sink.wait_for(6, timeout=90)
        assert wait_until(lambda: len(fd.runs(release)) == 3, timeout=90)
        assert wait_until(lambda: len(svc.store.query("SELECT span_id FROM otel_bridge.spans FINAL")) >= 4, timeout=90)
        assert svc.pipeline.force_flush(10)
        sent = {
            "observatory": orjson.dumps(observatory_sink.events).decode(),
            "flightdeck": orjson.dumps(fd.runs(release)).decode(),
            **{t: orjson.dumps(svc.store.query(f"SELECT * FROM otel_bridge.{t} FINAL"), default=str).decode()
               for t in ("spans", "runs", "events")},
        }  # fmt: skip
        for where, text in sent.items():
            assert SECRET not in text and AWS not in text, where
            assert "Q7wQ7w" not in text, where  # no partial leak either
        assert "[REDACTED]" in sent["observatory"] and "[REDACTED]" in sent["spans"] and "[REDACTED]" in sent["events"]
        assert '"session_id":"s-[REDACTED]"' in sent["observatory"].replace(" ", "")
        assert svc.pipeline.stats()["pipeline"]["redacted"] > 0
    finally:
        svc.stop(10)
