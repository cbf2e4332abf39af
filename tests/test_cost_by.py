"""``costs`` groups on one integer id of (provider, model, bucket) taken from the stored pairs; when a span's name is
missing from those pairs the answer must still be exact (the query falls back to grouping on the names)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from ch_data import BASE_NS, Dataset, bridge, iso, llm_attrs, make_dataset

from otel_bridge.agentspan import AgentSpan
from otel_bridge.analytics import cost_rollup
from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, spans_items
from otel_bridge.pricing import PriceTable
from otel_bridge.semconv import recognise_trace


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture
def store(tmp_path):
    s = Store.open(StoreConfig(data_dir=str(tmp_path / "data")))
    yield s
    s.close()


def _key(a: AgentSpan, by: str) -> str:
    if by == "day":
        return datetime.fromtimestamp(a.span.start_ns / 1e9, UTC).date().isoformat()
    return getattr(a, by) or ""


def _expected(spans: list[AgentSpan], prices: PriceTable, by: str, lo: int = 0, hi: int = 2**63) -> dict:
    """calls, input tokens and cost per model, provider, agent or day, in plain Python over finished LLM spans
    starting inside [lo, hi]."""
    want: dict = defaultdict(lambda: [0, 0, 0.0])
    for a in spans:
        if a.kind == "llm" and lo <= a.span.start_ns <= hi:
            w = want[_key(a, by)]
            w[0] += 1
            w[1] += a.input_tokens
            w[2] += prices.cost(a)
    return want


def _check(
    store: Store, prices: PriceTable, spans: list[AgentSpan], keys: tuple = ("model", "provider"), lo: int = 0,
    hi: int = 2**63,
) -> None:  # fmt: skip
    for by in keys:
        window = {"from_": iso(lo), "to": iso(hi)} if hi < 2**63 else {}
        got = {r[by]: r for r in q.costs(store, prices, by=by, **window)}
        want = _expected(spans, prices, by, lo, hi)
        assert set(got) == set(want), by
        for key, (calls, inp, cost) in want.items():
            assert (got[key]["calls"], got[key]["input_tokens"]) == (calls, inp), (by, key)
            assert got[key]["cost"] == pytest.approx(cost, abs=1e-12), (by, key)


def _stored(store: Store, data: Dataset, extra: list) -> list[AgentSpan]:
    spans = list(data.stored) + recognise_trace(extra)
    ClickHouseSender(store).send(spans_items(spans))
    return [a for a in spans if a.kind != "other"]


def test_provider_seen_only_without_a_model_is_counted(store: Store, prices: PriceTable) -> None:
    # an LLM call naming its provider but no model: the stored pairs (model != '') never list that provider
    lonely = bridge(9100, 1, None, "chat", BASE_NS + 3600 * 10**9, 900, llm_attrs("lonely-ai", "", 700, 20))
    spans = _stored(store, make_dataset(n_traces=10, seed=11), [lonely])
    assert any(a.provider == "lonely-ai" and a.kind == "llm" for a in spans)
    _check(store, prices, spans)


def test_model_stored_after_the_pairs_were_read_is_counted(store: Store, prices: PriceTable) -> None:
    spans = _stored(store, make_dataset(n_traces=10, seed=12), [])
    # the pairs a query reads first lack a model that is already in `spans` (as when it is stored in between)
    gone = next(a.model for a in spans if a.kind == "llm" and prices.cost(a) > 0)
    store.client.command(f"TRUNCATE TABLE {store.table('span_models')}")
    store.client.command(
        f"INSERT INTO {store.table('span_models')} SELECT DISTINCT provider, model FROM {store.table('spans')} "
        f"WHERE model NOT IN ('', '{gone}')"
    )
    _check(store, prices, spans)


def _settle(store: Store) -> dict[str, str]:
    """Merge every partition into one part now (what schema v4 has ClickHouse do after 15 quiet minutes)."""
    store.client.command(f"OPTIMIZE TABLE {store.table('spans')} FINAL")
    return cost_rollup.settled(store)


def _summed_parts(store: Store) -> set[str]:
    sql = f"SELECT DISTINCT part FROM {store.table('cost_rollup')} FINAL WHERE marker = 1"
    return {r[0] for r in store.client.query(sql).result_rows}


KEYS = ("model", "provider", "agent", "day")


def test_settled_days_are_read_from_their_sums_and_copies_still_count_once(store: Store, prices: PriceTable) -> None:
    data = make_dataset(n_traces=16, seed=21)
    spans = _stored(store, data, [])
    parts = _settle(store)
    assert len(parts) >= 2  # the data set spans more than one day
    _check(store, prices, spans, KEYS)
    assert set(parts.values()) <= _summed_parts(store)  # those answers came from the sums
    # a replay re-sends every span and one new call lands in a settled day: that day is two parts again, so it is
    # read with FINAL (copies hidden, the new call counted), the other days still from their sums
    late = bridge(9200, 1, None, "chat", BASE_NS + 3600 * 10**9, 700, llm_attrs("openai", "gpt-4o-mini", 900, 40))
    spans += _stored(store, data, [late])[len(data.stored) :]
    assert cost_rollup.settled(store) != parts
    _check(store, prices, spans, KEYS)
    now = _settle(store)  # settled again: new part names, new sums, same answers
    _check(store, prices, spans, KEYS)
    assert _summed_parts(store) == set(now.values())  # the sums of parts merged away are dropped


def test_window_uses_sums_only_for_whole_days(store: Store, prices: PriceTable) -> None:
    spans = _stored(store, make_dataset(n_traces=16, seed=22), [])
    _settle(store)
    day = 86_400 * 10**9
    for lo, hi in ((BASE_NS + day + 3 * 3600 * 10**9, BASE_NS + 3 * day - 1), (BASE_NS + day, BASE_NS + 2 * day - 1)):
        _check(store, prices, spans, ("model", "day"), lo, hi)


def test_new_price_boundaries_get_new_sums(store: Store) -> None:
    spans = _stored(store, make_dataset(n_traces=12, seed=23), [])
    _settle(store)
    plain = PriceTable.load()
    _check(store, plain, spans)
    tiered = PriceTable.from_mapping({"providers": {"openai": {"models": {"gpt-4o-2024-08-06": [
        {"input": 1.0, "output": 2.0}, {"effective_from": iso(BASE_NS + 86_400 * 10**9), "input": 3.0, "output": 5.0}]}}}})  # fmt: skip
    _check(store, tiered, spans)  # an effective date inside the data: the buckets are cut there, and summed again
    sigs = store.client.query(f"SELECT uniqExact(sig) FROM {store.table('cost_rollup')}").result_rows[0][0]
    assert sigs == 2


def test_a_new_part_in_a_covered_day_is_noticed(store: Store) -> None:
    data = make_dataset(n_traces=8, seed=24)
    _stored(store, data, [])
    covered = _settle(store)
    assert cost_rollup.unchanged(store, covered)
    _stored(store, data, [])  # copies arrive: each day they touch is two parts, the sums no longer cover it
    assert not cost_rollup.unchanged(store, covered)


def test_a_part_name_that_comes_back_after_truncate_is_summed_again(tmp_path, prices: PriceTable) -> None:
    config = StoreConfig(data_dir=str(tmp_path / "data"))
    first = Store.open(config)
    _stored(first, make_dataset(n_traces=10, seed=25), [])
    before = _settle(first)
    q.costs(first, prices)
    assert _summed_parts(first) == set(before.values())  # the first parts' sums exist
    first.client.command(f"TRUNCATE TABLE {first.table('spans')}")
    first.close()
    with Store.open(config) as store:  # a restart: block numbers count again from the parts that exist (none)
        spans = _stored(store, make_dataset(n_traces=10, seed=26), [])
        after = _settle(store)
        assert {p.split(":")[0] for p in after.values()} & {p.split(":")[0] for p in before.values()}
        _check(store, prices, spans, KEYS)
