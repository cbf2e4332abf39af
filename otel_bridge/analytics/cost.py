"""The one cost expression of the analytics: price rows as a joined table, the row in force, the USD of usage.

Each query reads the distinct (provider, model) pairs it will price, ``price_parameters`` resolves them in Python
to the rows of the current ``PriceTable`` (overrides, else genai-prices) and ships them as array parameters:
``PRICES_SQL`` is one row per pair holding that model's grid of (effective_from, time-of-day slot, input tier)
rows as parallel arrays. ``price_join`` joins it; ``price_index`` picks the row in force; ``cost_sql`` /
``span_cost`` price a span or a summed usage. Reuse these for any new cost (run totals, subtrees…).
"""

from __future__ import annotations

from collections.abc import Iterable

from clickhouse_connect.driver.exceptions import DatabaseError

from otel_bridge.analytics.store import Store
from otel_bridge.pricing import PriceTable

DAY_NS = 86_400 * 10**9
# One row per (provider, model) seen, with that model's price rows as parallel arrays sorted by (effective_from,
# time-of-day slot, tier) — see pricing/price_library. A LEFT JOIN on (provider, model); no row = unpriced.
PRICE_PARAMS = ("pp", "pm", "pf", "pd", "pt", "pi", "pc", "pw", "po", "pr", "pq")
PRICES_SQL = """(SELECT p.1 AS p_provider, p.2 AS p_model, p.3 AS p_from, p.4 AS p_tod, p.5 AS p_tier, p.6 AS p_in,
        p.7 AS p_cached, p.8 AS p_write, p.9 AS p_out, p.10 AS p_reason, p.11 AS p_req
    FROM (SELECT arrayJoin(arrayZip({pp:Array(String)}, {pm:Array(String)}, {pf:Array(Array(Int64))},
          {pd:Array(Array(Int64))}, {pt:Array(Array(Int64))}, {pi:Array(Array(Float64))}, {pc:Array(Array(Float64))},
          {pw:Array(Array(Float64))}, {po:Array(Array(Float64))}, {pr:Array(Array(Float64))},
          {pq:Array(Array(Float64))})) AS p))"""


def price_join(alias: str = "s", provider: str = "provider", model: str = "model") -> str:
    """``LEFT JOIN`` of the price rows onto ``alias`` (which has provider and model columns)."""
    return f"LEFT JOIN {PRICES_SQL} AS pr ON {alias}.{provider} = pr.p_provider AND {alias}.{model} = pr.p_model"


def price_index(start_ns: str, tod_ns: str, input_tokens: str) -> str:
    """1-based index of the row in force (0 = unpriced): the last whose date, time of day and tier apply."""
    return (
        f"arrayLastIndex((f, d, t) -> f <= {start_ns} AND d <= {tod_ns} AND t < {input_tokens}, p_from, p_tod, p_tier)"
    )


def cost_sql(
    idx: str, uncached: str, cached: str, write: str, plain_out: str, reasoning: str, calls: str = "1", when: str = "1"
) -> str:
    """USD of token counts split into disjoint parts (input ⊇ cache read + write, output ⊇ reasoning, so every
    token is charged exactly once) at price row ``idx``, plus the per-call fee; 0 when unpriced or not ``when``."""
    return f"""if(({when}) AND {idx} > 0,
    ({uncached} * p_in[{idx}] + {cached} * p_cached[{idx}] + {write} * p_write[{idx}]
     + {plain_out} * p_out[{idx}] + {reasoning} * p_reason[{idx}]) / 1e6 + {calls} * p_req[{idx}], 0)"""


def span_cost(
    when: str = "kind = 'llm'", start_ns: str = "start_ns", i: str = "input_tokens", c: str = "cached_input_tokens",
    w: str = "cache_write_tokens", o: str = "output_tokens", r: str = "reasoning_tokens", calls: str = "1",
    tier_input: str | None = None,
) -> str:  # fmt: skip
    """The cost of one span (or one model's usage) from its inclusive token columns, priced at its start and
    tiered on its total input (or ``tier_input``); needs ``price_join`` in the FROM clause. Reuse it for any cost
    over spans."""
    idx = price_index(start_ns, f"{start_ns} % {DAY_NS}", tier_input or f"toInt64({i})")
    uncached = f"greatest(toInt64({i}) - toInt64({c}) - toInt64({w}), 0)"
    plain_out = f"greatest(toInt64({o}) - toInt64({r}), 0)"
    return cost_sql(idx, uncached, c, w, plain_out, r, calls, when)


SPAN_COST = span_cost()


def price_parameters(prices: PriceTable, pairs: Iterable[tuple[str, str]]) -> dict[str, list]:
    """The price rows for the (provider, model) pairs seen, as the array parameters of ``PRICES_SQL``."""
    cols: dict[str, list] = {k: [] for k in PRICE_PARAMS}
    for provider, model, rows in prices.rows_for((p, m) for p, m in pairs if m):
        cols["pp"].append(provider)
        cols["pm"].append(model)
        for key, attr in zip(PRICE_PARAMS[2:], _ROW_ATTRS, strict=True):
            cols[key].append([getattr(row, attr) for row in rows])
    return cols


_ROW_ATTRS = (
    "effective_from_ns", "tod_from_ns", "tier_from", "input", "cached_input", "cache_write", "output", "reasoning",
    "request",
)  # fmt: skip


def span_pairs(store: Store, scan: bool = False) -> list[tuple[str, str]]:
    """Distinct (provider, model) of stored spans, from the small table a materialised view keeps (schema v3)
    instead of a scan of every span; ``scan`` reads the spans themselves (exact at the moment of the read)."""
    scan_sql = f"SELECT DISTINCT provider, model FROM {store.table('spans')} WHERE model != ''"
    try:
        sql = scan_sql if scan else f"SELECT DISTINCT provider, model FROM {store.table('span_models')}"
        rows = store.client.query(sql).result_rows
    except DatabaseError:  # a server whose schema is managed by hand (create_schema: false) and older than v3
        rows = store.client.query(scan_sql).result_rows
    return [(r[0], r[1]) for r in rows]
