"""Analytics on the real engine (chDB through clickhouse-connect) against a generated data set with known figures."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pytest
from ch_data import BASE_NS, EMAILS, MODELS, Dataset, bridge, expected_runs, iso, llm_attrs, make_dataset

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, run_row, span_row, spans_items
from otel_bridge.pricing import PriceTable
from otel_bridge.semconv import recognise_trace

DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data: Dataset):
    s = Store.open(StoreConfig(data_dir=str(tmp_path_factory.mktemp("chq") / "data")))
    ClickHouseSender(s).send(spans_items(data.spans) + [("runs", run_row(r)) for r in data.runs])
    yield s
    s.close()


def _ids(rows: list[dict]) -> set[str]:
    return {r["run_id"] for r in rows}


def _by_id(data: Dataset) -> dict:
    return {a.run_id: a for a in data.stored}


FILTERS = [
    {},
    {"status": "error"},
    {"status": "success"},
    {"status": "started"},
    {"model": "gpt-4o-2024-08-06"},
    {"model": "gpt-4o"},  # exact match only: the family name matches nothing
    {"agent": "triage"},
    {"min_latency_s": 4.0},
    {"max_latency_s": 1.0},
    {"min_latency_s": 1.0, "max_latency_s": 5.0},
    {"min_cost": 0.004},
    {"max_cost": 0.0},
    {"min_cost": 0.001, "max_cost": 0.01},
    {"tags": ["high-risk"]},
    {"tags": ["beta", "eu"]},
    {"user_email": EMAILS[1]},
    {"agent": "writer", "status": "error"},
    {"agent": "claims-approval", "model": MODELS[2][1], "min_cost": 0.002},
    {"tags": ["internal"], "user_email": EMAILS[0], "max_latency_s": 3.0},
    {"status": "success", "tags": ["eu", "beta"], "min_latency_s": 0.5, "max_cost": 0.02, "agent": "triage"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_run_filters(store: Store, prices: PriceTable, data: Dataset, filters: dict) -> None:
    got = q.runs(store, prices, limit=10_000, **filters)
    want = expected_runs(data.spans, prices, **filters)
    assert _ids(got) == want
    assert len(got) == len(want)
    if filters in ({}, {"tags": ["high-risk"]}):
        assert want  # the data set exercises the filter


def test_time_window_is_inclusive(store: Store, prices: PriceTable, data: Dataset) -> None:
    roots = sorted((a for a in data.stored if a.kind == "agent"), key=lambda a: a.span.start_ns)
    lo, hi = roots[5].span.start_ns, roots[20].span.start_ns  # whole seconds: exact in ISO with ms
    f = {"from": iso(lo), "to": iso(hi)}
    got = _ids(q.runs(store, prices, limit=10_000, **f))
    assert roots[5].run_id in got and roots[20].run_id in got and roots[21].run_id not in got
    assert got == expected_runs(data.spans, prices, **f)
    both = {"from": iso(lo), "to": iso(hi), "agent": "triage", "status": "success"}
    assert _ids(q.runs(store, prices, limit=10_000, **both)) == expected_runs(data.spans, prices, **both)


def test_run_rows_carry_observatory_fields(store: Store, prices: PriceTable, data: Dataset) -> None:
    by_id = _by_id(data)
    rows = q.runs(store, prices, limit=10_000, model=MODELS[0][1])
    assert rows
    for row in rows:
        a = by_id[row["run_id"]]
        assert row["type"] == "llm" and row["trace_id"] == a.trace_id
        assert row["parent_run_id"] == by_id[row["parent_run_id"]].run_id  # the agent span's own run id
        assert row["agent"] == a.agent and row["user_email"] == a.user_email and row["tags"] == a.tags
        assert row["cost"] == pytest.approx(prices.cost(a), abs=1e-12)
        assert row["latency_s"] == pytest.approx(a.latency_ms / 1000)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (a.input_tokens, a.output_tokens)
        assert row["start_time"] == iso(a.span.start_ns) and row["end_time"].endswith("Z")
    assert all(r["type"] != "other" for r in q.runs(store, prices, limit=10_000))


def test_order_limit_offset(store: Store, prices: PriceTable, data: Dataset) -> None:
    costs = sorted((prices.cost(a) for a in data.stored), reverse=True)
    top = q.runs(store, prices, limit=5, order="-cost")
    assert [r["cost"] for r in top] == pytest.approx(costs[:5])
    page = q.runs(store, prices, limit=5, offset=5, order="-cost")
    assert [r["cost"] for r in page] == pytest.approx(costs[5:10])
    oldest = q.runs(store, prices, limit=1, order="start_time")[0]
    assert oldest["start_time"] == iso(min(a.span.start_ns for a in data.stored))
    with pytest.raises(ValueError, match="order"):
        q.runs(store, prices, order="-nonsense")
    with pytest.raises(ValueError, match="unknown run filters"):
        q.runs(store, prices, colour="red")


def test_costs_by_model_and_day(store: Store, prices: PriceTable, data: Dataset) -> None:
    want: dict = defaultdict(lambda: [0, 0, 0, 0.0])
    for a in data.stored:
        if a.kind == "llm":
            w = want[a.model]
            w[0] += 1
            w[1] += a.input_tokens
            w[2] += a.cached_input_tokens or 0
            w[3] += prices.cost(a)
    got = {r["model"]: r for r in q.costs(store, prices, by="model")}
    assert set(got) == set(want)
    for model, (calls, inp, cached, cost) in want.items():
        row = got[model]
        assert (row["calls"], row["input_tokens"], row["cached_input_tokens"]) == (calls, inp, cached)
        assert row["cost"] == pytest.approx(cost)
    assert got["mystery-model-1"]["cost"] == 0 and got["mystery-model-1"]["unpriced_calls"] == 19
    total = sum(w[3] for w in want.values())
    for by in ("provider", "agent", "service", "release", "day"):
        rows = q.costs(store, prices, by=by)
        assert sum(r["cost"] for r in rows) == pytest.approx(total), by
    assert len(q.costs(store, prices, by="day")) == 4
    day2 = q.costs(store, prices, by="day", from_=iso(BASE_NS + DAY), to=iso(BASE_NS + 2 * DAY - 1))
    assert len(day2) == 1 and day2[0]["calls"] == sum(
        1 for a in data.stored if a.kind == "llm" and BASE_NS + DAY <= a.span.start_ns < BASE_NS + 2 * DAY
    )


def _interp(values: list[float], p: float) -> float:
    values = sorted(values)
    pos = p * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def test_latency_by_model_and_kind(store: Store, data: Dataset) -> None:
    rows = {r["model"]: r for r in q.latency(store, by="model")}
    groups: dict = defaultdict(list)
    for a in data.stored:
        if a.model:
            groups[a.model].append(a)
    assert set(rows) == set(groups)
    for model, spans in groups.items():
        row, lat = rows[model], [a.latency_ms for a in spans]
        assert row["count"] == len(spans)
        assert row["error_rate"] == pytest.approx(sum(a.error for a in spans) / len(spans))
        for p in (50, 90, 95, 99):  # below 8192 values ClickHouse's quantile is exact, linearly interpolated
            assert row[f"p{p}_ms"] == pytest.approx(_interp(lat, p / 100), rel=1e-9)
    kinds = {r["kind"]: r["count"] for r in q.latency(store, by="kind")}
    assert kinds == {"agent": 48, "llm": 96, "tool": 48}
    assert {r["release"] for r in q.latency(store, by="release")} == {"1.0.0", "1.1.0"}


def test_prices_check_lists_unpriced_models(store: Store, prices: PriceTable, data: Dataset) -> None:
    rows = q.prices_check(store, prices)
    assert [r["model"] for r in rows if r["source"] == "unpriced"] == ["mystery-model-1"]
    assert rows[0]["model"] == "mystery-model-1"  # unpriced first: that is what needs action
    mystery = [a for a in data.stored if a.model == "mystery-model-1"]
    assert rows[0]["spans"] == rows[0]["llm_spans"] == len(mystery)
    assert rows[0]["input_tokens"] == sum(a.input_tokens for a in mystery)
    # every other model seen is priced by the library (the packaged overrides are empty), under its library id
    by_model = {r["model"]: r for r in rows}
    assert {m for m, r in by_model.items() if r["source"] == "library"} == {m for _, m in MODELS} - {"mystery-model-1"}
    assert by_model["gpt-4o-2024-08-06"]["priced_as"] == "openai/gpt-4o"


def test_price_edit_changes_answers_at_once(store: Store, tmp_path: Path, data: Dataset) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("providers:\n  acme:\n    models:\n      mystery-model: {input: 1.0, output: 2.0}\n")
    before = {r["model"]: r["cost"] for r in q.costs(store, PriceTable.load(path))}
    library_only = {r["model"]: r["cost"] for r in q.costs(store, PriceTable.load())}
    assert before["mystery-model-1"] > 0 and library_only["mystery-model-1"] == 0
    assert before["gpt-4o-2024-08-06"] == library_only["gpt-4o-2024-08-06"] > 0  # the library still prices the rest
    path.write_text("providers:\n  acme:\n    models:\n      mystery-model: {input: 2.0, output: 4.0}\n")
    after = {r["model"]: r["cost"] for r in q.costs(store, PriceTable.load(path))}
    assert after["mystery-model-1"] == pytest.approx(2 * before["mystery-model-1"])
    checked = {r["model"]: r["source"] for r in q.prices_check(store, PriceTable.load(path))}
    assert checked["mystery-model-1"] == "override" and checked["gpt-4o-2024-08-06"] == "library"


def test_effective_from_boundary(store: Store) -> None:
    cut = BASE_NS + 3 * DAY + 7 * 3600 * 10**9
    spans = [
        bridge(9000 + k, 1, None, "chat", cut + off, 5, llm_attrs("acme", "boundary-model", 1000, 0))
        for k, off in enumerate((-1, 0, 3600 * 10**9))
    ]
    ClickHouseSender(store).send(spans_items(recognise_trace(spans)))
    table = PriceTable.from_mapping({"providers": {"acme": {"models": {"boundary-model": [
        {"input": 1.0, "output": 0}, {"effective_from": iso(cut), "input": 2.0, "output": 0}]}}}})  # fmt: skip
    got = sorted(q.runs(store, table, model="boundary-model", order="start_time"), key=lambda r: r["start_time"])
    assert [r["cost"] for r in got] == pytest.approx([0.001, 0.002, 0.002])  # 1000 tokens at 1, 2, 2 USD/1M
    assert q.costs(store, table, by="model")[0]["cost"] == pytest.approx(0.005)


def test_cached_tokens_charged_once_in_sql(store: Store, prices: PriceTable) -> None:
    attrs = llm_attrs("anthropic", "claude-sonnet-4-5-20250929", 1000, 200, cached=600, write=100, reasoning=50)
    attrs["gen_ai.request.model"] = attrs["gen_ai.response.model"] = "claude-sonnet-4-5-cachetest"
    a = recognise_trace([bridge(9100, 1, None, "chat", BASE_NS + 3600 * 10**9, 5, attrs)])[0]
    ClickHouseSender(store).send([("spans", span_row(a))])
    (row,) = q.runs(store, prices, model="claude-sonnet-4-5-cachetest")
    assert row["cost"] == pytest.approx(4455 / 1e6)  # 300×3 + 600×0.30 + 100×3.75 + 150×15 + 50×15


def test_diff_between_releases(store: Store, prices: PriceTable, data: Dataset) -> None:
    rows = {r["metric"]: r for r in q.diff(store, prices, "1.0.0", "1.1.0")}
    side: dict = {"1.0.0": [], "1.1.0": []}
    for run in data.runs:
        side[run.root.service_version].append(run)
    for name, runs in side.items():
        key = "baseline" if name == "1.0.0" else "candidate"
        assert rows["runs"][key] == len(runs)
        cost = sum(prices.cost(a) for r in runs for a in r.spans) / len(runs)
        assert rows["cost_per_run"][key] == pytest.approx(cost)
        tokens = sum(r.total("input_tokens") + r.total("output_tokens") for r in runs) / len(runs)
        assert rows["tokens_per_run"][key] == pytest.approx(tokens)
        assert rows["latency_mean_ms"][key] == pytest.approx(sum(r.latency_ms for r in runs) / len(runs))
        assert rows["error_rate"][key] == pytest.approx(sum(not r.success for r in runs) / len(runs))
    cpr = rows["cost_per_run"]
    assert cpr["delta"] == pytest.approx(cpr["candidate"] - cpr["baseline"])
    assert 0 <= cpr["confidence"] <= 1 and cpr["samples"] == "low"
    assert q.diff(store, prices, "1.0.0", "nope")[0]["candidate"] == 0
