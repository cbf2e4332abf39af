"""A strict FlowX Observatory stand-in on 127.0.0.1, for tests (no real Observatory can run here).

It checks every request against the wire protocol in the Observatory "Events" docs
(/work/shared/seeds/000_44834d64aa3a8557.txt): ``POST /api/report``, ``Authorization: Bearer <key>``,
``Content-Type: application/json``, body ``{"events": [<event>, ...]}``. A deviation is answered with 400 and
recorded; the ``observatory_sink`` fixture's teardown fails the test that caused it.

Event keys the sink accepts:

* every event: ``name``, ``type``, ``run_id``, ``timestamp`` (required); ``app_id``, ``parent_run_id``,
  ``metadata``, ``input``, ``output`` (optional);
* run events (``<type>_start`` / ``<type>_end``, type in agent|llm|tool|chain|retriever|embedding):
  ``_end`` requires ``status`` (success|error) and ``latency`` (seconds >= 0); ``llm`` events may carry
  ``model``, which ``llm_end`` requires together with integer ``prompt_tokens``, ``completion_tokens``,
  ``total_tokens``;
* custom events: ``chat`` (``role``, ``content``, optional ``thread_id``), ``feedback`` (``rating``,
  optional ``comment``), ``saved`` (nothing more);
* EXTRA_KEYS, the only other top-level keys allowed (the run filters of the Observatory API use them):
  ``error`` (str or object, ``_end`` with status error only), ``cached_tokens`` / ``reasoning_tokens`` /
  ``cache_write_tokens`` (int >= 0, ``llm_end`` only), ``event_id`` (str, ``chat`` only: the de-dup identity), ``tags`` (list of str), ``user_email`` (str).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

SINK_API_KEY = "test-observatory-key-not-secret"
RUN_TYPES = frozenset({"agent", "llm", "tool", "chain", "retriever", "embedding"})
COMMON_REQUIRED = ("name", "type", "run_id", "timestamp")
COMMON_OPTIONAL = frozenset({"app_id", "parent_run_id", "metadata", "input", "output"})
EXTRA_KEYS = frozenset({"error", "cached_tokens", "reasoning_tokens", "tags", "user_email"})
TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
CUSTOM_KEYS = {
    "chat": frozenset({"role", "content", "thread_id", "event_id"}),
    "feedback": frozenset({"rating", "comment"}),
    "saved": frozenset(),
}
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and v == v and v not in (float("inf"), float("-inf"))


def validate_report(headers: Mapping[str, str], body: bytes, *, api_key: str = SINK_API_KEY) -> list[str]:
    """Every way this request deviates from the Observatory wire protocol (empty when it conforms)."""
    h = {k.lower(): v for k, v in headers.items()}
    errors = []
    if h.get("authorization") != f"Bearer {api_key}":
        errors.append("authorization: expected 'Bearer <api key>'")
    media = [p.strip().lower() for p in h.get("content-type", "").split(";")]
    if media[0] != "application/json" or any(p not in ("charset=utf-8", "") for p in media[1:]):
        errors.append(f"content-type: expected application/json, got {h.get('content-type')!r}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return errors + [f"body: not JSON ({exc})"]
    if not isinstance(doc, dict) or set(doc) != {"events"}:
        return errors + ["body: expected an object with exactly the key 'events'"]
    events = doc["events"]
    if not isinstance(events, list) or not events:
        return errors + ["events: expected a non-empty list"]
    for i, event in enumerate(events):
        errors.extend(f"events[{i}]: {e}" for e in validate_event(event))
    return errors


def validate_event(event: Any) -> list[str]:
    """Deviations of one event from the wire shape (see the module docstring for the accepted keys)."""
    if not isinstance(event, dict):
        return ["not an object"]
    errors = [f"missing {k!r}" for k in COMMON_REQUIRED if k not in event]
    if errors:
        return errors
    name, typ = event["name"], event["type"]
    if not isinstance(name, str) or not isinstance(typ, str):
        return ["name and type must be strings"]
    if not isinstance(event["run_id"], str) or not event["run_id"]:
        errors.append("run_id: must be a non-empty string")
    errors += _check_timestamp(event["timestamp"])
    errors += _check_common_optional(event)
    if name in CUSTOM_KEYS:
        allowed = _check_custom(event, name, typ, errors)
    else:
        allowed = _check_run(event, name, typ, errors)
    unknown = set(event) - set(COMMON_REQUIRED) - COMMON_OPTIONAL - allowed
    if unknown:
        errors.append(f"unknown keys {sorted(unknown)}")
    return errors


def _check_timestamp(ts: Any) -> list[str]:
    if not isinstance(ts, str) or not _TIMESTAMP.fullmatch(ts):
        return [f"timestamp: expected UTC ISO 8601 like 2026-05-29T08:42:11.123Z, got {ts!r}"]
    try:
        datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return [f"timestamp: not a valid date/time {ts!r}"]
    return []


def _check_common_optional(event: dict) -> list[str]:
    errors = []
    if "app_id" in event and not isinstance(event["app_id"], str):
        errors.append("app_id: must be a string")
    if event.get("parent_run_id") is not None and not isinstance(event["parent_run_id"], str):
        errors.append("parent_run_id: must be a string or null")
    if "metadata" in event and not isinstance(event["metadata"], dict):
        errors.append("metadata: must be an object")
    if "tags" in event and not (isinstance(event["tags"], list) and all(isinstance(t, str) for t in event["tags"])):
        errors.append("tags: must be a list of strings")
    if "user_email" in event and not isinstance(event["user_email"], str):
        errors.append("user_email: must be a string")
    return errors


def _check_custom(event: dict, name: str, typ: str, errors: list[str]) -> frozenset[str]:
    if typ != name:
        errors.append(f"type: custom event {name!r} must have type {name!r}")
    if name == "chat":
        if event.get("role") not in ("user", "assistant"):
            errors.append("chat: role must be 'user' or 'assistant'")
        if not isinstance(event.get("content"), str):
            errors.append("chat: content must be a string")
        if "thread_id" in event and not isinstance(event["thread_id"], str):
            errors.append("chat: thread_id must be a string")
    elif name == "feedback":
        if event.get("rating") not in ("positive", "negative"):
            errors.append("feedback: rating must be 'positive' or 'negative'")
        if "comment" in event and not isinstance(event["comment"], str):
            errors.append("feedback: comment must be a string")
    return CUSTOM_KEYS[name] | {"tags", "user_email"}


def _check_run(event: dict, name: str, typ: str, errors: list[str]) -> frozenset[str]:
    if typ not in RUN_TYPES:
        errors.append(f"type: {typ!r} is not a run type or custom event")
        return frozenset()
    if name not in (f"{typ}_start", f"{typ}_end"):
        errors.append(f"name: expected {typ}_start or {typ}_end, got {name!r}")
        return frozenset()
    allowed = {"tags", "user_email"} | ({"model"} if typ == "llm" else set())
    if "model" in event and not isinstance(event["model"], str):
        errors.append("model: must be a string")
    if name.endswith("_start"):
        return frozenset(allowed)
    allowed |= {"status", "latency", "error"}
    if event.get("status") not in ("success", "error"):
        errors.append("status: must be 'success' or 'error'")
    if not _is_number(event.get("latency")) or event["latency"] < 0:
        errors.append("latency: must be a number of seconds >= 0")
    if "error" in event and (event.get("status") != "error" or not isinstance(event["error"], str | dict)):
        errors.append("error: only on status 'error' events, a string or an object")
    if typ == "llm":
        allowed |= {*TOKEN_KEYS, "cached_tokens", "reasoning_tokens", "cache_write_tokens"}
        if not isinstance(event.get("model"), str):
            errors.append("llm_end: model must be a string")
        for key in TOKEN_KEYS:
            if not _is_int(event.get(key)) or event[key] < 0:
                errors.append(f"llm_end: {key} must be an integer >= 0")
        for key in ("cached_tokens", "reasoning_tokens", "cache_write_tokens"):
            if key in event and (not _is_int(event[key]) or event[key] < 0):
                errors.append(f"llm_end: {key} must be an integer >= 0")
    return frozenset(allowed)


class ObservatorySink:
    """The HTTP server plus what it saw; scriptable failures via :meth:`fail_next`."""

    def __init__(self, api_key: str = SINK_API_KEY) -> None:
        self.api_key = api_key
        self.events: list[dict] = []
        self.requests = 0
        self.violations: list[str] = []
        self._script: list[tuple[int, float | None]] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        """Listen (again) on the same port, so a stopped sink comes back at the same URL."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="observatory-sink", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, status: int, n: int = 1, retry_after: float | str | None = None) -> None:
        """Answer the next ``n`` valid requests with ``status`` (and a Retry-After header when given)."""
        with self._cond:
            self._script.extend([(status, retry_after)] * n)

    def wait_for(self, n_events: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.events) >= n_events, timeout)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict, dict]:
        """Status, extra headers and JSON body to answer one request with."""
        errors = [] if method == "POST" else [f"method: expected POST, got {method}"]
        if path != "/api/report":
            errors.append(f"path: expected /api/report, got {path!r}")
        errors += validate_report(headers, body, api_key=self.api_key)
        with self._cond:
            self.requests += 1
            if errors:
                self.violations.extend(errors)
                return 400, {}, {"detail": "; ".join(errors)}
            if self._script:
                status, retry_after = self._script.pop(0)
                extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
                return status, extra, {"detail": f"scripted failure {status}"}
            self.events.extend(orjson.loads(body)["events"])
            self._cond.notify_all()
        return 200, {}, {"ok": True}


def _handler_for(sink: ObservatorySink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so stop() really takes the sink down for pooled clients too.
        protocol_version = "HTTP/1.0"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, extra, doc = sink.handle(self.command, self.path, dict(self.headers.items()), body)
            payload = orjson.dumps(doc)
            self.send_response(status)
            for key, value in {**extra, "Content-Type": "application/json"}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@pytest.fixture
def observatory_sink() -> Iterator[ObservatorySink]:
    """A running strict sink; the test fails if anything it received violated the wire protocol."""
    sink = ObservatorySink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
    assert not sink.violations, f"Observatory wire-protocol violations: {sink.violations}"
