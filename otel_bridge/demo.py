"""``otel-bridge demo``: the 30-second tour.

Synthetic agent traffic (several agents, models and tools, some failures, two releases) goes through the real OTel
SDK OTLP/gRPC exporter to a running ``otel-bridge serve`` — one is started for the tour if none serves the data
dir — and the cost, latency and release-diff tables come back from its HTTP API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from rich.console import Console
from rich.progress import Progress

from otel_bridge.client import ServerClient
from otel_bridge.commands import emit
from otel_bridge.synthetic import emit as emit_run
from otel_bridge.synthetic import plan_runs

RELEASES = ("1.4.0", "1.5.0")
HISTORY_NS = 6 * 3600 * 1_000_000_000


def _start_server(config: str | None, data_dir: str | None, console: Console) -> tuple[subprocess.Popen, ServerClient]:
    cmd = [sys.executable, "-m", "otel_bridge.cli", "serve"]
    cmd += ["--config", config] if config else []
    cmd += ["--data-dir", data_dir] if data_dir else []
    console.print("[dim]no otel-bridge server running for this data dir: starting one for the tour[/dim]")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = ServerClient.find(data_dir)
        if found is not None:
            return proc, found
        if proc.poll() is not None:
            raise SystemExit(f"otel-bridge serve exited: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("otel-bridge serve did not come up within 60 s")


def _grpc_endpoint(server: ServerClient) -> str:
    """The gRPC listener sits next to the HTTP one unless configured otherwise (OTEL_BRIDGE_GRPC_ENDPOINT)."""
    host = server.url.split("//", 1)[1].rsplit(":", 1)[0]
    return os.environ.get("OTEL_BRIDGE_GRPC_ENDPOINT") or f"{host}:4317"


def _send(endpoint: str, n: int, console: Console) -> int:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    token = os.environ.get("OTEL_BRIDGE_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else None
    sent_llm = 0
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("sending agent traces over OTLP/gRPC", total=n * len(RELEASES))
        for i, version in enumerate(RELEASES):
            provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": "demo-agents", "service.version": version, "deployment.environment.name": "demo"}
                )
            )
            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers))
            )
            tracer = provider.get_tracer("otel-bridge-demo")
            # The releases roll out one after the other over the past six hours, so the dashboard has a history.
            start = time.time_ns() - (len(RELEASES) - i) * HISTORY_NS // len(RELEASES)
            spacing = HISTORY_NS / len(RELEASES) / max(n, 1) / 1e9
            runs = plan_runs(
                n,
                seed=100 + i,
                error_rate=0.06 + 0.08 * i,
                slow=1.0 + 0.35 * i,
                chat=True,
                start_ns=start,
                spacing_s=spacing,
            )
            for run in runs:
                emit_run(tracer, run)
                sent_llm += len(run.calls)
                progress.advance(task)
            provider.shutdown()
    return sent_llm


def _wait_stored(server: ServerClient, llm_calls: int, timeout: float = 45.0) -> None:
    """Run assembly holds a trace a few seconds, the store batches for one: wait until every call is queryable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = sum(r.get("calls", 0) for r in server.get("/api/costs", {"group_by": "model"}))
        if stored >= llm_calls:
            return
        time.sleep(0.5)


def run_demo(config: str | None = None, data_dir: str | None = None, runs: int = 60) -> int:
    console = Console()
    server, proc = ServerClient.find(data_dir), None
    if server is None:
        proc, server = _start_server(config, data_dir, console)
    try:
        llm_calls = _send(_grpc_endpoint(server), runs, console)
        with console.status("waiting for runs to be assembled and stored"):
            _wait_stored(server, llm_calls)
        emit(
            server.get("/api/costs", {"group_by": "model"}), False, title="cost by model (current prices)", kind="costs"
        )
        emit(
            server.get("/api/latency", {"group_by": "agent", "kind": "agent"}),
            False,
            title="agent run latency",
            kind="latency",
        )
        emit(
            server.get("/api/diff", {"baseline": RELEASES[0], "candidate": RELEASES[1]}),
            False,
            title=f"release diff {RELEASES[0]} -> {RELEASES[1]}",
            kind="diff",
        )
        console.print(f"more: [bold]otel-bridge runs --status error[/bold], the dashboard at [bold]{server.url}/[/bold], "
                      f"the API at [bold]{server.url}/docs[/bold]")  # fmt: skip
    finally:
        server.close()
        if proc is not None:
            proc.send_signal(2)  # SIGINT: the server flushes and releases the data dir
            proc.wait(30)
    return 0
