"""``otel-bridge serve`` as a real subprocess on free loopback ports, for the service tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

TEST_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "${env:OTEL_BRIDGE_GRPC_ENDPOINT}"}
      http: {endpoint: "${env:OTEL_BRIDGE_HTTP_ENDPOINT}", max_request_body_size: 4MiB}
    auth: {bearer_token: "${env:OTEL_BRIDGE_TOKEN:-}"}
processors:
  runs: {wait: 300ms, max_wait: 2s}
  flightdeck: {release_id: "${env:FLIGHTDECK_RELEASE_ID:-}", tenant_id: tenant_test, task_id: task_test}
  observatory: {}
  redact: {}
exporters:
  clickhouse: {data_dir: "${env:OTEL_BRIDGE_DATA_DIR}", batch: {interval: 200ms}}
  observatory: {url: "${env:FLOWX_OBSERVATORY_API_URL:-}", api_key: "${env:FLOWX_OBSERVATORY_API_KEY:-}", batch: {interval: 100ms}}
  flightdeck: {url: "${env:FLIGHTDECK_BASE_URL:-}", batch: {interval: 100ms}, dead_letter: ""}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [runs, observatory, flightdeck, redact], exporters: [clickhouse, observatory, flightdeck]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Bridge:
    proc: subprocess.Popen
    http: str  # host:port
    grpc: str
    data_dir: Path
    token: str | None
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    def client(self, token: str | None = "default") -> httpx.Client:
        token = self.token if token == "default" else token
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {token}"} if token else {}, timeout=30
        )

    def stop(self, timeout: float = 30) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


def start_bridge(
    tmp: Path, env: dict[str, str] | None = None, *, config: str = TEST_CONFIG, wait: bool = True
) -> Bridge:
    tmp.mkdir(parents=True, exist_ok=True)
    http, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    data_dir = tmp / "data"
    cfg = tmp / "bridge.yaml"
    cfg.write_text(config)
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FLOWX_", "FLIGHTDECK_", "OTEL_BRIDGE_"))},
        "OTEL_BRIDGE_HTTP_ENDPOINT": http,
        "OTEL_BRIDGE_GRPC_ENDPOINT": grpc,
        "OTEL_BRIDGE_DATA_DIR": str(data_dir),
        **(env or {}),
    }
    log = tmp / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_bridge.cli", "serve", "--config", str(cfg)],
        env=full_env, cwd=tmp, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    bridge = Bridge(
        proc,
        full_env["OTEL_BRIDGE_HTTP_ENDPOINT"],
        full_env["OTEL_BRIDGE_GRPC_ENDPOINT"],
        data_dir,
        full_env.get("OTEL_BRIDGE_TOKEN"),
        log,
    )
    if wait:
        _wait_ready(bridge)
    return bridge


def _wait_ready(bridge: Bridge, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with bridge.client() as c:
        while time.monotonic() < deadline:
            if bridge.proc.poll() is not None:
                raise AssertionError(f"otel-bridge serve exited {bridge.proc.returncode}:\n{bridge.log.read_text()}")
            try:
                if c.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    bridge.stop()
    raise AssertionError(f"otel-bridge serve did not answer within {timeout}s:\n{bridge.log.read_text()}")


def wait_until(predicate, timeout: float = 30, interval: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
