"""ClickHouse benchmark: exporter ingest vs a bare clickhouse-connect insert, then analytics over 10M spans.

1. The same span rows go into chDB twice: through ``clickhouse_exporter`` (BatchExporter + ClickHouseSender) as
   the conversion hands them over (JSON lines, encoded where the stages run), and through bare ``client.insert``
   calls of the same batch size (the rows' values as tuples, encoded by clickhouse-connect). Goal: exporter ≥
   0.8 × bare.
2. 10M spans over 30 days are generated inside ClickHouse (``INSERT … SELECT … FROM numbers(N)``), plus 1%
   re-sent copies so ``FINAL`` has real duplicates to collapse; then ``costs`` by model and ``latency`` by model
   are timed (median of 3; goal < 500 ms each) in three states of the store:

   - *fresh*: right after the load, every day partition still several parts (what a bulk import looks like);
   - *settled*: after ClickHouse's own background merges made each quiet day partition one part (schema v4:
     ``min_age_to_force_merge_seconds``, 15 min in production; ``--settle-seconds`` shortens it for the bench);
   - *live day*: settled, then a replay re-sends 1% of today's spans, so today's partition is several parts again
     and ``FINAL`` merges it at query time (the steady state of a store taking traffic).

   Next to each, the same aggregation without ``FINAL`` shows what dedup costs. Load average and the process's CPU
   time per query are printed: the machine may be shared.

Run: ``.venv/bin/python bench/clickhouse.py [--spans 10000000] [--ingest 200000] [--data-dir DIR] [--skip-ingest]``.
``--data-dir`` keeps the store (a store that already holds spans is reused as it is, not generated again).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otel_bridge.analytics import queries as q  # noqa: E402
from otel_bridge.analytics.schema import SPAN_COLUMNS  # noqa: E402
from otel_bridge.analytics.store import Store, StoreConfig  # noqa: E402
from otel_bridge.exporters.clickhouse import clickhouse_exporter, span_row  # noqa: E402
from otel_bridge.exporters.rows import encode_row, row_values  # noqa: E402
from otel_bridge.pricing import PriceTable  # noqa: E402
from otel_bridge.semconv import recognise  # noqa: E402
from otel_bridge.spans import BridgeSpan  # noqa: E402

MODELS = (
    "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "gpt-5",
    "claude-sonnet-4-5-20250929", "claude-haiku-4-5", "gemini-2.5-flash", "mistral-large-latest", "mystery-model",
)  # fmt: skip
BATCH = 10_000


def make_rows(n: int, base_ns: int) -> list[tuple]:
    """``n`` span rows built the production way: BridgeSpan → recognise → span_row."""
    rows = []
    for i in range(n):
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.response.model": MODELS[i % len(MODELS)],
            "gen_ai.usage.input_tokens": 1000 + i % 3000,
            "gen_ai.usage.output_tokens": 50 + i % 700,
            "gen_ai.usage.cache_read.input_tokens": i % 500,
            "gen_ai.agent.name": f"agent-{i % 7}",
            "user.email": f"user{i % 50}@example.com",
        }
        start = base_ns + i * 1_000_000
        span = BridgeSpan(f"{i // 4:032x}", f"{i:016x}", None, "chat", 3, start, start + 800_000_000 + i % 7_000_000,
                          1, "", attrs, resource={"service.name": "bench", "service.version": "1.0"})  # fmt: skip
        rows.append(span_row(recognise(span)))
    return rows


def _bare(store: Store, rows: list) -> float:
    rows = [row_values(r) for r in rows]  # span_row gives a SpanRow; a bare insert takes tuples
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        store.client.insert(store.table("spans"), rows[i : i + BATCH], column_names=list(SPAN_COLUMNS))
    return len(rows) / (time.perf_counter() - t0)


def _exporter(store: Store, rows: list) -> tuple[float, float]:
    """Rows/s of the exporter given rows as the conversion hands them over: JSON lines encoded where the stages run
    (a worker under ``service.workers``), so its part is batching, joining them and ClickHouse's parse; and
    rows/s with that encoding counted too (``service.workers: 1``: the stages in the same process)."""
    exporter = clickhouse_exporter(store)
    t0 = time.perf_counter()
    items = [("spans", encode_row(r)) for r in rows]
    t1 = time.perf_counter()
    accepted = exporter.offer_many(items)
    exporter.force_flush(120)
    t2 = time.perf_counter()
    exporter.shutdown(10)
    assert exporter.stats()["sent"] == len(rows), exporter.stats()
    return accepted / (t2 - t1), accepted / (t2 - t0)


def bench_ingest(store: Store, n: int, rounds: int = 3) -> tuple[float, float, float]:
    """Best rows/s of each path over alternating rounds on fresh rows (background merges of the previous round's
    parts compete for the CPU, so whichever path runs second would otherwise be penalised): bare, exporter, and
    exporter with the lines' encoding."""
    base = time.time_ns() - 3600 * 10**9
    bare, exported, encoded = 0.0, 0.0, 0.0
    for r in range(rounds):
        paths = [("bare", _bare), ("exporter", _exporter)]
        for name, fn in paths if r % 2 == 0 else paths[::-1]:
            rate = fn(store, make_rows(n, base + (2 * r + (name == "exporter")) * 10**12))
            if name == "bare":
                bare = max(bare, rate)
            else:
                exported, encoded = max(exported, rate[0]), max(encoded, rate[1])
    return bare, exported, encoded


GENERATE = """
INSERT INTO {spans} ({cols})
SELECT
    lower(hex(intDiv(number, 5))) AS trace_id, lower(hex(number)) AS span_id,
    reinterpretAsUUID(reverse(unhex(lpad(hex(cityHash64(number)), 32, '0')))) AS run_id,
    '', NULL, kind, if(kind = 'llm', 'chat', ''), concat(kind, ' call'),
    'svc-' || toString(number % 3), '1.' || toString(number % 4), 'prod', '', 'agent-' || toString(number % 9), '',
    if(kind = 'llm', {models}[number % {n_models} + 1], ''), if(kind = 'llm', 'openai', ''),
    if(kind = 'llm', 200 + cityHash64(number, 1) % 4000, 0) AS inp, intDiv(inp, 3), 0,
    if(kind = 'llm', 20 + cityHash64(number, 2) % 900, 0), 0,
    fromUnixTimestamp64Nano(toInt64({now_ns} - (number % {span_s}) * 1000000000 - number % 1000000000)) AS start,
    start + toIntervalMillisecond(dur), dur AS duration_ms,
    if(number % 29 = 0, 'error', 'success'), if(number % 29 = 0, 'Timeout', ''), '', 'u' || toString(number % 97),
    '', '', [], map(), '', '', 1
FROM (SELECT number, ['agent', 'llm', 'llm', 'tool', 'llm'][number % 5 + 1] AS kind,
             toFloat64(50 + cityHash64(number, 3) % 9000) AS dur
      FROM numbers({first}, {count}))
"""


def _common(store: Store, days: int, now_ns: int) -> dict:
    models = "[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    return {"spans": store.table("spans"), "cols": ", ".join(f"`{c}`" for c in SPAN_COLUMNS), "models": models,
            "n_models": len(MODELS), "now_ns": now_ns, "span_s": days * 86400}  # fmt: skip


def replay(store: Store, n: int, days: int) -> None:
    """Re-send the 1% copies again, only those in the newest day's partition: a replay into the live day. The rows
    are the generated ones (same ids and start), so the newest start names the generation's ``now``."""
    sql = f"SELECT max(toUnixTimestamp64Nano(start)) FROM {store.table('spans')}"
    now_ns = store.client.query(sql).result_rows[0][0]
    gen = GENERATE.format(first=0, count=n // 100, **_common(store, days, now_ns))
    store.client.command(
        f"{gen.rstrip()} WHERE toDate(start) = toDate(fromUnixTimestamp64Nano(toInt64({now_ns}), 'UTC'))"
    )


def generate(store: Store, n: int, days: int) -> float:
    t0 = time.perf_counter()
    common = _common(store, days, time.time_ns())
    step = 2_000_000
    for first in range(0, n, step):
        store.client.command(GENERATE.format(first=first, count=min(step, n - first), **common))
    # 1% re-sent: the same rows again (same key and version), as a retrying exporter would produce
    store.client.command(GENERATE.format(first=0, count=n // 100, **common))
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float, object]:
    """Median wall and median CPU seconds of this process (chDB runs in it) over ``repeat`` runs, and the answer."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parts(store: Store) -> tuple[int, int]:
    """(active parts, partitions) of the spans table."""
    sql = ("SELECT count(), uniqExact(partition) FROM system.parts WHERE active AND database = {db:String} "
           "AND table = 'spans'")  # fmt: skip
    n, p = store.client.query(sql, parameters={"db": store.database}).result_rows[0]
    return int(n), int(p)


def settle(store: Store, seconds: int, timeout: float) -> float:
    """Let background merges make every partition one part (as schema v4 does after ``seconds`` of quiet); the
    seconds waited. A schema without v4 gets the same wait, and whatever its own merges did by then."""
    if store.schema_version() >= 4:
        store.client.command(
            f"ALTER TABLE {store.table('spans')} MODIFY SETTING min_age_to_force_merge_seconds = {seconds}"
        )
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        n, p = parts(store)
        if n == p:
            break
        time.sleep(5)
    return time.perf_counter() - t0


def measure(store: Store, prices: PriceTable) -> dict[str, tuple[float, float]]:
    spans_t = store.table("spans")
    out = {}
    # the first call after partitions settle also sums them into cost_rollup (schema v5): timed on its own
    out["costs, first call"] = timed(lambda: q.costs(store, prices, by="model"), repeat=1)
    out["costs"] = timed(lambda: q.costs(store, prices, by="model"))
    out["latency"] = timed(lambda: q.latency(store, by="model"))
    out["no FINAL"] = timed(lambda: store.client.query(
        f"SELECT model, sum(input_tokens), quantiles(0.5, 0.9, 0.95, 0.99)(duration_ms) FROM {spans_t} "
        "WHERE kind = 'llm' GROUP BY model").result_rows)  # fmt: skip
    out["runs"] = timed(lambda: q.runs(store, prices, limit=100, model=MODELS[0], min_latency_s=5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--ingest", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--data-dir", help="keep the store here; reused as it is when it already holds spans")
    ap.add_argument("--skip-ingest", action="store_true", help="only the analytics part")
    ap.add_argument("--settle-seconds", type=int, default=30, help="schema v4 quiet time for the bench (prod 900)")
    ap.add_argument("--settle-timeout", type=float, default=420)
    args = ap.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="otel-bridge-bench-"))
    data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
    store = Store.open(StoreConfig(data_dir=str(data_dir)))
    prices = PriceTable.load()
    table = Table(title=f"ClickHouse (chDB) benchmark — {args.spans:,} spans over {args.days} days")
    for col in ("measure", "value", "goal"):
        table.add_column(col)
    try:
        spans_t = store.table("spans")
        if not args.skip_ingest:
            bare, exported, encoded = bench_ingest(store, args.ingest)
            store.client.command(f"TRUNCATE TABLE {spans_t}")
            table.add_row("bare clickhouse-connect insert", f"{bare:,.0f} rows/s", "")
            table.add_row("exporter (BatchExporter + sender)", f"{exported:,.0f} rows/s", "")
            table.add_row("exporter / bare", f"{exported / bare:.2f}", "≥ 0.8")
            table.add_row("  with the lines encoded in-process", f"{encoded:,.0f} rows/s, {encoded / bare:.2f}", "")
        if store.client.query(f"SELECT count() FROM {spans_t}").result_rows[0][0] == 0:
            table.add_row(
                f"generate {args.spans:,} spans + 1% copies", f"{generate(store, args.spans, args.days):.1f} s", ""
            )
        states = [("fresh", parts(store), os.getloadavg()[0], measure(store, prices))]
        waited = settle(store, args.settle_seconds, args.settle_timeout)
        states.append((f"settled ({waited:.0f} s)", parts(store), os.getloadavg()[0], measure(store, prices)))
        replay(store, args.spans, args.days)
        states.append(("live day", parts(store), os.getloadavg()[0], measure(store, prices)))
        for name, (n, p), load, got in states:
            table.add_row(f"[b]{name}[/b]: {n} parts in {p} partitions", f"load {load:.1f}", "")
            for what, (wall, cpu, _) in got.items():
                goal = "< 500 ms" if what in ("costs", "latency") else ""
                table.add_row(f"  {what}", f"{wall * 1000:,.0f} ms (CPU {cpu * 1000:,.0f} ms)", goal)
        costs = states[-1][3]["costs"][2]
        distinct = sum(r["calls"] for r in costs)
        llm_raw = store.client.query(f"SELECT count() FROM {spans_t} WHERE kind = 'llm'").result_rows[0][0]
        table.add_row("llm calls counted / raw llm rows", f"{distinct:,} / {llm_raw:,}", "copies hidden")
        table.add_row("models in latency answer", str(len(states[-1][3]["latency"][2])), str(len(MODELS)))
        console.print(table)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
