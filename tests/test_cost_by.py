"""``costs`` groups on one integer id of (provider, model, bucket) taken from the stored pairs; when a span's name is
missing from those pairs the answer must still be exact (the query falls back to grouping on the names)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from ch_data import BASE_NS, Dataset, bridge, llm_attrs, make_dataset

from otel_bridge.agentspan import AgentSpan
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


def _expected(spans: list[AgentSpan], prices: PriceTable, by: str) -> dict:
    """calls, input tokens and cost per model or provider, in plain Python over finished LLM spans."""
    want: dict = defaultdict(lambda: [0, 0, 0.0])
    for a in spans:
        if a.kind == "llm":
            w = want[getattr(a, by) or ""]
            w[0] += 1
            w[1] += a.input_tokens
            w[2] += prices.cost(a)
    return want


def _check(store: Store, prices: PriceTable, spans: list[AgentSpan]) -> None:
    for by in ("model", "provider"):
        got = {r[by]: r for r in q.costs(store, prices, by=by)}
        want = _expected(spans, prices, by)
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
