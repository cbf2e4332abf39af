"""Runs/s through the FlightDeck path end to end: finished spans → run assembly → RunEvents → real ``flightdeck serve``.

Spans are recorded first (real SDK, synthetic agents), then submitted as a collector would deliver them; the clock
stops when FlightDeck's ``GET /v1/runs`` lists every run. Baseline in the same run: the same RunEvents posted
straight to FlightDeck by the same sender (what the server itself can ingest).

    .venv/bin/python bench/flightdeck.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from flightdeck_server import running_flightdeck  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from otel_bridge.exporters.batch import BatchExporter  # noqa: E402
from otel_bridge.exporters.flightdeck import FlightDeckSender  # noqa: E402
from otel_bridge.pipeline import Pipeline, PipelineOptions  # noqa: E402
from otel_bridge.processors.flightdeck import FlightDeckMapping  # noqa: E402
from otel_bridge.spans import span_from_sdk  # noqa: E402
from otel_bridge.synthetic import MODELS, emit, plan_runs  # noqa: E402


def record(n: int, release: str, agent: str) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench", "flightdeck.release_id": release}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    models = tuple(m for m in MODELS if m[1] in ("gpt-4o-mini", "gpt-4o"))
    for run in plan_runs(n, seed=11, agents=(agent,), models=models):
        emit(tracer, run)
    return [span_from_sdk(s) for s in memory.get_finished_spans()]


def wait_for(fd, release: str, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(fd.runs(release)) < n:
        if time.monotonic() > deadline:
            raise SystemExit("FlightDeck did not list every run in time")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_flightdeck(Path(tmp) / "ws") as fd:
        release = fd.register_release("bench-agent", "gpt-4o-mini", "1.0.0")
        spans = record(args.runs, release, "bench-agent")
        exporter = BatchExporter(FlightDeckSender(fd.base_url), max_queue=args.runs * 2)
        pipeline = Pipeline({"flightdeck": exporter}, PipelineOptions(wait=0.2, max_wait=1.0, max_traces=args.runs * 2))
        t0 = time.perf_counter()
        for i in range(0, len(spans), 512):
            pipeline.submit_spans(spans[i : i + 512])
        pipeline.force_flush(120)
        wait_for(fd, release, args.runs)
        bridge = time.perf_counter() - t0
        pipeline.shutdown(10)

        baseline_release = fd.register_release("bench-agent", "gpt-4o-mini", "1.0.1")
        events = [e for e in captured_events(spans, baseline_release)]
        sender = FlightDeckSender(fd.base_url)
        t0 = time.perf_counter()
        for i in range(0, len(events), 100):
            sender.send(events[i : i + 100])
        wait_for(fd, baseline_release, args.runs)
        direct = time.perf_counter() - t0
        sender.close()
    print(f"runs: {args.runs} ({len(spans)} spans)")
    print(f"otel-bridge end to end (spans -> runs -> FlightDeck): {args.runs / bridge:8.0f} runs/s ({bridge:.2f} s)")
    print(f"same RunEvents posted directly (server ingest bound): {args.runs / direct:8.0f} runs/s ({direct:.2f} s)")
    print(f"ratio otel-bridge / direct: {direct / bridge:.2f}")


def captured_events(spans: list, release: str) -> list[dict]:
    """The RunEvents otel-bridge makes of these spans, re-targeted at another release, built outside the timing."""
    from otel_bridge.processors.flightdeck import run_events
    from otel_bridge.processors.runs import assemble
    from otel_bridge.semconv import recognise

    by_trace: dict[str, dict] = {}
    for s in spans:
        a = recognise(s)
        by_trace.setdefault(a.trace_id, {})[a.span_id] = a
    mapping = FlightDeckMapping(release_id=release)
    out = []
    for trace in by_trace.values():
        for run in assemble(trace):
            for e in run_events(run, mapping):
                out.append({**e, "release_id": release, "run_id": e["run_id"] + "-direct"})
    return out


if __name__ == "__main__":
    main()
