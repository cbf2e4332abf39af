"""The SkillFlaw receiver on the seed's own example payloads, replayed on loopback: runs, component spans, chat
events, the malformed item, restart, auth and outage. (The Langflow recordings are in test_skillflaw_langflow.py.)"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
import pytest
from bridge_server import start_bridge, wait_until
from skillflaw.harness import (
    ROLE,
    SERVE_CONFIG,
    load,
    local_pipeline,
    ns,
    query_in_subprocess,
    recorded_messages,
    responses,
)
from skillflaw.replay import ReplayServer

from otel_bridge.receivers.skillflaw_client import Unauthorized, Unavailable, parse_timestamp

SEED = load("seed.json")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-12-23 19:10:57.123456 UTC", datetime(2024, 12, 23, 19, 10, 57, 123456, UTC)),
        ("2024-12-23 19:20:11 UTC", datetime(2024, 12, 23, 19, 20, 11, tzinfo=UTC)),
        ("2024-12-23T19:10:58.772766Z", datetime(2024, 12, 23, 19, 10, 58, 772766, UTC)),
        ("2024-12-23T20:05:01.061Z", datetime(2024, 12, 23, 20, 5, 1, 61000, UTC)),
        ("2024-12-23T18:49:06", datetime(2024, 12, 23, 18, 49, 6, tzinfo=UTC)),
        ("2024-12-23 19:10:58+00:00", datetime(2024, 12, 23, 19, 10, 58, tzinfo=UTC)),
        ("2024-12-23T21:10:58.5+02:00", datetime(2024, 12, 23, 19, 10, 58, 500000, UTC)),
    ],
)
def test_timestamps_parse_to_utc(text, expected):
    assert parse_timestamp(text) == expected


def _seed_expectations() -> dict:
    """From the seed's payloads: each build a component (name, duration), each sender-known message a chat event."""
    (_, builds), *_ = responses(SEED, "/api/v1/monitor/builds")
    components = {v: (v.rsplit("-", 1)[0], b[0]["data"]["timedelta"]) for v, b in builds["vertex_builds"].items()}
    chats = {m["id"]: m for m in recorded_messages(SEED).values() if m["sender"] in ROLE}
    malformed = [m for m in recorded_messages(SEED).values() if m["sender"] not in ROLE]
    ((_, tx),) = [r for r in responses(SEED, "/api/v1/monitor/transactions") if r[1]["items"]]
    return {"components": components, "chats": chats, "malformed": len(malformed), "tx": tx["items"]}


def test_seed_in_process(tmp_path):
    exp = _seed_expectations()
    local = local_pipeline(tmp_path)
    try:
        with ReplayServer(SEED) as srv:
            counts = local.receiver(srv.url, "seed-key", tuple(SEED["flows"])).poll_once()
            local.flush()
        assert counts == {"builds": 4, "transactions": 1, "runs": 2, "messages": len(exp["chats"])}
        spans = local.spans()
        comps = {s["name"]: s for s in spans if s["kind"] == "chain"}
        for name, seconds in exp["components"].values():
            assert comps[name]["duration_ms"] == pytest.approx(seconds * 1000, abs=1e-3)
            assert comps[name]["status"] == "success"
        (tx,) = exp["tx"]
        assert comps[tx["vertex_id"]]["status"] == "error"  # the example transaction's error "string"
        roots = {s["agent"]: s for s in spans if s["kind"] == "agent"}
        assert set(roots) == set(SEED["flows"])  # no flow list offered: the agent is named by its flow id
        assert roots[SEED["flows"][1]]["status"] == "error"
        runs = {r["agent"]: r for r in local.runs()}
        assert runs[SEED["flows"][0]]["spans"] == 1 + len(exp["components"]) and runs[SEED["flows"][0]]["success"]
        chats = {orjson.loads(c["metadata"])["message_id"]: c for c in local.chats()}
        assert set(chats) == set(exp["chats"])
        for mid, m in exp["chats"].items():
            c = chats[mid]
            assert (c["role"], c["content"], c["thread_id"], c["ns"]) == (
                ROLE[m["sender"]],
                m["text"],
                m["session_id"],
                ns(m["timestamp"]),
            )
        assert local.stats.snapshot()["skillflaw"]["messages"]["refused"] == exp["malformed"]
    finally:
        local.pipeline.shutdown(5)
        local.store.close()


def test_restart_imports_nothing_twice(tmp_path):
    local = local_pipeline(tmp_path)
    try:
        with ReplayServer(SEED) as srv:
            first = local.receiver(srv.url, "seed-key", tuple(SEED["flows"])).poll_once()
            spans = local.pipeline.counters["spans"]
            again = local.receiver(srv.url, "seed-key", tuple(SEED["flows"]))  # a new process: state from disk
            assert again.poll_once() == {"runs": 0, "messages": 0}
            assert local.pipeline.counters["spans"] == spans and sum(first.values()) > 0
            # the malformed message is counted once, not at every poll
            assert local.stats.snapshot()["skillflaw"]["messages"]["refused"] == 1
    finally:
        local.pipeline.shutdown(5)
        local.store.close()


def test_wrong_key_names_the_variable(tmp_path, caplog):
    local = local_pipeline(tmp_path)
    try:
        with ReplayServer(SEED) as srv:
            receiver = local.receiver(srv.url, "not-the-key", tuple(SEED["flows"]))
            with pytest.raises(Unauthorized, match="SKILLFLAW_API_KEY"):
                receiver.poll_once()
            with caplog.at_level(logging.ERROR, "otel_bridge.receivers.skillflaw"):
                receiver.start()
                assert wait_until(lambda: "SKILLFLAW_API_KEY" in caplog.text, 10)
                receiver.stop()
            assert "not-the-key" not in caplog.text  # the key itself is never logged
            assert local.pipeline.counters["spans"] == 0
    finally:
        local.pipeline.shutdown(5)
        local.store.close()


def test_server_down_backs_off_then_imports(tmp_path, caplog):
    local = local_pipeline(tmp_path)
    try:
        with ReplayServer(SEED) as srv:
            srv.down = True
            receiver = local.receiver(srv.url, "seed-key", tuple(SEED["flows"]))
            with pytest.raises(Unavailable):
                receiver.poll_once()
            with caplog.at_level(logging.WARNING, "otel_bridge.receivers.skillflaw"):
                receiver.start()
                assert wait_until(lambda: "retrying in" in caplog.text, 10)
                srv.down = False
                assert wait_until(lambda: local.pipeline.counters["spans"] > 0, 15)
                receiver.stop()
        assert receiver.counters["poll_errors"] >= 1
    finally:
        local.pipeline.shutdown(5)
        local.store.close()


def test_unreachable_server_no_crash(tmp_path, caplog):
    """Nothing listens on the port at all (connection refused)."""
    local = local_pipeline(tmp_path)
    with ReplayServer(SEED) as srv:
        url = srv.url  # closed on exit: the port is now refused
    try:
        receiver = local.receiver(url, "seed-key", tuple(SEED["flows"]))
        with caplog.at_level(logging.WARNING, "otel_bridge.receivers.skillflaw"):
            receiver.start()
            assert wait_until(lambda: "retrying in" in caplog.text, 10)
            assert receiver._thread.is_alive()
            receiver.stop()
    finally:
        local.pipeline.shutdown(5)
        local.store.close()


def test_serve_polls_the_seed(tmp_path):
    """`otel-bridge serve` with receivers.skillflaw: runs on /api/run/, the malformed item on /metrics, chat events
    in ClickHouse; a restart imports nothing."""
    exp = _seed_expectations()
    with ReplayServer(SEED) as srv:
        env = {
            "SKILLFLAW_BASE_URL": srv.url,
            "SKILLFLAW_API_KEY": "seed-key",
            "SKILLFLAW_FLOWS": ",".join(SEED["flows"]),
        }
        bridge = start_bridge(tmp_path, env, config=SERVE_CONFIG)
        try:
            with bridge.client() as c:
                expected = 2 + len(exp["components"]) + 1  # two runs, the builds' components, the transaction's
                assert wait_until(lambda: len(c.get("/api/run/").json()) >= expected, 30)
                rows = c.get("/api/run/").json()
                assert sorted(r["type"] for r in rows) == ["agent"] * 2 + ["chain"] * (expected - 2)
                metrics = c.get("/metrics").text
                assert (
                    'otel_bridge_receiver_items_total{outcome="refused",receiver="skillflaw",signal="messages"} 1.0'
                    in metrics
                )
        finally:
            log = bridge.stop()
        assert "Traceback" not in log, log
        chats = query_in_subprocess(bridge.data_dir, "SELECT role, content FROM {events} FINAL WHERE name = 'chat'")
        assert sorted((c["role"], c["content"]) for c in chats) == sorted(
            (ROLE[m["sender"]], m["text"]) for m in exp["chats"].values()
        )
        polled = len(srv.requests)
        bridge = start_bridge(tmp_path, env, config=SERVE_CONFIG)
        try:
            assert wait_until(lambda: len(srv.requests) >= polled + 8, 30)  # two more polls of both flows
            time.sleep(0.5)
            with bridge.client() as c:
                assert 'receiver="skillflaw",signal="traces"' not in c.get("/metrics").text  # no span sent again
        finally:
            log = bridge.stop()
        assert "Traceback" not in log, log


def test_secrets_in_messages_are_masked(tmp_path):
    """Polled chat text goes through the pipeline's redaction like any OTLP content."""
    import copy

    rec = copy.deepcopy(SEED)
    secret = "sk-proj-abcdefghijklmnopqrstuvwx"
    for e in rec["exchanges"]:
        if e["request"]["path"] == "/api/v1/monitor/messages" and e["response"]["body"]:
            e["response"]["body"][0]["text"] = f"my key is {secret}, keep it"
    local = local_pipeline(tmp_path)
    try:
        with ReplayServer(rec) as srv:
            local.receiver(srv.url, "seed-key", tuple(SEED["flows"])).poll_once()
            local.flush()
        contents = [c["content"] for c in local.chats()]
        assert any(c.startswith("my key is ") for c in contents) and not any(secret in c for c in contents)
    finally:
        local.pipeline.shutdown(5)
        local.store.close()


def test_items_wait_for_the_trace_of_a_running_flow(tmp_path):
    """Langflow writes a run's trace when the run ends: its transactions, already listed, wait for it (not a
    synthetic run of their own), then join it. The first snapshot is the recording without the last run's trace."""
    import copy

    from otel_bridge.pipeline import Pipeline
    from otel_bridge.receivers.otlp import ReceiverStats
    from otel_bridge.receivers.skillflaw import SkillFlawReceiver, SkillFlawSettings

    rec = load("langflow.json")
    fail_flow = rec["flows"]["openai_fail"]
    ((_, traces),) = [r for r in responses(rec, "/api/v1/monitor/traces") if r[0]["flow_id"] == fail_flow]
    (last,) = traces["traces"]
    running = copy.deepcopy(rec)
    running["exchanges"] = [e for e in running["exchanges"] if not e["request"]["path"].endswith(last["id"])]
    for e in running["exchanges"]:
        if e["request"]["path"] == "/api/v1/monitor/traces" and e["request"]["query"]["flow_id"] == fail_flow:
            e["response"]["body"] = {"traces": [], "total": 0, "pages": 0}
    ((_, tx),) = [r for r in responses(rec, "/api/v1/monitor/transactions") if r[0]["flow_id"] == fail_flow]
    newest = max(ns(t["timestamp"]) for t in tx["items"])
    pipeline = Pipeline({})
    try:
        with ReplayServer({**running, "full": rec["exchanges"]}) as srv:
            settings = SkillFlawSettings(srv.url, rec["api_key"], state_dir=tmp_path)
            receiver = SkillFlawReceiver(settings, pipeline, ReceiverStats(), clock=lambda: newest + 1_000_000_000)
            first = receiver.poll_once()
            srv.switch("full")
            second = receiver.poll_once()
        held = len(tx["items"])
        assert second["runs"] == 1 and second["transactions"] == held
        all_traces = sum(len(r[1]["traces"]) for r in responses(rec, "/api/v1/monitor/traces"))
        assert first["runs"] == all_traces - 1  # no synthetic run for the waiting transactions
        assert first["transactions"] + held == sum(
            len(r[1]["items"]) for r in responses(rec, "/api/v1/monitor/transactions")
        )
    finally:
        pipeline.shutdown(5)


def test_config_section():
    from otel_bridge.config import ConfigError, parse_config

    env = {"SKILLFLAW_BASE_URL": "http://127.0.0.1:7860", "SKILLFLAW_API_KEY": "k1", "SKILLFLAW_FLOWS": "a, b,"}
    text = (
        FIXTURES_CONFIG := "receivers:\n  skillflaw:\n    base_url: ${env:SKILLFLAW_BASE_URL:-}\n"
        "    api_key: ${env:SKILLFLAW_API_KEY:-}\n    flows: ${env:SKILLFLAW_FLOWS:-}\n    poll_interval: 2s\n"
    )
    cfg = parse_config(text, environ=env)
    sf = cfg.receivers.skillflaw
    assert (sf.base_url, sf.api_key_value, sf.flows, sf.poll_interval) == (
        "http://127.0.0.1:7860",
        "k1",
        ["a", "b"],
        2.0,
    )
    assert cfg.skillflaw_enabled() and "k1" not in repr(cfg)
    assert not parse_config(FIXTURES_CONFIG, environ={}).skillflaw_enabled()  # on only when base_url is set
    with pytest.raises(ConfigError) as info:
        parse_config("receivers: {skillflaw: {base_url: 'not a url', poll_interval: 0s}}")
    assert info.value.errors == [
        'receivers.skillflaw.base_url: expected an http(s) url like "http://127.0.0.1:8080", got "not a url"',
        'receivers.skillflaw.poll_interval: expected a duration above zero like "1s", got "0s"',
    ]
