"""Analytics over the ClickHouse tables: Observatory's run filters, cost and latency rollups, release diff.

Cost is never stored: every query prices at query time against the *current* price table (``prices.yaml``
overrides, else genai-prices) through the one cost expression of ``analytics/cost.py``, so each span is priced
with the row in force at its start for its prompt size. Cost follows Observatory: only ``llm`` spans with a row in
force cost anything (an unmatched (provider, model) joins as empty arrays: index 0, cost 0).
Every read uses ``FINAL`` so a re-sent span or run is counted once even before ClickHouse merges parts; ``costs``
reads settled days from their exact per-part sums instead (``analytics.cost_rollup``).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from otel_bridge.analytics import cost_by
from otel_bridge.analytics.cost import (
    SPAN_COST,
    price_join,
    price_parameters,
    span_cost,
    span_pairs,
)  # fmt: skip
from otel_bridge.analytics.store import Store
from otel_bridge.analytics.totals import (
    TOTAL_FILTERS,
    TOTAL_ORDERS,
    TOTALS,
    attach_totals,
    subtree_ctes,
    total_conditions,
)
from otel_bridge.pricing import PriceTable

logger = logging.getLogger(__name__)

# FINAL only merges inside a partition anyway (replacement is per partition), so let partitions merge in parallel.
SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"
RELEASE = "if(release_id != '', release_id, service_version)"
RUN_FILTERS = frozenset(
    ("status", "model", "agent", "min_latency_s", "max_latency_s", "min_cost", "max_cost", "tags", "user_email")
    + ("from", "from_", "to", "trace_id")
) | frozenset(TOTAL_FILTERS)
_ORDERS = {
    "start_time": "start_ns",
    "latency_s": "duration_ms",
    "cost": "cost",
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
} | TOTAL_ORDERS
_RUN_COLUMNS = (
    "run_id, trace_id, parent_run_id, kind, name, agent, model, provider, status, duration_ms, input_tokens, "
    "cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, user_email, tags, start, end"
)
_COST_KEYS = {
    "model": "model",
    "provider": "provider",
    "agent": "agent",
    "service": "service_name",
    "release": RELEASE,
    "day": "toString(toDate(start))",
}
_LATENCY_KEYS = {"model": "model", "agent": "agent", "kind": "kind", "release": RELEASE}


def to_ns(value: str | datetime | int | None) -> int | None:
    """An ISO timestamp (``Z`` or offset; naive = UTC), datetime or ns → ns since epoch."""
    if value is None or isinstance(value, int):
        return value
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def iso_ms(ms: int) -> str:
    """Wire format of DESIGN decision 11: ISO 8601, milliseconds, ``Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _window(where: list[str], params: dict[str, Any], from_: Any, to: Any, col: str = "start") -> None:
    """Inclusive [from, to] on the start time; written on the raw column so the ORDER BY prunes parts."""
    if from_ is not None:
        where.append(f"{col} >= fromUnixTimestamp64Nano({{from_ns:Int64}}, 'UTC')")
        params["from_ns"] = to_ns(from_)
    if to is not None:
        where.append(f"{col} <= fromUnixTimestamp64Nano({{to_ns:Int64}}, 'UTC')")
        params["to_ns"] = to_ns(to)


def _run_where(filters: dict[str, Any]) -> tuple[list[str], list[str], dict[str, Any]]:
    """Observatory's run filters → (conditions before the price join, conditions on cost after it, params)."""
    unknown = set(filters) - RUN_FILTERS
    if unknown:
        raise ValueError(f"unknown run filters: {sorted(unknown)}")
    where, after, params = ["kind IN ('agent', 'llm', 'tool', 'chain', 'retriever', 'embedding')"], [], {}
    for key in ("status", "model", "agent", "user_email", "trace_id"):
        if filters.get(key) is not None:
            where.append(f"{key} = {{{key}:String}}")
            params[key] = str(filters[key])
    if filters.get("status") is not None and filters["status"] not in ("success", "error", "started"):
        raise ValueError("status: must be success, error or started")
    # Bounds: latency filters the stored rows; cost exists only once priced, so it filters after the join.
    for key, condition, target in (
        ("min_latency_s", "duration_ms >= {min_latency_s:Float64} * 1000", where),
        ("max_latency_s", "duration_ms <= {max_latency_s:Float64} * 1000", where),
        ("min_cost", "cost >= {min_cost:Float64}", after),
        ("max_cost", "cost <= {max_cost:Float64}", after),
    ):
        if filters.get(key) is not None:
            target.append(condition)
            params[key] = float(filters[key])
    tags = filters.get("tags")
    if tags:
        where.append("hasAny(tags, {tags:Array(String)})")
        params["tags"] = [tags] if isinstance(tags, str) else [str(t) for t in tags]
    _window(where, params, filters.get("from", filters.get("from_")), filters.get("to"))
    return where, after, params


def runs(
    store: Store, prices: PriceTable, *, limit: int = 100, offset: int = 0, order: str = "-start_time", **filters: Any
) -> list[dict[str, Any]]:
    """Every stored span is a run in Observatory's sense (own run_id); filtered with Observatory's set.

    Each row also carries its subtree's totals (``otel_bridge.analytics.totals``), which filter and order too.
    """
    where, after, params = _run_where(filters)
    totals_where, totals_params = total_conditions(filters)
    after += totals_where
    desc = order.startswith("-")
    key = _ORDERS.get(order.lstrip("-+"))
    if key is None:
        raise ValueError(f"order: must be one of {sorted(_ORDERS)} (prefix - for descending)")
    params |= totals_params | price_parameters(prices, span_pairs(store)) | {"limit": int(limit), "offset": int(offset)}
    sort = f"{key} {'DESC' if desc else 'ASC'}, toString(run_id)"
    page = "LIMIT {limit:UInt64} OFFSET {offset:UInt64}"
    # Without a cost/total filter or order, the page is cut before pricing: only `limit` rows join the prices. Unless
    # the totals filter or order the runs, they are added to the page from one read of its traces (attach_totals);
    # otherwise a recursive walk in ClickHouse computes them for every candidate (slower: see totals.py).
    early = not after and key != "cost" and key not in TOTAL_ORDERS
    walk = bool(totals_where) or key in TOTAL_ORDERS
    spans = store.table("spans")
    select = f"""SELECT toString(run_id) AS run_id, trace_id, toString(parent_run_id) AS parent_run_id, kind AS type,
        name, agent, model, status, duration_ms / 1000 AS latency_s, {SPAN_COST} AS cost, input_tokens AS prompt_tokens,
        output_tokens AS completion_tokens, user_email, tags, start_ms, end_ms"""
    base = f"""SELECT {_RUN_COLUMNS}, span_id, toUnixTimestamp64Nano(start) AS start_ns,
            toUnixTimestamp64Milli(start) AS start_ms, toUnixTimestamp64Milli(end) AS end_ms
        FROM {spans} FINAL WHERE {" AND ".join(where)}"""
    if not walk:
        sql = f"""{select}, span_id, start_ns FROM ({base} {f"ORDER BY {sort} {page}" if early else ""}) AS s
        {price_join()}
        WHERE {" AND ".join(after) or "1"}
        ORDER BY {sort} {"" if early else page} {SETTINGS}"""
        out = store.query(sql, params)
        attach_totals(store, out, SPAN_COST, params)
    else:
        sql = f"""WITH RECURSIVE base AS ({base}),
        {subtree_ctes(spans, "base", SPAN_COST)}
        {select}, span_id, start_ns, {", ".join(TOTALS)}
        FROM base AS s {price_join()}
        LEFT JOIN totals ON s.trace_id = totals.t_trace AND s.span_id = totals.t_root
        WHERE {" AND ".join(after) or "1"}
        ORDER BY {sort} {page}
        {SETTINGS}"""
        out = store.query(sql, params)
    for i, row in enumerate(out):
        times = {"start_time": iso_ms(row.pop("start_ms")), "end_time": iso_ms(row.pop("end_ms"))}
        row["tags"] = list(row["tags"])
        out[i] = {k: v for k, v in row.items() if k not in ("start_ns", "span_id")} | times
    return out


def costs(
    store: Store, prices: PriceTable, by: str = "model", from_: Any = None, to: Any = None
) -> list[dict[str, Any]]:
    """Cost (USD, current prices) and tokens of finished LLM calls, grouped by ``by``; most expensive first."""
    expr = _COST_KEYS.get(by)
    if expr is None:
        raise ValueError(f"by: must be one of {sorted(_COST_KEYS)}")
    where, params = ["kind = 'llm'", "status != 'started'"], {}
    _window(where, params, from_, to)
    return cost_by.costs(store, prices, by, where, params)


def latency(
    store: Store, by: str = "model", from_: Any = None, to: Any = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """Count, error rate and p50/p90/p95/p99 duration (ms) of finished spans, grouped by ``by``."""
    expr = _LATENCY_KEYS.get(by)
    if expr is None:
        raise ValueError(f"by: must be one of {sorted(_LATENCY_KEYS)}")
    where, params = ["status != 'started'"], {}
    if by in ("model", "agent"):
        where.append(f"{expr} != ''")
    if kind:
        where.append("kind = {kind:String}")
        params["kind"] = kind
    _window(where, params, from_, to)
    sql = f"""
    SELECT {expr} AS {by}, count() AS count, countIf(status = 'error') / count() AS error_rate,
        avg(duration_ms) AS mean_ms, quantiles(0.5, 0.9, 0.95, 0.99)(duration_ms) AS q
    FROM {store.table("spans")} FINAL WHERE {" AND ".join(where)}
    GROUP BY {by} ORDER BY count DESC, {by}
    {SETTINGS}"""
    out = store.query(sql, params)
    for row in out:
        q = row.pop("q")
        row.update(p50_ms=q[0], p90_ms=q[1], p95_ms=q[2], p99_ms=q[3])
    return out


def prices_check(store: Store, prices: PriceTable) -> list[dict[str, Any]]:
    """Each (provider, model) seen in spans and what priced it: override, library or unpriced (LLM calls cost 0),
    with span and token counts; unpriced first."""
    sql = f"""
    SELECT model, provider, count() AS spans, countIf(kind = 'llm') AS llm_spans, sum(input_tokens) AS input_tokens,
        sum(output_tokens) AS output_tokens, toUnixTimestamp64Milli(min(start)) AS first_ms,
        toUnixTimestamp64Milli(max(start)) AS last_ms
    FROM {store.table("spans")} FINAL WHERE model != '' GROUP BY model, provider ORDER BY spans DESC, model, provider
    {SETTINGS}"""
    out = []
    for row in store.query(sql):
        priced = prices.resolve(row["model"], row["provider"])
        out.append({
            "model": row["model"], "provider": row["provider"], "source": priced.source if priced else "unpriced",
            "priced_as": f"{priced.provider}/{priced.model}" if priced else "", "spans": row["spans"],
            "llm_spans": row["llm_spans"], "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
            "first_seen": iso_ms(row["first_ms"]), "last_seen": iso_ms(row["last_ms"]),
        })  # fmt: skip
    order = {"unpriced": 0, "override": 1, "library": 2}
    return sorted(out, key=lambda r: order[r["source"]])


def _release_stats(store: Store, prices: PriceTable, releases: list[str]) -> dict[str, dict[str, Any]]:
    runs_t = store.table("runs")
    pairs_sql = f"SELECT DISTINCT arrayJoin(arrayZip(usage.provider, usage.model)) FROM {runs_t}"
    pairs = [tuple(r[0]) for r in store.client.query(pairs_sql).result_rows]
    params = price_parameters(prices, pairs) | {"releases": releases}
    # A run's usage is summed per model, so the tier is judged on the mean prompt of its calls.
    usage_cost = span_cost(
        "1",
        i="u_in",
        c="u_cached",
        w="u_write",
        o="u_out",
        r="u_reason",
        calls="u_calls",
        tier_input="intDiv(toInt64(u_in), greatest(toInt64(u_calls), 1))",
    )
    sql = f"""
    SELECT release, count() AS n, avg(cost) AS cost_mean, stddevSamp(cost) AS cost_sd,
        avg(tokens) AS tokens_mean, stddevSamp(tokens) AS tokens_sd,
        avg(latency_ms) AS lat_mean, stddevSamp(latency_ms) AS lat_sd,
        quantileExact(0.5)(latency_ms) AS p50, quantileExact(0.95)(latency_ms) AS p95,
        countIf(NOT success) AS errors
    FROM (
        SELECT run_id, any(release) AS release, any(latency_ms) AS latency_ms, any(success) AS success,
            any(tokens) AS tokens, sum({usage_cost}) AS cost
        FROM (
            SELECT run_id, {RELEASE} AS release, latency_ms, success, input_tokens + output_tokens AS tokens,
                toUnixTimestamp64Nano(start) AS start_ns, u_provider, u_model, u_calls, u_in, u_cached, u_write,
                u_out, u_reason
            FROM {runs_t} FINAL
            LEFT ARRAY JOIN usage.provider AS u_provider, usage.model AS u_model, usage.calls AS u_calls,
                usage.input AS u_in, usage.cached AS u_cached, usage.cache_write AS u_write, usage.output AS u_out,
                usage.reasoning AS u_reason
            WHERE {RELEASE} IN {{releases:Array(String)}}
        ) AS r
        {price_join("r", "u_provider", "u_model")}
        GROUP BY run_id
    ) GROUP BY release
    {SETTINGS}"""
    return {row["release"]: row for row in store.query(sql, params)}


def _confidence_mean(b: dict, c: dict, mean: str, sd: str) -> float | None:
    """1 − p of a two-sided Welch test (normal approximation) on the difference of means."""
    nb, nc = b["n"], c["n"]
    if nb < 2 or nc < 2:
        return None
    se = math.sqrt(_num(b[sd]) ** 2 / nb + _num(c[sd]) ** 2 / nc)
    delta = c[mean] - b[mean]
    if se == 0:
        return 1.0 if delta else 0.0
    return 1 - math.erfc(abs(delta) / se / math.sqrt(2))


def _confidence_rate(b: dict, c: dict) -> float | None:
    """1 − p of a pooled two-proportion z-test on the error rates."""
    nb, nc = b["n"], c["n"]
    if not nb or not nc:
        return None
    pooled = (b["errors"] + c["errors"]) / (nb + nc)
    se = math.sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nc))
    delta = c["errors"] / nc - b["errors"] / nb
    if se == 0:
        return 0.0
    return 1 - math.erfc(abs(delta) / se / math.sqrt(2))


def _num(x: Any) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def diff(store: Store, prices: PriceTable, baseline: str, candidate: str) -> list[dict[str, Any]]:
    """Baseline vs candidate release (release_id, else service.version) over assembled runs, one row per metric.

    ``confidence`` = 1 − p-value: Welch's test for means (cost, tokens, latency), a two-proportion z-test for the
    error rate; None where a test needs ≥ 2 runs a side or has none (run count, percentiles). With fewer than 30
    runs a side the normal approximation is rough: ``samples`` says "low".
    """
    stats = _release_stats(store, prices, [baseline, candidate])
    empty = {"n": 0, "errors": 0}
    b, c = stats.get(baseline, empty), stats.get(candidate, empty)
    samples = "low" if min(b["n"], c["n"]) < 30 else "ok"
    metrics: list[tuple[str, str | None, Any]] = [
        ("runs", "n", None),
        ("cost_per_run", "cost_mean", lambda: _confidence_mean(b, c, "cost_mean", "cost_sd")),
        ("tokens_per_run", "tokens_mean", lambda: _confidence_mean(b, c, "tokens_mean", "tokens_sd")),
        ("latency_mean_ms", "lat_mean", lambda: _confidence_mean(b, c, "lat_mean", "lat_sd")),
        ("latency_p50_ms", "p50", None),
        ("latency_p95_ms", "p95", None),
        ("error_rate", None, lambda: _confidence_rate(b, c)),
    ]
    out = []
    for name, key, conf in metrics:
        if key is None:
            bv = b["errors"] / b["n"] if b["n"] else None
            cv = c["errors"] / c["n"] if c["n"] else None
        else:
            bv, cv = b.get(key), c.get(key)
        delta = cv - bv if bv is not None and cv is not None else None
        pct = delta / bv * 100 if delta is not None and bv else None
        ready = b["n"] and c["n"]
        out.append(
            {
                "metric": name,
                "baseline": bv,
                "candidate": cv,
                "delta": delta,
                "delta_pct": pct,
                "confidence": conf() if conf and ready else None,
                "samples": samples,
            }
        )
    return out
