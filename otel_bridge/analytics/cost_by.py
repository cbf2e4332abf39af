"""``costs``: cost and tokens of finished LLM calls grouped by a key, priced with the current price table.

Aggregate before pricing: within one (date epoch, time-of-day slot, input tier) bucket of the boundaries of *all*
price rows every model has one price, so spans are summed per (key, provider, model, bucket) and only those few
groups are joined with the price rows. A bucket is named by its lower boundary; the tier bucket ``t`` holds prompts
of more than ``t`` tokens, priced as a prompt of ``t + 1``. The cost formula's clamps apply per span.

Why one integer group key: over millions of spans a ``GROUP BY`` on several LowCardinality strings plus the
computed buckets cost three times the CPU of a single-integer key (bench/clickhouse.py, 10M spans). ``transform``
of a LowCardinality column runs once per dictionary entry, so (provider, model, bucket) becomes one ``UInt64``
cheaply, and the names come back from the id lists afterwards. The id lists are the stored (provider, model) pairs
(``span_pairs``); a span whose provider or model is missing from them (stored between reading the pairs and
the query, or a provider seen only without a model) is counted in ``unknown``, and the query is run again grouped
by the names themselves, so the answer is exact either way.
"""

from __future__ import annotations

from typing import Any

from otel_bridge.analytics import cost_rollup
from otel_bridge.analytics.cost import DAY_NS, cost_sql, price_index, price_join, price_parameters, span_pairs
from otel_bridge.analytics.store import Store
from otel_bridge.pricing import PriceTable

SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"
# key → (expression per span, expression of the grouped value → output). model/provider come from the group id.
_IN_KEY = {
    "agent": ("agent", "k0"),
    "service": ("service_name", "k0"),
    "release": ("if(release_id != '', release_id, service_version)", "k0"),
    "day": ("toDate(start)", "k0"),
}
_TOKENS = ("i", "c", "w", "o", "r", "ui", "uo")


def _count_above(value: str, op: str, bounds: list[int], dt: bool = False) -> str:
    """How many of the sorted ``bounds`` satisfy ``value op b``: the bucket's index (0 = below every bound).
    ``dt``: ``value`` is a DateTime64(9) compared as such (a conversion to ns per span cost more than the compare)."""
    if not bounds:
        return "toUInt64(0)"
    lit = (lambda b: f"fromUnixTimestamp64Nano(toInt64({b}), 'UTC')") if dt else str
    return "(" + " + ".join(f"toUInt64({value} {op} {lit(b)})" for b in bounds) + ")"


def _ids(column: str, names: list[str], param: str) -> str:
    """1-based id of ``column`` in ``names`` (0 when absent); evaluated once per dictionary entry."""
    if not names:
        return "toUInt64(0)"
    return f"transform({column}, {{{param}:Array(String)}}, CAST(range(1, {len(names) + 1}) AS Array(UInt64)), toUInt64(0))"


def costs(store: Store, prices: PriceTable, by: str, where: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per value of ``by`` (model, provider, agent, service, release, day); most expensive first. Settled
    day partitions inside the window are read from their sums (``cost_rollup``), the rest with ``FINAL``."""
    pairs = span_pairs(store)
    p = params | price_parameters(prices, pairs)  # _grouped_sql adds the parameters it names
    layout = _Buckets(p)
    covered, sig = cost_rollup.cover(store, layout.sql, params.get("from_ns"), params.get("to_ns"))
    out = store.query(_grouped_sql(store, by, where, p, pairs, layout, covered, sig), p)
    retry = covered and not cost_rollup.unchanged(store, covered)  # a covered partition got a new part meanwhile
    if retry or any(row["unknown"] for row in out):  # names missing from the pairs: priced from the spans' pairs
        p = params | price_parameters(prices, span_pairs(store, scan=True))
        out = store.query(_grouped_sql(store, by, where, p, None, _Buckets(p), {}, 0), p)
    for row in out:
        row.pop("unknown")
    return out


class _Buckets:
    """The (date epoch, time-of-day slot, input tier) bucket of a span under the boundaries of every price row
    present, as one integer, and the arrays that name each bucket's lower boundaries (added to ``params``)."""

    def __init__(self, params: dict[str, Any]) -> None:
        epochs = sorted({f for fs in params["pf"] for f in fs if f > 0})
        tods = sorted({d for ds in params["pd"] for d in ds if d > 0})
        tiers = sorted({t for ts in params["pt"] for t in ts if t >= 0})  # tier t: prompts of more than t tokens
        params.update(c_epochs=[0, *epochs], c_tods=[0, *tods], c_tiers=[-1, *tiers])
        self.n_tod, self.n_tier = len(tods) + 1, len(tiers) + 1
        self.n = (len(epochs) + 1) * self.n_tod * self.n_tier
        tod = _count_above(f"toUnixTimestamp64Nano(start) % {DAY_NS}", ">=", tods)
        self.sql = (f"({_count_above('start', '>=', epochs, dt=True)} * {self.n_tod * self.n_tier} + {tod}"
                    f" * {self.n_tier} + {_count_above('input_tokens', '>', tiers)})")  # fmt: skip


def _grouped_sql(
    store: Store,
    by: str,
    where: list[str],
    params: dict[str, Any],
    pairs: list[tuple[str, str]] | None,
    b: _Buckets,
    covered: dict[str, str],
    sig: int,
) -> str:
    """The costs query: the spans of the partitions not ``covered`` grouped on one integer id of (provider, model,
    bucket) — or on the names when ``pairs`` is None (the exact fallback) — plus the covered partitions' sums."""
    key_in, key_out = _IN_KEY.get(by, ("", by))
    if pairs is None:
        ident, group, ungroup, unknown = "0", "provider, model, bucket", "provider, model, bucket", "0"
    else:  # ids from 1; 0 = a name missing from the lists, counted in `unknown` (then the fallback runs)
        models, providers = sorted({m for _, m in pairs} | {""}), sorted({p for p, _ in pairs} | {""})
        params.update(c_models=models, c_providers=providers)
        n_prov = len(providers) + 1
        ident = f"({_ids('model', models, 'c_models')} * {n_prov} + {_ids('provider', providers, 'c_providers')})"
        ident = f"{ident} * {b.n} + bucket"
        group = "g"
        mid, pid = f"intDiv(g, {b.n * n_prov})", f"intDiv(g, {b.n}) % {n_prov}"
        ungroup = (f"{{c_providers:Array(String)}}[{pid}] AS provider, {{c_models:Array(String)}}[{mid}] AS model, "
                   f"g % {b.n} AS bucket")  # fmt: skip
        unknown = f"if({mid} = 0 OR {pid} = 0, n, 0)"
    keyed = "k0, " if key_in else ""
    raw_where = " AND ".join(where)
    rollup = ""
    if covered:
        params.update(c_covered=sorted(covered), c_parts=sorted(covered.values()), c_sig=sig)
        params.update(c_pp=[p for p, _ in pairs or ()], c_pm=[m for _, m in pairs or ()])
        raw_where += " AND _partition_id NOT IN {c_covered:Array(String)}"
        rollup = f"UNION ALL {cost_rollup.branch(store, by)}"
    tok = ", ".join(_TOKENS)
    return f"""
    SELECT key AS {by}, sum(n) AS calls, sum(i) AS input_tokens, sum(c) AS cached_input_tokens,
        sum(w) AS cache_write_tokens, sum(o) AS output_tokens, sum(r) AS reasoning_tokens,
        sum(group_cost) AS cost, sumIf(n, p_idx = 0) AS unpriced_calls, sum(unknown) AS unknown
    FROM (
        SELECT key, n, {tok}, unknown, {price_index("epoch_ns", "tod_ns", "tier_ns + 1")} AS p_idx,
            {cost_sql("p_idx", "ui", "c", "w", "uo", "r", "n")} AS group_cost
        FROM (
            SELECT key, provider, model, n, {tok}, unknown,
                {{c_epochs:Array(Int64)}}[intDiv(bucket, {b.n_tod * b.n_tier}) + 1] AS epoch_ns,
                {{c_tods:Array(Int64)}}[intDiv(bucket, {b.n_tier}) % {b.n_tod} + 1] AS tod_ns,
                {{c_tiers:Array(Int64)}}[bucket % {b.n_tier} + 1] AS tier_ns
            FROM (  -- whole integers summed per group before pricing: the same floats whichever way rows came
              SELECT key, provider, model, bucket, sum(n) AS n, {", ".join(f"sum({t}) AS {t}" for t in _TOKENS)},
                sum(unknown) AS unknown
              FROM (
                SELECT toString({key_out}) AS key, {ungroup}, n, {tok}, {unknown} AS unknown
                FROM (
                    SELECT {keyed}{group}, {cost_rollup.SUMS}
                    FROM (
                        SELECT {f"{key_in} AS k0, " if key_in else ""}provider, model, input_tokens, cached_input_tokens,
                            cache_write_tokens, output_tokens, reasoning_tokens, {b.sql} AS bucket, {ident} AS g
                        FROM {store.table("spans")} FINAL WHERE {raw_where}
                    )
                    GROUP BY {keyed}{group}
                )
                {rollup}
              )
              GROUP BY key, provider, model, bucket
            )
        ) AS s
        {price_join()}
    )
    GROUP BY key ORDER BY cost DESC, key
    {SETTINGS}"""
