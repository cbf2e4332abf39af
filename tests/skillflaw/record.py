"""``make record-skillflaw``: record a real Langflow 1.13.0's monitor API for the SkillFlaw replay tests.

Starts the fake OpenAI server and a capture endpoint for Langflow's Arize Phoenix tracer (OTLP/HTTP), starts
``langflow run`` from ``.langflow-venv`` on loopback with auto-login, creates an API key and three flows (Chat Input →
Chat Output; Chat Input → OpenAI → Chat Output on the fake server; the same with the model the fake server fails),
runs them in several sessions through the Playground build API and ``/api/v1/run``, edits one message, and writes:
- ``tests/fixtures/skillflaw/langflow.json``: every monitor request → response (snapshot ``exchanges``, and
  ``after_edit`` taken after the message edit), a 401/403 answer to a wrong key, and ``expected``: what the fake
  OpenAI server answered (tokens per call) and which sessions/messages were sent;
- ``tests/fixtures/skillflaw/phoenix.traces.pb`` (+ ``.json`` summary): the OTLP the Phoenix tracer sent.
``--live FILE`` keeps Langflow running for ``make test-skillflaw-live`` instead of writing the fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "gen"))
from fake_openai import FAIL_MODEL, FakeOpenAI  # noqa: E402

VENV = ROOT / ".langflow-venv"
OUT = ROOT / "tests" / "fixtures" / "skillflaw"
MODEL = "gpt-4o-mini"
SESSIONS = {  # flow → [(session, [user inputs])]; the failing flow's run is the recorded failure
    "echo": [("echo-s1", ["hello echo", "second echo"]), ("echo-s2", ["another session"])],
    "openai": [("openai-s1", ["What should I see in Paris?", "And in spring?"]), ("openai-s2", ["Hi there"])],
    "openai_fail": [("fail-s1", ["This call fails."])],
}
RUN_API_SESSIONS = {"echo-s2", "openai-s2"}  # the rest go through the Playground build API (which writes builds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Capture:
    """An OTLP/HTTP endpoint that keeps every body POSTed to /v1/traces (the Phoenix tracer's export)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.rstrip("/").endswith("/v1/traces"):
                    outer.bodies.append(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def start_langflow(tmp: Path, phoenix: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "LANGFLOW_SKIP_AUTH_AUTO_LOGIN": "true", "LANGFLOW_AUTO_LOGIN": "true",
        "LANGFLOW_SSRF_ALLOWED_HOSTS": "127.0.0.1", "LANGFLOW_CONFIG_DIR": str(tmp / "config"),
        "LANGFLOW_DATABASE_URL": f"sqlite:///{tmp / 'langflow.db'}", "LANGFLOW_DO_NOT_TRACK": "true",
        "LANGFLOW_WORKERS": "1", "PHOENIX_COLLECTOR_ENDPOINT": phoenix, "DO_NOT_TRACK": "true",
    }  # fmt: skip
    log = (tmp / "langflow.log").open("wb")
    proc = subprocess.Popen([str(VENV / "bin" / "langflow"), "run", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-only", "--no-open-browser"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"langflow exited {proc.returncode}; see {tmp / 'langflow.log'}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"langflow did not start within 600s; see {tmp / 'langflow.log'}")


def api_key(url: str) -> str:
    token = httpx.get(f"{url}/api/v1/auto_login", timeout=30).json()["access_token"]
    r = httpx.post(f"{url}/api/v1/api_key/", json={"name": "otel-bridge-recording"},
                   headers={"authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    r.raise_for_status()
    return r.json()["api_key"]


def create_flows(c: httpx.Client, fake_url: str) -> dict[str, str]:
    out = subprocess.run([str(VENV / "bin" / "python"), str(HERE / "make_flows.py"), fake_url, MODEL, FAIL_MODEL],
                         capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    ids = {}
    for key, flow in json.loads(out.stdout.strip().splitlines()[-1]).items():
        r = c.post(
            "/api/v1/flows/",
            json={"name": flow["name"], "description": flow.get("description", ""), "data": flow["data"]},
        )
        r.raise_for_status()
        ids[key] = r.json()["id"]
    return ids


def build(c: httpx.Client, flow_id: str, session: str, text: str) -> None:
    """The Playground path: POST /build/{flow}/flow, then read the job's events until it ends."""
    r = c.post(
        f"/api/v1/build/{flow_id}/flow", json={"inputs": {"input_value": text, "session": session, "type": "chat"}}
    )
    r.raise_for_status()
    job = r.json()["job_id"]
    with c.stream("GET", f"/api/v1/build/{job}/events", timeout=300) as events:
        for line in events.iter_lines():
            if '"end"' in line or '"error"' in line and '"event"' in line:
                pass
    time.sleep(1.0)  # the native tracer flushes its trace when the run ends


def run_api(c: httpx.Client, flow_id: str, session: str, text: str) -> None:
    r = c.post(f"/api/v1/run/{flow_id}", params={"stream": "false"},
               json={"input_value": text, "session_id": session, "input_type": "chat", "output_type": "chat"}, timeout=300)  # fmt: skip
    print(f"  /run {session}: {r.status_code}")
    time.sleep(1.0)


def snapshot(c: httpx.Client, flows: dict[str, str]) -> list[dict[str, Any]]:
    """Every monitor answer for every flow, in the largest pages Langflow 1.13 allows."""
    exchanges: list[dict[str, Any]] = []

    def get(path: str, query: dict[str, Any] | None = None) -> Any:
        r = c.get(path, params=query)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        exchanges.append({"request": {"method": "GET", "path": path, "query": {k: str(v) for k, v in (query or {}).items()}},
                          "response": {"status": r.status_code, "body": body}})  # fmt: skip
        return body

    get("/api/v1/flows/", {"get_all": "true", "header_flows": "true", "remove_example_flows": "true"})
    for flow_id in flows.values():
        page = 1
        while True:
            traces = get("/api/v1/monitor/traces", {"flow_id": flow_id, "page": page, "size": 200})
            for t in traces["traces"]:
                get(f"/api/v1/monitor/traces/{t['id']}")
            if page >= traces["pages"]:
                break
            page += 1
        page = 1
        while True:
            tx = get("/api/v1/monitor/transactions", {"flow_id": flow_id, "page": page, "size": 100})
            if page >= tx["pages"]:
                break
            page += 1
        get("/api/v1/monitor/builds", {"flow_id": flow_id})
        offset = 0
        while (
            len(get("/api/v1/monitor/messages", {"flow_id": flow_id, "order": "DESC", "limit": 200, "offset": offset}))
            == 200
        ):
            offset += 200
    return exchanges


def record(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="langflow-rec-"))
    capture = Capture()
    with FakeOpenAI() as fake:
        proc, url = start_langflow(tmp, capture.url)
        try:
            key = api_key(url)
            c = httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=120)
            flows = create_flows(c, fake.base_url)
            print("flows:", flows)
            sent = []
            for name, sessions in SESSIONS.items():
                for session, texts in sessions:
                    for text in texts:
                        (run_api if session in RUN_API_SESSIONS else build)(c, flows[name], session, text)
                        sent.append({"flow": name, "flow_id": flows[name], "session": session, "text": text})
            time.sleep(3)
            if args.live:
                return _live(args.live, c, url, key, flows, fake, sent)
            before = snapshot(c, flows)
            edited = _edit_one(c, before, flows["openai"])
            after = snapshot(c, flows)
            denied = httpx.get(f"{url}/api/v1/monitor/messages", headers={"x-api-key": "not-a-valid-key"},
                               params={"flow_id": flows["echo"]}, timeout=30)  # fmt: skip
            before.append({"request": {"method": "GET", "path": "/api/v1/monitor/messages", "query": {"flow_id": flows["echo"]}},
                           "response": {"status": denied.status_code, "body": denied.json()}})  # fmt: skip
            version = subprocess.run([str(VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('langflow'))"],
                                     capture_output=True, text=True).stdout.strip()  # fmt: skip
            # The throwaway instance's key is not kept: the replay server enforces whichever key the recording names.
            rec = {"server": f"langflow {version}", "api_key": "replay-key-not-secret", "flows": flows,
                   "exchanges": before, "after_edit": after,
                   "expected": {"openai_calls": fake.records, "sent": sent, "edited": edited}}  # fmt: skip
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / "langflow.json").write_text(json.dumps(rec, indent=1, ensure_ascii=False))
            (OUT / "phoenix.traces.pb").write_bytes(_merge(capture.bodies))
            print(f"recorded {len(before)} + {len(after)} exchanges, {len(capture.bodies)} Phoenix export(s) -> {OUT}")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _live(path: str, c: httpx.Client, url: str, key: str, flows: dict[str, str], fake: FakeOpenAI, sent: list) -> None:
    """``make test-skillflaw-live``: the test polls this running Langflow; the snapshot written to ``path`` is what
    it must find. A line ``edit`` on stdin edits a message and adds ``after_edit``; end of input stops Langflow."""
    rec = {"server": "langflow (live)", "api_key": key, "flows": flows, "exchanges": snapshot(c, flows),
           "expected": {"openai_calls": fake.records, "sent": sent}}  # fmt: skip
    Path(path).write_text(json.dumps(rec))
    print(f"LIVE {url}", flush=True)
    for line in sys.stdin:
        if line.strip() == "edit":
            rec["expected"]["edited"] = _edit_one(c, rec["exchanges"], flows["openai"])
            rec["after_edit"] = snapshot(c, flows)
            Path(path).write_text(json.dumps(rec))
            print("EDITED", flush=True)


def _edit_one(c: httpx.Client, exchanges: list[dict[str, Any]], flow_id: str) -> dict[str, str]:
    """Edit the first user message of the OpenAI flow through the monitor API, as the Playground's edit does."""
    msgs = [m for e in exchanges if e["request"]["path"] == "/api/v1/monitor/messages"
            and e["request"]["query"].get("flow_id") == flow_id for m in e["response"]["body"]]  # fmt: skip
    target = min((m for m in msgs if m["sender"] == "User"), key=lambda m: m["timestamp"])
    text = target["text"] + " (edited)"
    c.put(f"/api/v1/monitor/messages/{target['id']}", json={"text": text}).raise_for_status()
    return {"id": target["id"], "before": target["text"], "after": text}


def _merge(bodies: list[bytes]) -> bytes:
    """All captured export requests as one ExportTraceServiceRequest."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    merged = ExportTraceServiceRequest()
    for body in bodies:
        part = ExportTraceServiceRequest()
        part.ParseFromString(body)
        merged.resource_spans.extend(part.resource_spans)
    return merged.SerializeToString()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--live", metavar="SNAPSHOT", help="keep Langflow running for a live test; write its snapshot here"
    )
    record(parser.parse_args())
