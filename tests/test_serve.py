"""``otel-bridge serve`` as a real process: real OTLP clients in, ClickHouse + Observatory sink + real FlightDeck out."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from bridge_server import TEST_CONFIG, start_bridge, wait_until
from conftest import FIXTURES
from flightdeck_server import make_run_event

from otel_bridge.inspect import agent_spans
from otel_bridge.processors.observatory import ObservatoryConverter
from otel_bridge.synthetic import plan_runs

APPS = Path(__file__).parent / "apps"


def _send(transport: str, endpoint: str, runs: int, token: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(APPS / "send_otlp.py"), transport, endpoint, "--runs", str(runs)]
    cmd += ["--token", token] if token else []
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _span_count(runs: int) -> int:
    """What send_otlp.py emits (same seed): each run's agent span, LLM calls and tool calls."""
    return sum(1 + len(r.calls) + len(r.tools) for r in plan_runs(runs, seed=11, agents=("sdk-agent",), error_rate=0.0))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_bridge.cli", *args], capture_output=True, text=True, timeout=60)


def test_real_clients_to_every_destination(tmp_path, observatory_sink, flightdeck_server):
    fd = flightdeck_server
    release = fd.register_release("sdk-agent", "gpt-4o-mini", f"serve-{uuid.uuid4().hex[:6]}")
    env = {
        "FLOWX_OBSERVATORY_API_URL": observatory_sink.url,
        "FLOWX_OBSERVATORY_API_KEY": observatory_sink.api_key,
        "FLIGHTDECK_BASE_URL": fd.base_url,
        "FLIGHTDECK_RELEASE_ID": release,
    }
    bridge = start_bridge(tmp_path, env)
    try:
        assert _send("grpc", bridge.grpc, 3).returncode == 0
        assert _send("http", bridge.http, 2).returncode == 0
        with bridge.client() as c:
            body = (FIXTURES / "openinference.traces.json").read_bytes()
            r = c.post("/v1/traces", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200 and r.json() == {}
            body = gzip.compress((FIXTURES / "openllmetry.traces.pb").read_bytes())
            r = c.post(
                "/v1/traces",
                content=body,
                headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
            )
            assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
            expected_spans = _span_count(3) + _span_count(2) + 14
            stored = wait_until(lambda: len(c.get("/api/run/", params={"limit": 1000}).json()) >= expected_spans)
            rows = c.get("/api/run/", params={"limit": 1000}).json()
            assert stored and len(rows) == expected_spans
            assert {r["agent"] for r in rows} == {"sdk-agent", "support-agent"}
            metrics = c.get("/metrics").text
            assert 'otel_bridge_receiver_items_total{outcome="accepted",receiver="grpc",signal="traces"}' in metrics
            assert 'otel_bridge_exporter_items_total{exporter="clickhouse",outcome="sent"}' in metrics
            rss = [line for line in metrics.splitlines() if line.startswith("otel_bridge_process_peak_rss_bytes{")]
            # service.workers defaults to one per core: the serving process and each worker report their own memory
            processes = {line.split('process="')[1].split('"')[0]: float(line.split()[-1]) for line in rss}
            workers = os.cpu_count() if (os.cpu_count() or 1) > 1 else 0
            assert set(processes) == {"serve", *(f"worker-{i}" for i in range(workers))}
            assert all(peak > 10 * 2**20 for peak in processes.values())
            assert metrics.count("otel_bridge_process_anon_rss_bytes{") == len(processes)
            cpu = [line for line in metrics.splitlines() if line.startswith("otel_bridge_process_cpu_seconds_total{")]
            assert len(cpu) == len(processes) and all(float(line.split()[-1]) > 0 for line in cpu)  # each has worked
            if workers:
                assert f"otel_bridge_workers_alive {float(workers)}" in metrics
                assert "otel_bridge_worker_restarts_total 0.0" in metrics
            assert "otel_bridge_runs_held_bytes " in metrics
        # The synthetic runs (environment local). The fixtures' runs are not counted here: FlightDeck keys runs by
        # run_id across releases, and the session's FlightDeck server may have stored these fixtures already.
        assert wait_until(lambda: len(fd.runs(release, window="3650d")) == 5)
        observatory_sink.wait_for(expected_spans * 2, 30)
        names = [e["name"] for e in observatory_sink.events]
        assert names.count("agent_end") == 3 + 2 + 2
        chats = [e["content"] for e in observatory_sink.events if e["name"] == "chat"]
        assert "hello from the sdk" in chats  # a GenAI log record correlated with its span by trace and span id
    finally:
        log = bridge.stop()
    assert "Traceback" not in log, log


def test_cli_uses_the_server_then_the_store(tmp_path):
    bridge = start_bridge(tmp_path)
    try:
        assert _send("grpc", bridge.grpc, 4).returncode == 0
        with bridge.client() as c:
            wait_until(lambda: len(c.get("/api/run/", params={"limit": 1000}).json()) >= _span_count(4))
        live = _cli("costs", "--data-dir", str(bridge.data_dir), "--json")
        assert live.returncode == 0, live.stderr
    finally:
        bridge.stop()
    offline = _cli("costs", "--data-dir", str(bridge.data_dir), "--json")  # the server released the directory
    assert offline.returncode == 0, offline.stderr
    assert json.loads(live.stdout) == json.loads(offline.stdout)
    assert sum(r["calls"] for r in json.loads(offline.stdout)) == sum(
        len(r.calls) for r in plan_runs(4, seed=11, agents=("sdk-agent",), error_rate=0.0)
    )


def test_trust_boundary(tmp_path):
    open_bind = start_bridge(tmp_path / "open", {"OTEL_BRIDGE_HTTP_ENDPOINT": "0.0.0.0:4999"}, wait=False)
    assert open_bind.proc.wait(60) == 1
    assert "bearer_token" in open_bind.log.read_text()

    token = "s3cret-" + uuid.uuid4().hex
    bridge = start_bridge(tmp_path / "token", {"OTEL_BRIDGE_TOKEN": token})
    try:
        with bridge.client(token=None) as anonymous, bridge.client() as authorized:
            assert anonymous.get("/api/costs").status_code == 401
            assert (
                anonymous.post(
                    "/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"}
                ).status_code
                == 401
            )
            assert authorized.get("/api/costs").status_code == 200
        assert _send("grpc", bridge.grpc, 1, token="wrong").returncode == 1
        assert _send("grpc", bridge.grpc, 1, token=token).returncode == 0
        assert _send("http", bridge.http, 1, token=token).returncode == 0
    finally:
        log = bridge.stop()
    assert token not in log  # never logged


def test_invalid_config_refuses_to_start(tmp_path):
    bad = TEST_CONFIG.replace("runs: {wait: 300ms, max_wait: 2s}", "runs: {wait: soon, max_wait: 2s}")
    bridge = start_bridge(tmp_path, config=bad, wait=False)
    assert bridge.proc.wait(60) == 1
    assert "processors.runs.wait: expected a duration" in bridge.log.read_text()


def test_vendor_ingest(tmp_path):
    bridge = start_bridge(tmp_path)
    try:
        converter = ObservatoryConverter()
        spans = sorted(agent_spans([FIXTURES / "openai_v2_content.traces.pb"]), key=lambda a: a.span.start_ns)
        events = [e for a in spans for e in converter.convert(a)]
        runs = [make_run_event(release_id=rel, agent_id="a", model="gpt-4o-mini", input_tokens=100, output_tokens=20, latency_ms=ms)
                for rel, ms in (("rel_base", 100), ("rel_base", 300), ("rel_cand", 900))]  # fmt: skip
        with bridge.client() as c:
            assert c.post("/api/report", json={"events": events}).status_code == 200
            assert c.post("/v1/events", json={"events": runs}).status_code == 200
            bad = c.post("/v1/events", json={"events": [{**runs[0], "usage": {"model": {"provider": "x"}}}]})
            assert bad.status_code == 400 and "usage.model.model" in bad.json()["detail"]
            assert c.post("/api/report", json={"events": [{"name": "llm_end"}]}).status_code == 400
            assert c.post("/api/report", content=b"{not json").status_code == 400
            huge = c.post("/v1/events", content=b"[" + b" " * (5 << 20) + b"]")  # the test config caps bodies at 4 MiB
            assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
            assert wait_until(lambda: len(c.get("/api/run/", params={"limit": 100}).json()) == len(spans))

            def release_diff() -> dict | None:  # the run rows may land in a later insert than the spans
                rows = {
                    r["metric"]: r
                    for r in c.get("/api/diff", params={"baseline": "rel_base", "candidate": "rel_cand"}).json()
                }
                return rows if rows["runs"]["baseline"] == 2 and rows["runs"]["candidate"] == 1 else None

            diff = wait_until(release_diff)
            assert diff, "the vendor-ingested runs never reached the release diff"
            assert diff["runs"]["baseline"] == 2 and diff["latency_mean_ms"]["candidate"] == 900
    finally:
        bridge.stop()


def test_acknowledged_spans_survive_a_crash(tmp_path):
    """Killed (-9) after acknowledging and before exporting: the next start replays the spool, nothing is lost."""
    slow = TEST_CONFIG.replace("runs: {wait: 300ms, max_wait: 2s}", "runs: {wait: 60s, max_wait: 120s}")
    bridge = start_bridge(tmp_path, config=slow)
    assert _send("grpc", bridge.grpc, 3).returncode == 0  # acknowledged: held for run assembly, not yet stored
    with bridge.client() as c:
        assert c.get("/api/run/").json() == []
    bridge.proc.kill()
    bridge.proc.wait(30)
    spool = bridge.data_dir.with_name("data.spool")
    assert list(spool.glob("seg-*.otlp")), "the accepted requests were written ahead"

    restarted = start_bridge(tmp_path, {"OTEL_BRIDGE_DATA_DIR": str(bridge.data_dir)})
    try:
        with restarted.client() as c:
            rows = wait_until(
                lambda: (
                    len(c.get("/api/run/", params={"limit": 1000}).json()) >= _span_count(3)
                    and c.get("/api/run/", params={"limit": 1000}).json()
                )
            )
            assert rows and len(rows) == _span_count(3)
            assert "spool_replayed" in c.get("/metrics").text
        assert wait_until(lambda: not list(spool.glob("seg-*.otlp")), timeout=20), "exported segments are deleted"
    finally:
        log = restarted.stop()
    assert "replayed" in log


def test_demo_starts_a_server_sends_traffic_and_prints_tables(tmp_path):
    import os

    from bridge_server import free_port

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLOWX_", "FLIGHTDECK_", "OTEL_BRIDGE_"))},
           "OTEL_BRIDGE_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}", "OTEL_BRIDGE_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}"}  # fmt: skip
    data_dir = tmp_path / "data"
    done = subprocess.run([sys.executable, "-m", "otel_bridge.cli", "demo", "--runs", "6", "--data-dir", str(data_dir)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for title in ("cost by model", "agent run latency", "release diff 1.4.0 -> 1.5.0"):
        assert title in done.stdout
    calls = sum(len(r.calls) for seed in (100, 101) for r in plan_runs(6, seed=seed))
    offline = _cli("costs", "--data-dir", str(data_dir), "--json")  # the demo's server stopped and released the dir
    assert offline.returncode == 0 and sum(r["calls"] for r in json.loads(offline.stdout)) == calls
