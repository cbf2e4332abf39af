"""OTLP protobuf → AgentSpan throughput, against the bare ``ExportTraceServiceRequest.FromString`` rate.

Builds requests of ~512 spans from the committed real-instrumentation fixtures (ids rewritten so every trace is
distinct), ≥ 100k spans in all, and times both paths over the same bytes in alternating rounds: the bare parse's
own rate swings by half within minutes on a shared VM, so each round's ratio is taken from a bare pass and a
conversion pass run back to back, and the median of the rounds' ratios is reported.

    .venv/bin/python bench/convert.py [--spans 100000] [--only FIXTURE...] [--profile [N]]

``--profile`` runs the conversion once more under cProfile and prints the N functions with the most own time
(cProfile inflates call-heavy code: read it for where time goes, the ratio above for how much).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otel_bridge import memory  # noqa: E402
from otel_bridge.semconv import recognise  # noqa: E402
from otel_bridge.semconv_tables import CONVERSATION_KEYS, SESSION_KEYS  # noqa: E402
from otel_bridge.spans import spans_from_otlp_proto  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "otlp"


# A copy of a fixture is another conversation: the same conversation re-sent thousands of times with the same
# times would be de-duplicated downstream, which real traffic never is.
_THREAD_KEYS = frozenset({*CONVERSATION_KEYS, *SESSION_KEYS})


def build_requests(total: int, per_request: int = 512, only: list[str] | None = None) -> list[bytes]:
    """Serialized requests of ``per_request`` spans, copied from the fixtures (all, or the ``only`` names) with fresh
    trace ids and, per copy, their own conversation and session ids."""
    paths = sorted(FIXTURES.glob("*.traces.pb"))
    if only:
        paths = [p for p in paths if p.name.removesuffix(".traces.pb") in only]
    templates = [ExportTraceServiceRequest.FromString(p.read_bytes()) for p in paths]
    if not templates:
        raise SystemExit(f"no fixtures in {FIXTURES}")
    out: list[bytes] = []
    made, n = 0, 0
    while made < total:
        req = ExportTraceServiceRequest()
        in_req = 0
        while in_req < per_request:
            template = templates[n % len(templates)]
            n += 1
            for rs in template.resource_spans:
                copy = req.resource_spans.add()
                copy.CopyFrom(rs)
                trace_id = os.urandom(16)
                for ss in copy.scope_spans:
                    for span in ss.spans:
                        span.trace_id = trace_id
                        for kv in span.attributes:
                            if kv.key in _THREAD_KEYS and kv.value.string_value:
                                kv.value.string_value += f"~{n}"
                        in_req += 1
        out.append(req.SerializeToString())
        made += in_req
    return out


def timed(fn, requests: list[bytes], repeat: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = sum(fn(body) for body in requests)
        best = min(best, time.perf_counter() - t0)
    return best, count


def _span(rates: Iterable[float]) -> str:
    """The median and the range of the rounds' rates."""
    rates = sorted(rates)
    return f"{statistics.median(rates):12,.0f} ({rates[0]:,.0f}–{rates[-1]:,.0f})"


def bare(body: bytes) -> int:
    req = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def convert(body: bytes) -> int:
    decoded = spans_from_otlp_proto(body)
    agents = [recognise(s) for s in decoded.items]
    return len(agents)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5, help="alternating bare/conversion rounds")
    ap.add_argument("--only", nargs="+", metavar="FIXTURE", help="fixture names (default: every fixture)")
    ap.add_argument("--profile", nargs="?", type=int, const=25, metavar="N", help="then profile the conversion")
    args = ap.parse_args()
    requests = build_requests(args.spans, only=args.only)
    memory.tune_collector()  # as serve's processes run the conversion: at the default thresholds the collector
    # scans the spans of every request again and again as they are built (16k against 21k spans/s here)
    rounds = []
    for _ in range(args.rounds):
        t_bare, n = timed(bare, requests, 1)
        t_conv, m = timed(convert, requests, 1)
        assert n == m, (n, m)
        rounds.append((n / t_bare, n / t_conv))
    ratios = sorted(conv / bare_rate for bare_rate, conv in rounds)
    print(f"spans: {n} in {len(requests)} requests of ~512 ({sum(map(len, requests)) / 1e6:.1f} MB)")
    print(f"bare ExportTraceServiceRequest.FromString: {_span(r[0] for r in rounds)} spans/s")
    print(
        f"OTLP protobuf -> AgentSpan:               {_span(r[1] for r in rounds)} spans/s  (collector tuned as in serve)"
    )
    print(
        f"ratio (conversion / bare parse), median:   {statistics.median(ratios):.3f}  (goal >= 0.06; rounds "
        + " / ".join(f"{r:.3f}" for r in ratios)
        + ")"
    )
    if args.profile:
        profile(requests, args.profile)


def profile(requests: list[bytes], top: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for body in requests:
        convert(body)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    main()
