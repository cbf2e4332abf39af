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

from otel_bridge.analytics.cost import DAY_NS, cost_sql, price_index, price_join, price_parameters, span_pairs
from otel_bridge.analytics.store import Store
from otel_bridge.pricing import PriceTable

SETTINGS = "SETTINGS do_not_merge_across_partitions_select_final = 1"
# key → (expression per span, expression of the grouped value → output). model/provider come from the group id.
_IN_KEY = {
    "agent": ("agent", "key"),
    "service": ("service_name", "key"),
    "release": ("if(release_id != '', release_id, service_version)", "key"),
    "day": ("toDate(start)", "toString(key)"),
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
    """One row per value of ``by`` (model, provider, agent, service, release, day); most expensive first."""
    pairs = span_pairs(store)
    p = params | price_parameters(prices, pairs)  # _grouped_sql adds the parameters it names
    out = store.query(_grouped_sql(store, by, where, p, pairs), p)
    if any(row.pop("unknown") for row in out):  # priced from the pairs in the spans themselves, grouped on names
        p = params | price_parameters(prices, span_pairs(store, scan=True))
        out = store.query(_grouped_sql(store, by, where, p, None), p)
        for row in out:
            row.pop("unknown")
    return out


def _grouped_sql(
    store: Store, by: str, where: list[str], params: dict[str, Any], pairs: list[tuple[str, str]] | None
) -> str:
    """The costs query; grouped on one integer id of (provider, model, bucket), or on the names when ``pairs`` is
    None (the exact fallback)."""
    epochs = sorted({f for fs in params["pf"] for f in fs if f > 0})
    tods = sorted({d for ds in params["pd"] for d in ds if d > 0})
    tiers = sorted({t for ts in params["pt"] for t in ts if t >= 0})  # a tier t holds prompts of more than t tokens
    ns = "toUnixTimestamp64Nano(start)"
    params.update(c_epochs=[0, *epochs], c_tods=[0, *tods], c_tiers=[-1, *tiers])
    n_tod, n_tier = len(tods) + 1, len(tiers) + 1
    bucket = (f"({_count_above('start', '>=', epochs, dt=True)} * {n_tod * n_tier} + {_count_above(f'{ns} % {DAY_NS}', '>=', tods)}"
              f" * {n_tier} + {_count_above('input_tokens', '>', tiers)})")  # fmt: skip
    n_buckets = (len(epochs) + 1) * n_tod * n_tier
    key_in, key_out = _IN_KEY.get(by, ("", by))
    if pairs is None:  # the exact fallback: grouped on the names
        ident, group, ungroup, unknown = "0", "provider, model, bucket", "provider, model, bucket", "0"
    else:  # ids from 1; 0 = a name missing from the lists, counted in `unknown` (then the fallback runs)
        models, providers = sorted({m for _, m in pairs} | {""}), sorted({p for p, _ in pairs} | {""})
        params.update(c_models=models, c_providers=providers)
        n_prov = len(providers) + 1
        ident = f"({_ids('model', models, 'c_models')} * {n_prov} + {_ids('provider', providers, 'c_providers')})"
        ident = f"{ident} * {n_buckets} + bucket"
        group = "g"
        mid, pid = f"intDiv(g, {n_buckets * n_prov})", f"intDiv(g, {n_buckets}) % {n_prov}"
        ungroup = (f"{{c_providers:Array(String)}}[{pid}] AS provider, {{c_models:Array(String)}}[{mid}] AS model, "
                   f"g % {n_buckets} AS bucket")  # fmt: skip
        unknown = f"if({mid} = 0 OR {pid} = 0, n, 0)"
    keyed = "key, " if key_in else ""
    sums = (
        "count() AS n, sum(input_tokens) AS i, sum(cached_input_tokens) AS c, sum(cache_write_tokens) AS w, "
        "sum(output_tokens) AS o, sum(reasoning_tokens) AS r, "
        "sum(greatest(toInt64(input_tokens) - toInt64(cached_input_tokens) - toInt64(cache_write_tokens), 0)) AS ui, "
        "sum(greatest(toInt64(output_tokens) - toInt64(reasoning_tokens), 0)) AS uo"
    )
    tok = ", ".join(_TOKENS)
    return f"""
    SELECT key AS {by}, sum(n) AS calls, sum(i) AS input_tokens, sum(c) AS cached_input_tokens,
        sum(w) AS cache_write_tokens, sum(o) AS output_tokens, sum(r) AS reasoning_tokens,
        sum(group_cost) AS cost, sumIf(n, p_idx = 0) AS unpriced_calls, sum(unknown) AS unknown
    FROM (
        SELECT key, n, {tok}, unknown, {price_index("epoch_ns", "tod_ns", "tier_ns + 1")} AS p_idx,
            {cost_sql("p_idx", "ui", "c", "w", "uo", "r", "n")} AS group_cost
        FROM (
            SELECT {key_out} AS key, provider, model, n, {tok}, unknown,
                {{c_epochs:Array(Int64)}}[intDiv(bucket, {n_tod * n_tier}) + 1] AS epoch_ns,
                {{c_tods:Array(Int64)}}[intDiv(bucket, {n_tier}) % {n_tod} + 1] AS tod_ns,
                {{c_tiers:Array(Int64)}}[bucket % {n_tier} + 1] AS tier_ns
            FROM (
                SELECT {keyed}{ungroup}, n, {tok}, {unknown} AS unknown
                FROM (
                    SELECT {keyed}{group}, {sums}
                    FROM (
                        SELECT {f"{key_in} AS key, " if key_in else ""}provider, model, input_tokens, cached_input_tokens,
                            cache_write_tokens, output_tokens, reasoning_tokens, {bucket} AS bucket, {ident} AS g
                        FROM {store.table("spans")} FINAL WHERE {" AND ".join(where)}
                    )
                    GROUP BY {keyed}{group}
                )
            )
        ) AS s
        {price_join()}
    )
    GROUP BY key ORDER BY cost DESC, key
    {SETTINGS}"""
