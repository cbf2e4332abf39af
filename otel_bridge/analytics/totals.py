"""Run totals: what a run's whole subtree used — tokens by kind, cost, LLM and tool calls, errors.

Observatory's per-event fields keep their meaning (an agent event's own ``cost`` is 0: only LLM events carry cost),
but "what did this run cost" is the first question a user asks. The totals are computed at query time, like cost, with
every descendant priced by the same price join (``analytics.cost``) on the current price table as a single span. For a page of runs
(``attach_totals``) the page's traces are read once and each run's subtree is summed here; when the totals filter or
order the runs, a recursive CTE walks ``parent_span_id`` down from every candidate run inside ClickHouse. Nothing is stored,
so a price edit or a late child span is reflected at once. A run's subtree includes the run itself: an LLM run's
totals are its own call. Only stored spans are walked: a child reached only through an unrecognised (unstored) span
is not in its ancestor's subtree.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from otel_bridge.analytics.cost import PRICE_PARAMS, price_join

# Total column → how it is summed over the subtree (LLM spans carry the billable usage; agents repeat it).
TOTALS = {
    "total_input_tokens": "sumIf(input_tokens, kind = 'llm')",
    "total_cached_input_tokens": "sumIf(cached_input_tokens, kind = 'llm')",
    "total_cache_write_tokens": "sumIf(cache_write_tokens, kind = 'llm')",
    "total_output_tokens": "sumIf(output_tokens, kind = 'llm')",
    "total_reasoning_tokens": "sumIf(reasoning_tokens, kind = 'llm')",
    "total_tokens": "sumIf(input_tokens + output_tokens, kind = 'llm')",
    "total_cost": "sum({cost})",
    "llm_calls": "countIf(kind = 'llm')",
    "tool_calls": "countIf(kind = 'tool')",
    "errors": "countIf(status = 'error')",
}
# Filter → condition on the totals (applied after the subtree is priced).
TOTAL_FILTERS = {
    "min_total_cost": "total_cost >= {min_total_cost:Float64}",
    "max_total_cost": "total_cost <= {max_total_cost:Float64}",
    "min_total_tokens": "total_tokens >= {min_total_tokens:Float64}",
    "max_total_tokens": "total_tokens <= {max_total_tokens:Float64}",
    "min_llm_calls": "llm_calls >= {min_llm_calls:Float64}",
    "min_tool_calls": "tool_calls >= {min_tool_calls:Float64}",
    "min_errors": "errors >= {min_errors:Float64}",
}
TOTAL_ORDERS = {"total_cost": "total_cost", "total_tokens": "total_tokens", "llm_calls": "llm_calls"}
SKEW_NS = 300 * 1_000_000_000  # a child may start this much before its run (clocks of different hosts)
_CARRIED = (
    "kind, provider, model, status, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
    "start_ns"
)


def total_conditions(filters: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The total filters present in ``filters`` → (conditions, params)."""
    conds, params = [], {}
    for key, cond in TOTAL_FILTERS.items():
        if filters.get(key) is not None:
            conds.append(cond)
            params[key] = float(filters[key])
    return conds, params


def subtree_ctes(spans_table: str, seed: str, cost_expr: str) -> str:
    """``sub`` (run → every span below it, itself included) and ``totals`` (one row per run) as CTE text.

    ``seed`` names a relation with ``trace_id, span_id`` and the carried columns (the listed runs). The recursive step
    reads only the traces of the seed, so its cost follows the page, not the table.
    """
    sums = ",\n        ".join(f"{expr.format(cost=cost_expr)} AS {name}" for name, expr in TOTALS.items())
    return f"""sub AS (
        SELECT trace_id, span_id AS root, span_id, {_CARRIED} FROM {seed}
        UNION ALL
        SELECT d.trace_id, sub.root, d.span_id, d.kind, d.provider, d.model, d.status, d.input_tokens, d.cached_input_tokens,
            d.cache_write_tokens, d.output_tokens, d.reasoning_tokens, d.start_ns
        FROM (
            SELECT trace_id, span_id, parent_span_id, {_CARRIED.replace("start_ns", "")}
                toUnixTimestamp64Nano(start) AS start_ns
            FROM {spans_table} FINAL WHERE trace_id IN (SELECT trace_id FROM {seed}) AND parent_span_id != ''
        ) AS d
        INNER JOIN sub ON d.trace_id = sub.trace_id AND d.parent_span_id = sub.span_id
    ),
    totals AS (
        SELECT trace_id AS t_trace, root AS t_root,
        {sums}
        FROM sub {price_join("sub")}
        GROUP BY trace_id, root
    )"""


def attach_totals(store: Any, rows: list[dict[str, Any]], cost_expr: str, params: dict[str, Any]) -> None:
    """Add the totals to a page of run rows (each with ``trace_id``, ``span_id``, ``start_ns``): one read of their
    traces, priced in ClickHouse, the subtrees summed here. Children start no earlier than their run (give or take
    clock skew between services, hence a slack), which prunes the read to the page's time range onwards."""
    if not rows:
        return
    sql = f"""SELECT trace_id, span_id, parent_span_id, kind, status, input_tokens, cached_input_tokens,
        cache_write_tokens, output_tokens, reasoning_tokens, {cost_expr} AS cost
    FROM (
        SELECT trace_id, span_id, parent_span_id, {_CARRIED.replace("start_ns", "")}
            toUnixTimestamp64Nano(start) AS start_ns
        FROM {store.table("spans")} FINAL
        WHERE trace_id IN {{t_traces:Array(String)}} AND start >= fromUnixTimestamp64Nano({{t_from:Int64}}, 'UTC')
    ) AS d
    {price_join("d")}"""
    page = {"t_traces": sorted({r["trace_id"] for r in rows}), "t_from": min(r["start_ns"] for r in rows) - SKEW_NS}
    spans = store.query(sql, {k: params[k] for k in PRICE_PARAMS} | page)
    children: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_id = {}
    for s in spans:
        by_id[(s["trace_id"], s["span_id"])] = s
        if s["parent_span_id"]:
            children[(s["trace_id"], s["parent_span_id"])].append(s)
    for row in rows:
        root = by_id.get((row["trace_id"], row["span_id"]))
        tree, stack = [], [root] if root else []
        while stack:
            node = stack.pop()
            tree.append(node)
            stack.extend(children[(node["trace_id"], node["span_id"])])
        row.update(_sums(tree))


def _sums(tree: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``TOTALS`` of one subtree, in Python (same definitions as the SQL above)."""
    llm = [n for n in tree if n["kind"] == "llm"]
    out: dict[str, Any] = {f"total_{k}": sum(n[k] for n in llm) for k in (
        "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")}  # fmt: skip
    out["total_tokens"] = out["total_input_tokens"] + out["total_output_tokens"]
    out["total_cost"] = sum(n["cost"] for n in tree)
    out["llm_calls"] = len(llm)
    out["tool_calls"] = sum(n["kind"] == "tool" for n in tree)
    out["errors"] = sum(n["status"] == "error" for n in tree)
    return out
