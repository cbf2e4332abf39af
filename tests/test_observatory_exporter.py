"""Observatory sender on the shared engine: against the strict loopback sink and a scripted httpx transport."""

from __future__ import annotations

import email.utils
import logging
import time

import httpx
import orjson
import pytest

from otel_bridge.exporters.batch import BatchExporter, PermanentError, RetryableError
from otel_bridge.exporters.observatory import ObservatorySender, observatory_exporter, parse_retry_after

try:  # tests/ is a rootdir-less directory today; keep working if it becomes a package
    from tests.observatory_sink import SINK_API_KEY, ObservatorySink, observatory_sink, validate_report  # noqa: F401
except ImportError:
    from observatory_sink import SINK_API_KEY, ObservatorySink, observatory_sink, validate_report  # noqa: F401

TS = "2026-05-29T08:42:11.123Z"


def run_events(i: int = 0) -> list[dict]:
    """A small valid run: agent start/end around one llm call, plus chat, feedback and saved."""
    run, llm = f"run-{i}", f"llm-{i}"
    return [
        {
            "name": "agent_start",
            "type": "agent",
            "run_id": run,
            "parent_run_id": None,
            "timestamp": TS,
            "app_id": "app-1",
            "input": {"prompt": "hi"},
            "metadata": {"agent": "claims"},
        },
        {"name": "llm_start", "type": "llm", "run_id": llm, "parent_run_id": run, "timestamp": TS, "model": "gpt-4o"},
        {
            "name": "llm_end",
            "type": "llm",
            "run_id": llm,
            "parent_run_id": run,
            "timestamp": TS,
            "status": "success",
            "latency": 0.42,
            "model": "gpt-4o",
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "cached_tokens": 0,
            "output": "hello",
        },
        {
            "name": "agent_end",
            "type": "agent",
            "run_id": run,
            "timestamp": TS,
            "status": "error",
            "latency": 1,
            "error": {"type": "TimeoutError"},
            "tags": ["high-risk"],
            "user_email": "a@b.c",
        },
        {
            "name": "chat",
            "type": "chat",
            "run_id": run,
            "timestamp": TS,
            "role": "user",
            "content": "hi",
            "thread_id": "cust-42",
        },
        {"name": "feedback", "type": "feedback", "run_id": run, "timestamp": TS, "rating": "positive", "comment": "ok"},
        {"name": "saved", "type": "saved", "run_id": run, "timestamp": TS},
    ]


def exporter_for(sink, **kw) -> BatchExporter:
    kw.setdefault("interval", 60.0)
    return observatory_exporter(sink.url, sink.api_key, **kw)


# ---- against the strict sink ------------------------------------------------------------------------------


def test_delivers_valid_events(observatory_sink):
    exp = exporter_for(observatory_sink, max_batch=5)
    events = run_events(0) + run_events(1)
    assert exp.offer_many(events) == len(events)
    assert exp.force_flush(5)
    assert observatory_sink.events == events
    assert observatory_sink.requests == 3  # 14 events in batches of 5
    assert exp.shutdown(5)
    assert exp.stats() == {"queued": 14, "sent": 14, "retried": 0, "dropped": 0, "failed": 0, "abandoned": 0}


def test_503_then_success_delivers_exactly_once(observatory_sink):
    observatory_sink.fail_next(503, retry_after=0)
    exp = exporter_for(observatory_sink)
    event = run_events()[0]
    exp.offer(event)
    assert exp.force_flush(5)
    assert observatory_sink.events == [event]
    assert observatory_sink.requests == 2
    exp.shutdown(5)
    assert exp.stats()["retried"] == 1 and exp.stats()["sent"] == 1


def test_400_is_not_retried(observatory_sink, tmp_path):
    """A 400 is bisected (one bad event must not take its batch with it), never retried as is."""
    observatory_sink.fail_next(400, 3)
    dead = tmp_path / "dead.jsonl"
    exp = exporter_for(observatory_sink, dead_letter=dead)
    exp.offer_many(run_events()[:2])
    assert exp.force_flush(5)
    assert observatory_sink.requests == 3 and observatory_sink.events == []  # the pair, then each half
    exp.shutdown(5)
    assert exp.stats() == {"queued": 2, "sent": 0, "retried": 0, "dropped": 0, "failed": 2, "abandoned": 0}
    lines = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert [x["error"] for x in lines] == ["observatory: HTTP 400: scripted failure 400"] * 2


def test_shutdown_delivers_everything_queued(observatory_sink):
    exp = exporter_for(observatory_sink, max_batch=50)
    events = [e for i in range(20) for e in run_events(i)]
    exp.offer_many(events)
    assert exp.shutdown(5)
    assert observatory_sink.events == events
    assert exp.stats()["sent"] == len(events)


def test_sink_down_offer_stays_fast_and_shutdown_returns(observatory_sink):
    observatory_sink.stop()  # connection refused for the whole test
    exp = exporter_for(
        observatory_sink,
        max_batch=10,
        max_queue=100,
        interval=0.01,
        initial_backoff=0.05,
        max_backoff=0.2,
        max_attempts=50,
    )
    event = run_events()[0]
    start = time.perf_counter()
    accepted = sum(exp.offer(event) for _ in range(1000))
    assert time.perf_counter() - start < 0.5
    assert accepted >= 100
    start = time.monotonic()
    assert not exp.shutdown(0.5)  # gave up: never reported as a success
    assert time.monotonic() - start < 2.0
    end = time.monotonic() + 2  # an in-flight batch may be counted a moment after shutdown returns
    while exp.stats()["abandoned"] + exp.stats()["dropped"] < 1000 and time.monotonic() < end:
        time.sleep(0.005)
    s = exp.stats()
    assert s["sent"] == 0 and s["abandoned"] == accepted and s["dropped"] == 1000 - accepted
    assert s["retried"] > 0


def test_sink_comes_back_at_the_same_url(observatory_sink):
    url = observatory_sink.url
    observatory_sink.stop()
    sender = ObservatorySender(url, SINK_API_KEY)
    with pytest.raises(RetryableError):
        sender.send(run_events()[:1])
    observatory_sink.start()
    assert observatory_sink.url == url
    sender.send(run_events()[:1])
    assert observatory_sink.wait_for(1, 2)
    sender.close()


def test_sink_rejects_a_wrong_key():
    # Not through the fixture: its teardown would (rightly) fail on the recorded violation.
    sink = ObservatorySink()
    sink.start()
    try:
        sender = ObservatorySender(sink.url, "wrong-key")
        with pytest.raises(PermanentError, match="authorization"):
            sender.send(run_events()[:1])
        assert sink.violations and sink.events == []
    finally:
        sink.stop()


# ---- the validator itself ---------------------------------------------------------------------------------

HEADERS = {"Authorization": f"Bearer {SINK_API_KEY}", "Content-Type": "application/json"}


def body(*events) -> bytes:
    return orjson.dumps({"events": list(events)})


def test_validator_accepts_the_documented_shapes():
    assert validate_report(HEADERS, body(*run_events())) == []
    curl_example = {
        "name": "agent_start",
        "type": "agent",
        "run_id": "01HXYZ",
        "timestamp": TS,
        "input": {"prompt": "..."},
        "metadata": {"agent": "claims-approval"},
    }
    assert validate_report({k.lower(): v for k, v in HEADERS.items()}, body(curl_example)) == []


def _without(event: dict, key: str) -> dict:
    return {k: v for k, v in event.items() if k != key}


AGENT, LLM_START, LLM_END, AGENT_END, CHAT, FEEDBACK, SAVED = run_events()


@pytest.mark.parametrize(
    "headers, raw, expect",
    [
        ({"Content-Type": "application/json"}, body(AGENT), "authorization"),
        ({**HEADERS, "Authorization": "Bearer nope"}, body(AGENT), "authorization"),
        ({**HEADERS, "Authorization": SINK_API_KEY}, body(AGENT), "authorization"),
        ({**HEADERS, "Content-Type": "text/plain"}, body(AGENT), "content-type"),
        (HEADERS, b"{not json", "not JSON"),
        (HEADERS, orjson.dumps([AGENT]), "exactly the key 'events'"),
        (HEADERS, orjson.dumps({"events": [AGENT], "extra": 1}), "exactly the key 'events'"),
        (HEADERS, orjson.dumps({"events": []}), "non-empty list"),
        (HEADERS, orjson.dumps({"events": AGENT}), "non-empty list"),
    ],
)
def test_validator_rejects_bad_requests(headers, raw, expect):
    errors = validate_report(headers, raw)
    assert any(expect in e for e in errors), errors


@pytest.mark.parametrize(
    "event, expect",
    [
        ("agent_start", "not an object"),
        (_without(AGENT, "run_id"), "missing 'run_id'"),
        (_without(AGENT, "timestamp"), "missing 'timestamp'"),
        ({**AGENT, "run_id": ""}, "run_id"),
        ({**AGENT, "name": 3}, "strings"),
        ({**AGENT, "timestamp": "2026-05-29T08:42:11Z"}, "timestamp"),
        ({**AGENT, "timestamp": "2026-05-29T08:42:11.123456Z"}, "timestamp"),
        ({**AGENT, "timestamp": "2026-05-29T08:42:11.123+00:00"}, "timestamp"),
        ({**AGENT, "timestamp": "2026-02-30T08:42:11.123Z"}, "not a valid date"),
        ({**AGENT, "timestamp": 1717000000}, "timestamp"),
        ({**AGENT, "app_id": 7}, "app_id"),
        ({**AGENT, "parent_run_id": 7}, "parent_run_id"),
        ({**AGENT, "metadata": "x"}, "metadata"),
        ({**AGENT, "surprise": 1}, "unknown keys ['surprise']"),
        ({**AGENT, "status": "success"}, "unknown keys ['status']"),
        ({**AGENT, "type": "workflow", "name": "workflow_start"}, "not a run type"),
        ({**AGENT, "name": "agent_begin"}, "agent_start or agent_end"),
        ({**AGENT, "name": "tool_start"}, "agent_start or agent_end"),
        (_without(AGENT_END, "status"), "status"),
        ({**AGENT_END, "status": "ok"}, "status"),
        ({**AGENT_END, "latency": -1}, "latency"),
        ({**AGENT_END, "latency": "1.2"}, "latency"),
        ({**AGENT_END, "latency": True}, "latency"),
        ({**AGENT_END, "status": "success"}, "error: only on status 'error'"),
        ({**AGENT_END, "tags": "high-risk"}, "tags"),
        ({**AGENT, "model": "gpt-4o"}, "unknown keys ['model']"),
        (_without(LLM_END, "model"), "model"),
        (_without(LLM_END, "prompt_tokens"), "prompt_tokens"),
        ({**LLM_END, "completion_tokens": 1.5}, "completion_tokens"),
        ({**LLM_END, "total_tokens": -1}, "total_tokens"),
        ({**LLM_END, "total_tokens": False}, "total_tokens"),
        ({**LLM_END, "reasoning_tokens": "3"}, "reasoning_tokens"),
        ({**LLM_START, "prompt_tokens": 3}, "unknown keys ['prompt_tokens']"),
        ({**CHAT, "role": "system"}, "role"),
        (_without(CHAT, "content"), "content"),
        ({**CHAT, "thread_id": 42}, "thread_id"),
        ({**CHAT, "type": "agent"}, "must have type 'chat'"),
        ({**FEEDBACK, "rating": 5}, "rating"),
        ({**FEEDBACK, "comment": ["x"]}, "comment"),
        (_without(FEEDBACK, "run_id"), "missing 'run_id'"),
        ({**SAVED, "rating": "positive"}, "unknown keys ['rating']"),
    ],
)
def test_validator_rejects_bad_events(event, expect):
    errors = validate_report(HEADERS, body(event))
    assert any(expect in e for e in errors), errors


# ---- scripted transport (httpx.MockTransport) -------------------------------------------------------------


def mock_sender(handler, **kw) -> ObservatorySender:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ObservatorySender("https://obs.example/", "sk-secret-123", client=client, **kw)


def test_request_shape_and_headers():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    mock_sender(handler).send(run_events()[:2])
    (req,) = seen
    assert req.method == "POST" and str(req.url) == "https://obs.example/api/report"
    assert validate_report(dict(req.headers), req.content, api_key="sk-secret-123") == []
    assert orjson.loads(req.content) == {"events": run_events()[:2]}


@pytest.mark.parametrize(
    "status, header, expect",
    [
        (429, "7", 7.0),
        (503, "1.5", 1.5),
        (503, None, None),
        (502, "soon", None),
        (500, "-3", 0.0),
    ],
)
def test_retry_after_parsing(status, header, expect):
    headers = {} if header is None else {"Retry-After": header}
    sender = mock_sender(lambda r: httpx.Response(status, headers=headers, text="busy"))
    with pytest.raises(RetryableError) as info:
        sender.send(run_events()[:1])
    assert info.value.retry_after == expect
    assert f"HTTP {status}: busy" in str(info.value)


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    sender = mock_sender(lambda r: httpx.Response(429, headers={"Retry-After": when}))
    with pytest.raises(RetryableError) as info:
        sender.send(run_events()[:1])
    assert 115 <= info.value.retry_after <= 121
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 10) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 30) == 30.0


def test_retry_after_drives_the_engine_wait():
    responses = iter([httpx.Response(429, headers={"Retry-After": "4"}), httpx.Response(200)])
    waits: list[float] = []
    exp = BatchExporter(mock_sender(lambda r: next(responses)), sleep=waits.append, start=False)
    exp.offer(run_events()[0])
    exp.force_flush(1)
    assert waits and waits[0] == 4.0
    assert exp.stats()["sent"] == 1 and exp.stats()["retried"] == 1


def test_4xx_is_permanent_with_the_server_message():
    sender = mock_sender(lambda r: httpx.Response(422, json={"detail": "events[0].timestamp: bad"}))
    with pytest.raises(PermanentError) as info:
        sender.send(run_events()[:1])
    assert str(info.value) == "observatory: HTTP 422: events[0].timestamp: bad"
    assert info.value.splittable is True  # the engine bisects to the one bad event


def test_transport_errors_are_retryable_and_the_key_never_logged(caplog):
    def handler(request):
        raise httpx.ConnectTimeout("timed out", request=request)

    caplog.set_level(logging.DEBUG)
    sender = mock_sender(handler)
    with pytest.raises(RetryableError, match="ConnectTimeout"):
        sender.send(run_events()[:1])
    exp = BatchExporter(sender, max_attempts=2, sleep=lambda s: None, start=False)
    exp.offer(run_events()[0])
    exp.shutdown(1)
    assert exp.stats()["failed"] == 1
    assert "sk-secret-123" not in caplog.text and "sk-secret-123" not in repr(sender)


def test_config_from_env(monkeypatch):
    monkeypatch.delenv("FLOWX_OBSERVATORY_API_URL", raising=False)
    with pytest.raises(ValueError, match="FLOWX_OBSERVATORY_API_URL"):
        ObservatorySender()
    monkeypatch.setenv("FLOWX_OBSERVATORY_API_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("FLOWX_OBSERVATORY_API_KEY", "env-key")
    sender = ObservatorySender()
    assert sender.endpoint == "http://127.0.0.1:9/api/report"
    assert sender._headers["Authorization"] == "Bearer env-key"
    sender.close()
