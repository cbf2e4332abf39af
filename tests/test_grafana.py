"""Every panel of the Grafana dashboard runs on chDB with the plugin's macros substituted, returns the columns it
promises, and its figures equal the analytics queries': cost by model and by agent through the ``model_prices``
table that ``analytics.price_sync`` writes, and the unpriced list."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from ch_data import BASE, make_dataset

from otel_bridge import grafana
from otel_bridge.analytics import queries as q
from otel_bridge.analytics.price_sync import sync_prices
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, run_row, spans_items
from otel_bridge.pricing import PriceTable

CONFIG = Path(__file__).resolve().parent.parent / "config" / "grafana"
COLUMNS = {
    1: ["time", "model", "cost"],
    2: ["time", "p50", "p95", "p99"],
    3: ["time", "kind", "error_rate"],
    4: ["agent", "runs", "errors", "error_rate", "p95_ms", "llm_calls", "cost"],
    5: ["model", "provider", "spans", "llm_spans", "input_tokens", "output_tokens", "first_seen", "last_seen"],
}
FROM_S, TO_S = int((BASE - timedelta(days=1)).timestamp()), int((BASE + timedelta(days=6)).timestamp())
INTERVAL_S = 3600


def expand(sql: str, variables: dict[str, str]) -> str:
    """The plugin's macros, as grafana-clickhouse-datasource v4 expands them, then Grafana's ${var}/$var."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({FROM_S}) AND \1 <= toDateTime({TO_S})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {INTERVAL_S} second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({FROM_S})").replace("$__toTime", f"toDateTime({TO_S})")
    sql = sql.replace("$__interval_s", str(INTERVAL_S))
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql[:200]}"
    return sql


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, prices: PriceTable):
    data = make_dataset(n_traces=36, seed=5)
    s = Store.open(StoreConfig(data_dir=str(tmp_path_factory.mktemp("grafana") / "data")))
    ClickHouseSender(s).send(spans_items(data.spans) + [("runs", run_row(r)) for r in data.runs])
    assert sync_prices(s, prices)  # what serve and the CLI write when they open the store
    yield s
    s.close()


def panel_results(store: Store) -> dict[int, list[dict]]:
    out = {}
    for panel in grafana.dashboard()["panels"]:
        sql = expand(panel["targets"][0]["rawSql"], {"database": store.database, "kind": "llm"})
        out[panel["id"]] = store.query(sql)
    return out


@pytest.fixture(scope="module")
def results(store: Store) -> dict[int, list[dict]]:
    return panel_results(store)


def test_committed_dashboard_is_the_generated_one() -> None:
    committed = orjson.loads((CONFIG / "dashboards" / "otel-bridge.json").read_bytes())
    assert committed == grafana.dashboard(), (
        "config/grafana/dashboards/otel-bridge.json is stale: regenerate it with "
        "`otel-bridge grafana dashboard > config/grafana/dashboards/otel-bridge.json`"
    )
    for panel in committed["panels"]:
        target = panel["targets"][0]
        assert panel["datasource"]["type"] == target["datasource"]["type"] == "grafana-clickhouse-datasource"
        assert target["editorType"] == "sql" and target["rawSql"]
    names = {v["name"] for v in committed["templating"]["list"]}
    assert names == {"datasource", "database", "kind"}
    assert "arrayJoin" not in orjson.dumps(committed).decode()  # no price table inside the SQL any more


def test_provisioning_files() -> None:
    ds = yaml.safe_load((CONFIG / "provisioning" / "datasources" / "otel-bridge-clickhouse.yaml").read_text())
    assert ds["datasources"][0]["type"] == "grafana-clickhouse-datasource"
    assert ds["datasources"][0]["uid"] == grafana.dashboard()["templating"]["list"][0]["current"]["value"]
    dash = yaml.safe_load((CONFIG / "provisioning" / "dashboards" / "otel-bridge.yaml").read_text())
    assert dash["providers"][0]["type"] == "file" and dash["providers"][0]["options"]["path"]


def test_every_panel_returns_its_columns(results: dict[int, list[dict]]) -> None:
    for pid, columns in COLUMNS.items():
        assert results[pid], f"panel {pid} returned no rows"
        assert list(results[pid][0]) == columns, pid


def assert_same_cost(got: float, want: float, what: str) -> None:
    """The same rows and formula, summed in another order: equal to float rounding, and to the cent."""
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12) and round(got, 2) == round(want, 2), (what, got, want)


def assert_panels_equal_the_analytics(results: dict, store: Store, prices: PriceTable) -> None:
    by_model: dict[str, float] = defaultdict(float)
    for row in results[1]:
        by_model[row["model"]] += row["cost"]
    expected = {r["model"]: r["cost"] for r in q.costs(store, prices, by="model")}
    assert by_model.keys() == expected.keys()
    for model, cost in expected.items():
        assert_same_cost(by_model[model], cost, model)
    agents = {r["agent"]: r["cost"] for r in q.costs(store, prices, by="agent") if r["agent"]}
    assert {r["agent"] for r in results[4]} == agents.keys()
    for row in results[4]:
        assert_same_cost(row["cost"], agents[row["agent"]], row["agent"])
    unpriced = {(r["model"], r["provider"]): r["llm_spans"] for r in q.prices_check(store, prices)
                if r["source"] == "unpriced"}  # fmt: skip
    assert {(r["model"], r["provider"]): r["llm_spans"] for r in results[5]} == unpriced


def test_cost_panels_equal_the_analytics(results: dict, store: Store, prices: PriceTable) -> None:
    assert_panels_equal_the_analytics(results, store, prices)
    assert [r["model"] for r in results[5]] == ["mystery-model-1"]
    assert sum(r["cost"] for r in results[1]) > 0


def test_an_override_change_reaches_the_panels(store: Store, tmp_path: Path) -> None:
    """After an override prices the unknown model and changes a library price, one sync and the panels follow."""
    data = make_dataset(n_traces=20, seed=8)
    config = StoreConfig(data_dir=store.config.data_dir, database="grafana_override")  # chDB: one directory a process
    with Store.open(config) as s:
        ClickHouseSender(s).send(spans_items(data.spans))
        sync_prices(s, PriceTable.load())
        overrides = tmp_path / "prices.yaml"
        overrides.write_text("providers:\n  mine:\n    models:\n      mystery-model: {input: 4, output: 16}\n"
                             "      gpt-4o: {input: 1, cached_input: 0.5, output: 3}\n")  # fmt: skip
        edited = PriceTable.load(overrides)
        assert {(r["provider"], r["model"]) for r in sync_prices(s, edited)} == {
            ("acme", "mystery-model-1"), ("openai", "gpt-4o-2024-08-06")}  # fmt: skip
        results = panel_results(s)
        assert_panels_equal_the_analytics(results, s, edited)
        assert results[5] == []


def test_latency_and_errors_follow_the_spans(results: dict) -> None:
    """Per hour bucket, from the generated spans in Python: error rate per kind exactly, percentiles in range."""
    durations: dict[int, list[float]] = defaultdict(list)
    counts: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for a in make_dataset(n_traces=36, seed=5).stored:
        hour = a.span.start_ns // 10**9 // INTERVAL_S * INTERVAL_S
        if a.kind == "llm":
            durations[hour].append(a.latency_ms)
        if a.kind in ("agent", "llm", "tool"):
            counts[(hour, a.kind)][0] += bool(a.error)
            counts[(hour, a.kind)][1] += 1
    latency = {int(r["time"].timestamp()): r for r in results[2]}
    assert latency.keys() == durations.keys()
    for hour, row in latency.items():
        assert min(durations[hour]) - 1e-6 <= row["p50"] <= row["p95"] <= row["p99"] <= max(durations[hour]) + 1e-6
    errors = {(int(r["time"].timestamp()), r["kind"]): r["error_rate"] for r in results[3]}
    assert errors == {k: pytest.approx(e / n, abs=1e-12) for k, (e, n) in counts.items()}
    assert any(errors.values())
