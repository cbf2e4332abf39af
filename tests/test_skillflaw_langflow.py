"""The SkillFlaw receiver against Langflow 1.13.0: the committed recording replayed on loopback (``make test``), or a
live Langflow started by ``tests/skillflaw/record.py --live`` (``make test-skillflaw-live``, SKILLFLAW_LIVE=1).

Expected values come from the recording's own answers and from what the fake OpenAI server answered. The edit test
changes the server's state, so it runs last."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
from bridge_server import start_bridge, wait_until
from skillflaw import expected
from skillflaw.harness import FIXTURES, SERVE_CONFIG, load, local_pipeline, query_in_subprocess
from skillflaw.replay import ReplayServer

from otel_bridge.inspect import agent_spans
from otel_bridge.pipeline import Pipeline
from otel_bridge.receivers.otlp import ReceiverStats
from otel_bridge.receivers.skillflaw import SkillFlawReceiver, SkillFlawSettings
from otel_bridge.receivers.skillflaw_client import Unauthorized

LIVE = os.environ.get("SKILLFLAW_LIVE") == "1"


class Replay:
    def __init__(self) -> None:
        self.rec = load("langflow.json")
        self.server = ReplayServer(self.rec).__enter__()
        self.url, self.key = self.server.url, self.rec["api_key"]

    def edit(self) -> None:
        self.server.switch("after_edit")

    def close(self) -> None:
        self.server.__exit__()


class Live:
    """record.py --live: a real Langflow with the recording's flows and sessions; the snapshot is its truth."""

    def __init__(self) -> None:
        self.snap = Path(tempfile.mkdtemp()) / "live.json"
        cmd = [sys.executable, str(Path(__file__).parent / "skillflaw" / "record.py"), "--live", str(self.snap)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._line("LIVE ")
        self.url, self.rec = line.split()[1], orjson.loads(self.snap.read_bytes())
        self.key = self.rec["api_key"]

    def _line(self, prefix: str) -> str:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith(prefix):
                return line
        raise AssertionError(f"record.py --live ended before printing {prefix!r}")

    def edit(self) -> None:
        self.proc.stdin.write("edit\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        self._line("EDITED")
        self.rec = orjson.loads(self.snap.read_bytes())

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(120)


@pytest.fixture(scope="module")
def source():
    src = Live() if LIVE else Replay()
    yield src
    src.close()


@pytest.fixture(scope="module")
def polled(source, tmp_path_factory):
    """One in-process pipeline on chDB, after the receiver's first poll."""
    local = local_pipeline(tmp_path_factory.mktemp("langflow"))
    counts = local.receiver(source.url, source.key).poll_once()
    local.flush()
    yield local, counts
    local.pipeline.shutdown(5)
    local.store.close()


def test_first_poll_imports_every_item(source, polled):
    local, counts = polled
    assert counts == expected.counts(source.rec)


def test_runs_latency_tokens_and_components(source, polled):
    local, _ = polled
    want = expected.runs(source.rec)
    got = {r["trace_id"]: r for r in local.runs()}
    assert set(got) == set(want)
    for tid, w in want.items():
        r = got[tid]
        assert (r["agent"], r["success"], r["spans"]) == (w["agent"], w["success"], w["spans"])
        assert 0 <= r["latency_ms"] - w["latency_ms"] < 1  # Langflow truncates to whole ms
        assert (r["input_tokens"], r["output_tokens"], sorted(r["models"])) == (
            w["input_tokens"],
            w["output_tokens"],
            w["models"],
        )
    spans = local.spans()
    for tid, w in want.items():
        assert sorted(s["name"] for s in spans if s["trace_id"] == tid and s["kind"] == "chain") == w["components"]
        failed = sorted(
            s["name"] for s in spans if s["trace_id"] == tid and s["kind"] == "chain" and s["status"] == "error"
        )
        assert failed == w["failed_components"]
        assert {s["session_id"] for s in spans if s["trace_id"] == tid} == {w["session"]}
    # every successful call the fake OpenAI server answered is billed once, on its LLM span
    prompt, completion = expected.fake_openai_tokens(source.rec)
    assert sum(r["input_tokens"] for r in got.values()) == prompt and prompt > 0
    assert sum(r["output_tokens"] for r in got.values()) == completion


def test_transactions_and_builds_join_their_components(source, polled):
    """Each transaction and build lands on the component of its vertex in its run (Langflow's own span ids)."""
    local, _ = polled
    rows = local.store.query(
        f"SELECT trace_id, attributes FROM {local.store.table('spans')} FINAL WHERE kind = 'chain'"
    )
    n = expected.counts(source.rec)
    assert sum(int(r["attributes"].get("metadata.skillflaw.transactions", 0)) for r in rows) == n["transactions"]
    assert sum(int(r["attributes"].get("metadata.skillflaw.builds", 0)) for r in rows) == n["builds"]
    assert all("metadata.skillflaw.vertex_id" in r["attributes"] for r in rows)
    assert all(r["trace_id"] in expected.runs(source.rec) for r in rows)  # no synthetic run: every item had its trace


def test_chat_events(source, polled):
    local, _ = polled
    want = expected.chats(source.rec)
    got = {orjson.loads(c["metadata"])["message_id"]: c for c in local.chats()}
    assert set(got) == set(want)
    for mid, w in want.items():
        c, meta = got[mid], orjson.loads(got[mid]["metadata"])
        assert (c["role"], c["content"], c["thread_id"], c["ns"]) == (
            w["role"],
            w["content"],
            w["thread_id"],
            w["ns"] // 10**6 * 10**6,
        )  # events keep ms
        assert meta.get("usage", {}) == w["usage"]
    # the assistant replies of the OpenAI flow carry the usage the fake server answered
    answered = [c for c in source.rec["expected"]["openai_calls"] if c["status"] == 200]
    usages = [w["usage"] for w in want.values() if w["usage"]]
    assert sorted(u["input_tokens"] for u in usages) == sorted(c["prompt_tokens"] for c in answered)
    # each chat event points at the run of its session that held it
    runs = {r["trace_id"] for r in local.runs()}
    linked = {c["run_id"] for c in got.values()}
    span_runs = {s["trace_id"]: s for s in local.spans() if s["kind"] == "agent"}
    assert len(linked) == len(runs) == len(span_runs)


def test_restart_imports_nothing(source, polled):
    local, _ = polled
    spans = local.pipeline.counters["spans"]
    assert local.receiver(source.url, source.key).poll_once() == {"runs": 0, "messages": 0}
    assert local.pipeline.counters["spans"] == spans


def test_wrong_key_names_the_variable(source, tmp_path):
    pipeline = Pipeline({})  # nothing may arrive; chDB allows one data dir per process and `polled` holds it
    settings = SkillFlawSettings(source.url, "not-a-valid-key", state_dir=tmp_path)
    try:
        with pytest.raises(Unauthorized, match=r"answered 40[13].*SKILLFLAW_API_KEY"):
            SkillFlawReceiver(settings, pipeline, ReceiverStats()).poll_once()
        assert pipeline.counters["spans"] == 0
    finally:
        pipeline.shutdown(5)


def test_serve_runs_chats_in_clickhouse_and_observatory(source, tmp_path, observatory_sink):
    env = {"SKILLFLAW_BASE_URL": source.url, "SKILLFLAW_API_KEY": source.key,
           "FLOWX_OBSERVATORY_API_URL": observatory_sink.url, "FLOWX_OBSERVATORY_API_KEY": observatory_sink.api_key}  # fmt: skip
    want = expected.runs(source.rec)
    bridge = start_bridge(tmp_path, env, config=SERVE_CONFIG)
    try:
        with bridge.client() as c:
            total = sum(w["spans"] for w in want.values())
            assert wait_until(lambda: len(c.get("/api/run/", params={"limit": 1000}).json()) >= total, 60)
            rows = c.get("/api/run/", params={"limit": 1000}).json()
            agents = [r for r in rows if r["type"] == "agent"]
            got_ms, want_ms = (
                sorted(a["latency_s"] * 1000 for a in agents),
                sorted(w["latency_ms"] for w in want.values()),
            )
            assert len(got_ms) == len(want_ms) and all(
                0 <= g - w < 1 for g, w in zip(got_ms, want_ms, strict=True)
            )  # Langflow truncates
            llm = [r for r in rows if r["type"] == "llm"]
            assert sum(r["prompt_tokens"] for r in llm) == sum(w["input_tokens"] for w in want.values())
        chats = expected.chats(source.rec)
        assert wait_until(lambda: len([e for e in observatory_sink.events if e["name"] == "chat"]) >= len(chats), 30)
        sent = {e["event_id"]: e for e in observatory_sink.events if e["name"] == "chat"}
        assert set(sent) == set(chats)
        assert all((sent[m]["role"], sent[m]["content"], sent[m]["thread_id"]) == (w["role"], w["content"], w["thread_id"])
                   for m, w in chats.items())  # fmt: skip
    finally:
        log = bridge.stop()
    assert "Traceback" not in log, log
    rows = query_in_subprocess(bridge.data_dir, "SELECT content FROM {events} FINAL WHERE name = 'chat'")
    assert sorted(r["content"] for r in rows) == sorted(w["content"] for w in chats.values())


def test_phoenix_tracer_spans(tmp_path):
    """What Langflow's Arize Phoenix tracer sent (PHOENIX_COLLECTOR_ENDPOINT at an OTLP/HTTP endpoint), recorded
    by record.py: per-component spans, and the model calls with the tokens the fake OpenAI server answered."""
    body = (FIXTURES / "phoenix.traces.pb").read_bytes()
    rec = load("langflow.json")
    spans = agent_spans([FIXTURES / "phoenix.traces.pb"])
    names = {s.span.name for s in spans}
    assert {"Langflow", "Chat Input", "Chat Output", "OpenAI"} <= {n.split(" (")[0] for n in names}
    calls = [s for s in spans if s.kind == "llm" and s.input_tokens is not None]
    prompt, completion = expected.fake_openai_tokens(rec)
    assert (sum(s.input_tokens for s in calls), sum(s.output_tokens for s in calls)) == (prompt, completion)
    bridge = start_bridge(tmp_path, config=SERVE_CONFIG.replace("receivers: [otlp, skillflaw]", "receivers: [otlp]"))
    try:
        with bridge.client() as c:
            r = c.post("/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
            assert r.status_code == 200
            stored = [s for s in spans if s.kind != "other"]
            assert wait_until(lambda: len(c.get("/api/run/", params={"limit": 1000}).json()) >= len(stored), 30)
            every = c.get("/api/run/", params={"limit": 1000}).json()
            rows = [r for r in every if r["type"] == "llm"]
            assert (
                sum(r["prompt_tokens"] for r in rows) == prompt
                and sum(r["completion_tokens"] for r in rows) == completion
            )
            components = [r for r in every if r["type"] == "chain"]
            assert sorted(r["name"] for r in components) == sorted(s.span.name for s in stored if s.kind == "chain")
    finally:
        log = bridge.stop()
    assert "Traceback" not in log, log


def test_edited_message_updates_its_chat_event(source, polled):
    """Runs last: edits a message at the source (the recording's after_edit snapshot, or a PUT on the live server)."""
    local, _ = polled
    before = {orjson.loads(c["metadata"])["message_id"]: c for c in local.chats()}
    source.edit()
    edited = source.rec["expected"]["edited"]
    assert local.receiver(source.url, source.key).poll_once() == {"runs": 0, "messages": 1}
    local.flush()
    after = {orjson.loads(c["metadata"])["message_id"]: c for c in local.chats()}
    assert len(after) == len(before)  # updated, not duplicated
    row = after[edited["id"]]
    assert before[edited["id"]]["content"] == edited["before"] and row["content"] == edited["after"]
    assert row["event_id"] == before[edited["id"]]["event_id"] and orjson.loads(row["metadata"])["revision"] == 1
