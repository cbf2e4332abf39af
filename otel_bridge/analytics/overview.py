"""What the dashboard draws beyond the API's queries: time series, a run's tree and messages, pick-lists.

Cost goes through the same price join as every other query (``analytics.cost``), so
the dashboard, the CLI and the API agree to the last digit.
"""

from __future__ import annotations

import time
from typing import Any

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.cost import SPAN_COST, price_join, price_parameters, span_pairs
from otel_bridge.analytics.store import Store
from otel_bridge.pricing import PriceTable

# Bucket widths (s) a chart may use; the first that gives at most ~60 bars wins.
_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "all": 0}


def window(range_key: str, now: float | None = None) -> tuple[int | None, int]:
    """(from, to) in ns for a range key; ``all`` has no lower bound."""
    if range_key not in RANGES:
        raise ValueError(f"range: must be one of {', '.join(RANGES)}")
    now_ns = int((now or time.time()) * 1e9)
    seconds = RANGES[range_key]
    return (now_ns - seconds * 1_000_000_000 if seconds else None), now_ns


def step_for(from_ns: int, to_ns: int) -> int:
    span = max(1, (to_ns - from_ns) // 1_000_000_000)
    return next((s for s in _STEPS if span / s <= 60), _STEPS[-1])


def _first_start(store: Store) -> int | None:
    rows = store.client.query(
        f"SELECT toUnixTimestamp64Nano(min(start)), count() FROM {store.table('spans')}"
    ).result_rows
    return rows[0][0] if rows and rows[0][1] else None


def over_time(store: Store, prices: PriceTable, from_ns: int | None, to_ns: int) -> dict[str, Any]:
    """Per bucket: cost and tokens by model (LLM calls), and the error rate of LLM calls and agent runs."""
    from_ns = from_ns if from_ns is not None else (_first_start(store) or to_ns - 3600 * 10**9)
    step = step_for(from_ns, to_ns)
    where, params = ["status != 'started'"], {}
    q._window(where, params, from_ns, to_ns)
    params |= price_parameters(prices, span_pairs(store)) | {"step": step}
    bucket = "toUnixTimestamp(toStartOfInterval(start, toIntervalSecond({step:UInt32})))"
    cost_sql = f"""
    SELECT {bucket} AS t, model, count() AS calls, sum({SPAN_COST}) AS cost, sum(input_tokens) AS input,
        sum(cached_input_tokens) AS cached, sum(output_tokens) AS output
    FROM (
        SELECT start, provider, model, kind, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
            reasoning_tokens, toUnixTimestamp64Nano(start) AS start_ns
        FROM {store.table("spans")} FINAL WHERE kind = 'llm' AND {" AND ".join(where)}
    ) AS s
    {price_join("s")}
    GROUP BY t, model ORDER BY t, model
    {q.SETTINGS}"""
    err_sql = f"""
    SELECT {bucket} AS t, countIf(kind = 'llm') AS llm_calls, countIf(kind = 'llm' AND status = 'error') AS llm_errors,
        countIf(kind = 'agent') AS agent_runs, countIf(kind = 'agent' AND status = 'error') AS agent_errors
    FROM {store.table("spans")} FINAL WHERE {" AND ".join(where)} GROUP BY t ORDER BY t
    {q.SETTINGS}"""
    first = from_ns // 10**9 // step * step
    buckets = list(range(first, to_ns // 10**9 + 1, step))
    return {
        "step": step,
        "buckets": buckets,
        "cost": store.query(cost_sql, params),
        "errors": store.query(err_sql, params),
    }


def pick_lists(store: Store) -> dict[str, list[str]]:
    """Models, agents and releases seen: the choices of the dashboard's filters."""
    t = store.table("spans")
    out = {}
    for key, expr in (("models", "model"), ("agents", "agent"), ("releases", q.RELEASE)):
        rows = store.client.query(f"SELECT DISTINCT {expr} AS v FROM {t} WHERE v != '' ORDER BY v").result_rows
        out[key] = [r[0] for r in rows]
    return out


def release_order(store: Store) -> list[str]:
    """Releases by when they were first seen, so the diff view can default to the two latest."""
    rows = store.client.query(
        f"SELECT {q.RELEASE} AS r, min(start) AS first FROM {store.table('runs')} FINAL WHERE r != '' GROUP BY r ORDER BY first"
    ).result_rows
    return [r[0] for r in rows]


def run_tree(store: Store, prices: PriceTable, run_id: str) -> dict[str, Any] | None:
    """A run, every stored span below it (depth-first, with depth) and its messages and feedback."""
    t = store.table("spans")
    found = store.query(
        f"SELECT trace_id FROM {t} FINAL WHERE run_id = toUUIDOrZero({{r:String}}) LIMIT 1", {"r": run_id}
    )
    if not found:
        return None
    rows = q.runs(store, prices, trace_id=found[0]["trace_id"], limit=10_000, order="start_time")
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        by_parent.setdefault(row["parent_run_id"], []).append(row)
    root = next(r for r in rows if r["run_id"] == run_id)
    spans: list[dict[str, Any]] = []
    stack = [(root, 0)]
    while stack:
        row, depth = stack.pop()
        spans.append(row | {"depth": depth})
        stack.extend((c, depth + 1) for c in reversed(by_parent.get(row["run_id"], [])))
    ids = [s["run_id"] for s in spans]
    # Aliases never reuse a column's name here: ClickHouse would read the alias (a String) in WHERE.
    texts = {r.pop("rid"): r for r in store.query(
        f"SELECT toString(run_id) AS rid, input_text, output_text FROM {t} FINAL WHERE run_id IN {{ids:Array(UUID)}}",
        {"ids": ids})}  # fmt: skip
    for s in spans:
        s.update(texts.get(s["run_id"], {}))
    events = store.query(
        f"""SELECT name, toString(run_id) AS rid, role, content, rating, comment, thread_id,
            toUnixTimestamp64Milli(timestamp) AS ts_ms
        FROM {store.table("events")} FINAL WHERE run_id IN {{ids:Array(UUID)}} ORDER BY timestamp, role DESC""",
        {"ids": ids},
    )
    for e in events:
        e["time"], e["run_id"] = q.iso_ms(e.pop("ts_ms")), e.pop("rid")
    return {"run": root, "spans": spans, "events": events}
