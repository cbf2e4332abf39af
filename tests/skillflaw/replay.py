"""A loopback server that answers the SkillFlaw / Langflow monitor API from a recording (tests only).

A recording (``tests/fixtures/skillflaw/*.json``, made by ``record.py`` against a real Langflow, or transcribed from
the seed) is a list of request → response exchanges. The items in those responses are served as recorded; the
envelope is re-computed with Langflow 1.13.0's rules, so a poller's own paging and time filters get the answers a
live server would give: transactions newest first in ``page``/``size`` pages, messages as the newest ``limit``
window after ``offset``, traces filtered by ``start_time``, builds as recorded. A path never recorded is a 404,
like SkillFlaw's missing ``/monitor/traces``; a wrong ``x-api-key`` gets the recorded 401/403 answer.

``ReplayServer.switch(snapshot)`` serves a later snapshot (the recording after a message edit).
"""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "skillflaw"


def _ts(value: str) -> datetime:
    from otel_bridge.receivers.skillflaw_client import parse_timestamp

    return parse_timestamp(value)


class Dataset:
    """Items per (endpoint, flow) gathered from every recorded page, de-duplicated by id."""

    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
        self.builds: dict[str, Any] = {}
        self.flows: list[Any] | None = None
        self.details: dict[str, Any] = {}
        self.denied: dict[str, Any] | None = None
        self.traces_offered = False
        for ex in exchanges:
            self._add(ex["request"], ex["response"])

    def _add(self, req: dict[str, Any], resp: dict[str, Any]) -> None:
        path, flow, body = req["path"].rstrip("/"), req.get("query", {}).get("flow_id", ""), resp["body"]
        if resp["status"] in (401, 403):
            self.denied = resp
        elif resp["status"] != 200:
            return
        elif path == "/api/v1/flows":
            self.flows = body
        elif path == "/api/v1/monitor/builds":
            self.builds[flow] = body
        elif path == "/api/v1/monitor/messages":
            self.items["messages", flow].update((m["id"], m) for m in body)
        elif path == "/api/v1/monitor/transactions":
            self.items["transactions", flow].update((t["id"], t) for t in body["items"])
        elif path == "/api/v1/monitor/traces":
            self.traces_offered = True
            self.items["traces", flow].update((t["id"], t) for t in body["traces"])
        elif path.startswith("/api/v1/monitor/traces/"):
            self.details[path.rsplit("/", 1)[1]] = body

    def newest_first(self, kind: str, flow: str, key: str = "timestamp") -> list[dict[str, Any]]:
        return sorted(self.items[kind, flow].values(), key=lambda x: (_ts(x[key]), x["id"]), reverse=True)


class ReplayServer:
    def __init__(self, recording: str | Path | dict[str, Any], snapshot: str = "exchanges") -> None:
        self.recording = json.loads(Path(recording).read_text()) if not isinstance(recording, dict) else recording
        self.api_key = self.recording.get("api_key") or ""
        self.requests: list[str] = []
        self.down = False  # answer 503, as a server that is restarting
        self.switch(snapshot)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                status, body = outer.answer(self.path, dict(self.headers.items()))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def switch(self, snapshot: str) -> None:
        self.data = Dataset(self.recording[snapshot])

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------------------------------------ routes

    def answer(self, raw_path: str, headers: dict[str, str]) -> tuple[int, Any]:
        self.requests.append(raw_path)
        if self.down:
            return 503, {"detail": "Service Unavailable"}
        h = {k.lower(): v for k, v in headers.items()}
        if self.api_key and h.get("x-api-key") != self.api_key:
            denied = self.data.denied or {
                "status": 403,
                "body": {"detail": "An API key must be passed as query or header"},
            }
            return denied["status"], denied["body"]
        url = urlsplit(raw_path)
        path, q = url.path.rstrip("/"), {k: v[-1] for k, v in parse_qs(url.query).items()}
        flow, d = q.get("flow_id", ""), self.data
        if path == "/api/v1/flows" and d.flows is not None:
            return 200, d.flows
        if path == "/api/v1/monitor/builds" and flow in d.builds:
            return 200, d.builds[flow]
        if path == "/api/v1/monitor/messages":
            return 200, self._messages(flow, q)
        if path == "/api/v1/monitor/transactions":
            return 200, self._page(d.newest_first("transactions", flow), q)
        if path == "/api/v1/monitor/traces" and d.traces_offered:
            return 200, self._traces(flow, q)
        if path.startswith("/api/v1/monitor/traces/") and path.rsplit("/", 1)[1] in d.details:
            return 200, d.details[path.rsplit("/", 1)[1]]
        return 404, {"detail": "Not Found"}

    def _messages(self, flow: str, q: dict[str, str]) -> list[Any]:
        """Langflow 1.13: the newest ``limit`` (≤ 200, default 100) after ``offset``, then sorted as asked."""
        limit = min(int(q.get("limit") or 100), 200) or 100
        offset = int(q.get("offset") or 0)
        window = self.data.newest_first("messages", flow)[offset : offset + limit]
        return window if q.get("order", "ASC").upper() == "DESC" else window[::-1]

    @staticmethod
    def _page(items: list[Any], q: dict[str, str]) -> dict[str, Any]:
        page, size = max(1, int(q.get("page") or 1)), min(int(q.get("size") or 50), 100)
        return {"items": items[(page - 1) * size : page * size], "total": len(items), "page": page, "size": size,
                "pages": math.ceil(len(items) / size)}  # fmt: skip

    def _traces(self, flow: str, q: dict[str, str]) -> dict[str, Any]:
        traces = self.data.newest_first("traces", flow, key="startTime")
        if q.get("start_time"):
            since = _ts(q["start_time"]).astimezone(UTC)
            traces = [t for t in traces if _ts(t["startTime"]) >= since]
        page, size = max(1, int(q.get("page") or 1)), int(q.get("size") or 50)
        return {
            "traces": traces[(page - 1) * size : page * size],
            "total": len(traces),
            "pages": math.ceil(len(traces) / size),
        }
