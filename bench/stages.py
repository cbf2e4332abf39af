"""CPU per span of each stage of ``serve``, one stage at a time, against the budget an end-to-end goal leaves.

``bench/otlp.py`` gives the whole service's CPU per span; this takes it apart on the same request mix, in one
process, each stage run alone over every span (process CPU time: chDB's insert threads count too):

- the serving process's share: splitting each request by trace id (``routing.split``), and chDB's insert of the
  rows the workers made (20,000-row batches, as the exporter sends them; background merges not included);
- a worker's: decoding, recognition and message extraction alone, then the whole of its stages through the
  benchmark's own pipeline (decode, recognise, admission, run assembly, redaction, ClickHouse rows), with run
  assembly holding every trace until the end, so intake and conversion are timed apart.

The budget: ``cores ÷ (goal × bare-parse rate)`` µs of CPU per span for the whole service, the load generator
left out. What gRPC, the spool and the pipes between processes cost is not here: ``bench/otlp.py`` has the total.

    .venv/bin/python bench/stages.py [--spans 60000] [--workers 2] [--goal 0.035]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from convert import bare, build_requests, timed  # noqa: E402
from otlp import CONFIG  # noqa: E402

from otel_bridge import memory, routing  # noqa: E402
from otel_bridge.analytics.store import Store, StoreConfig  # noqa: E402
from otel_bridge.config import parse_config  # noqa: E402
from otel_bridge.exporters.clickhouse import ClickHouseSender  # noqa: E402
from otel_bridge.pipeline import build  # noqa: E402
from otel_bridge.receivers.otlp import decode  # noqa: E402
from otel_bridge.semconv import recognise  # noqa: E402
from otel_bridge.spans import spans_from_otlp_proto  # noqa: E402
from otel_bridge.worker import RowShipper, WorkerLedger  # noqa: E402

INSERT_BATCH = 20_000  # exporters.clickhouse.batch.max_batch


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(process CPU seconds, result) of one call, after a full collection so none is charged to it."""
    gc.collect()
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def worker_pipeline(data_dir: str) -> tuple[Any, WorkerLedger, list]:
    """The benchmark's pipeline as a worker builds it, ClickHouse rows collected instead of shipped, and run
    assembly holding every trace until ``force_flush`` (no wait runs out, no bound is reached)."""
    os.environ.update(
        OTEL_BRIDGE_GRPC_ENDPOINT="127.0.0.1:4317", OTEL_BRIDGE_HTTP_ENDPOINT="127.0.0.1:4318",  # parsed, never bound
        OTEL_BRIDGE_DATA_DIR=data_dir, BENCH_WORKERS="1",
    )  # fmt: skip
    cfg = parse_config(CONFIG)
    runs = cfg.processors.runs.model_copy(
        update={"wait": 3600.0, "max_wait": 3600.0, "max_traces": 1 << 30, "max_bytes": 1 << 40}
    )
    cfg = cfg.model_copy(update={"processors": cfg.processors.model_copy(update={"runs": runs})})
    ledger, rows = WorkerLedger(), []
    shipper = RowShipper(lambda message: rows.extend(message[2]), ledger)
    return build(cfg, ledger=ledger, replace={"clickhouse": shipper}), ledger, rows


def alone(requests: list[bytes], workers: int) -> dict[str, float]:
    """CPU seconds of the stages every span passes, each over all of ``requests``."""
    out: dict[str, float] = {}
    out["split"], _ = cpu(lambda: [routing.split("traces", "proto", body, workers) for body in requests])
    out["decode"], decoded = cpu(lambda: [spans_from_otlp_proto(body).items for body in requests])
    out["recognise"], agents = cpu(lambda: [recognise(s) for items in decoded for s in items])
    out["messages"], _ = cpu(lambda: [(a.input_messages, a.output_messages) for a in agents])
    return out


def measure(requests: list[bytes], workers: int, data_dir: str) -> dict[str, float]:
    """CPU seconds of each stage over all of ``requests``, and the rows a worker made of them."""
    out = alone(requests, workers)
    pipeline, ledger, rows = worker_pipeline(data_dir)

    def intake() -> None:
        for body in requests:
            ledger.receive(1)
            pipeline.submit_spans(decode("traces", body, "proto").items, 1)
            ledger.release(1)

    try:
        out["intake"], _ = cpu(intake)
        out["convert"], _ = cpu(lambda: pipeline.force_flush(3600))
    finally:
        pipeline.shutdown(60)
    with Store.open(StoreConfig(data_dir=os.path.join(data_dir, "store"))) as store:
        sender = ClickHouseSender(store)
        out["insert"], _ = cpu(
            lambda: [sender.send(rows[i : i + INSERT_BATCH]) for i in range(0, len(rows), INSERT_BATCH)]
        )
    out["rows"], out["row_bytes"] = len(rows), sum(len(line) for _, line in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=60_000)
    ap.add_argument("--workers", type=int, default=2, help="shares each request is split into")
    ap.add_argument("--goal", type=float, default=0.035, help="end-to-end spans/s as a share of bare parse")
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    requests = build_requests(args.spans)
    memory.tune_collector()  # as serve's processes run
    t_bare, n = timed(bare, requests, 3)
    with tempfile.TemporaryDirectory() as tmp:
        s = measure(requests, args.workers, tmp)
    us = {k: v * 1e6 / n for k, v in s.items() if k not in ("rows", "row_bytes")}
    budget = args.cores * t_bare * 1e6 / n / args.goal
    print(f"spans: {n} in {len(requests)} requests; bare parse {n / t_bare:,.0f} spans/s")
    print(f"budget at {args.goal} of bare parse on {args.cores} cores: {budget:.0f} us of CPU per span, whole service")
    rest = us["intake"] + us["convert"] - us["decode"] - us["recognise"] - us["messages"]
    for label, value in (
        ("serving: split by trace id", us["split"]),
        ("worker: decode", us["decode"]),
        ("worker: recognise", us["recognise"]),
        ("worker: message extraction", us["messages"]),
        ("worker: the rest (assembly, redaction, rows)", rest),
        (f"serving: chDB insert ({s['rows']:.0f} rows, {s['row_bytes'] / n:.0f} B/span)", us["insert"]),
    ):
        print(f"  {label:58s} {value:7.1f} us  {value / budget:6.1%} of budget")
    whole = us["split"] + us["intake"] + us["convert"] + us["insert"]
    print(f"  {'worker stages as run (intake / conversion)':58s} {us['intake']:7.1f} / {us['convert']:.1f} us")
    print(f"  {'sum':58s} {whole:7.1f} us  {whole / budget:6.1%} of budget")


if __name__ == "__main__":
    main()
