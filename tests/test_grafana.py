"""Every panel of the Grafana dashboard runs on chDB with the plugin's macros substituted, returns the columns it
promises, and its figures equal the analytics queries' (cost through the in-SQL price matching included)."""

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
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, run_row, spans_items
from otel_bridge.pricing import PriceTable

CONFIG = Path(__file__).resolve().parent.parent / "config" / "grafana"
COLUMNS = {
    1: ["time", "model", "cost"],
    2: ["time", "p50", "p95", "p99"],
    3: ["time", "kind", "error_rate"],
    4: ["agent", "runs", "errors", "error_rate", "p95_ms", "llm_calls", "cost"],
    5: ["model", "spans", "llm_spans", "input_tokens", "output_tokens", "first_seen", "last_seen"],
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
def store(tmp_path_factory: pytest.TempPathFactory):
    data = make_dataset(n_traces=36, seed=5)
    s = Store.open(StoreConfig(data_dir=str(tmp_path_factory.mktemp("grafana") / "data")))
    ClickHouseSender(s).send(spans_items(data.spans) + [("runs", run_row(r)) for r in data.runs])
    yield s
    s.close()


@pytest.fixture(scope="module")
def results(store: Store, prices: PriceTable) -> dict[int, list[dict]]:
    doc = grafana.dashboard(prices)
    out = {}
    for panel in doc["panels"]:
        sql = expand(panel["targets"][0]["rawSql"], {"database": "otel_bridge", "kind": "llm"})
        out[panel["id"]] = store.query(sql)
    return out


def test_committed_dashboard_is_the_generated_one(prices: PriceTable) -> None:
    committed = orjson.loads((CONFIG / "dashboards" / "otel-bridge.json").read_bytes())
    assert committed == grafana.dashboard(prices), (
        "config/grafana/dashboards/otel-bridge.json is stale: regenerate it with "
        "`otel-bridge grafana dashboard > config/grafana/dashboards/otel-bridge.json`"
    )
    for panel in committed["panels"]:
        target = panel["targets"][0]
        assert panel["datasource"]["type"] == target["datasource"]["type"] == "grafana-clickhouse-datasource"
        assert target["editorType"] == "sql" and target["rawSql"]
    names = {v["name"] for v in committed["templating"]["list"]}
    assert names == {"datasource", "database", "kind"}


def test_provisioning_files() -> None:
    ds = yaml.safe_load((CONFIG / "provisioning" / "datasources" / "otel-bridge-clickhouse.yaml").read_text())
    assert ds["datasources"][0]["type"] == "grafana-clickhouse-datasource"
    assert ds["datasources"][0]["uid"] == grafana.dashboard(PriceTable.load())["templating"]["list"][0]["current"]["value"]
    dash = yaml.safe_load((CONFIG / "provisioning" / "dashboards" / "otel-bridge.yaml").read_text())
    assert dash["providers"][0]["type"] == "file" and dash["providers"][0]["options"]["path"]


def test_every_panel_returns_its_columns(results: dict[int, list[dict]]) -> None:
    for pid, columns in COLUMNS.items():
        assert results[pid], f"panel {pid} returned no rows"
        assert list(results[pid][0]) == columns, pid


def test_cost_panels_equal_the_analytics(results: dict, store: Store, prices: PriceTable) -> None:
    by_model: dict[str, float] = defaultdict(float)
    for row in results[1]:
        by_model[row["model"]] += row["cost"]
    expected = {r["model"]: r["cost"] for r in q.costs(store, prices, by="model")}
    assert by_model.keys() == expected.keys()
    for model, cost in expected.items():
        assert math.isclose(by_model[model], cost, rel_tol=1e-9, abs_tol=1e-12), model
    agents = {r["agent"]: r["cost"] for r in q.costs(store, prices, by="agent") if r["agent"]}
    assert {r["agent"]: pytest.approx(r["cost"], rel=1e-9) for r in results[4]} == agents
    unpriced = {r["model"]: r["llm_spans"] for r in q.prices_check(store, prices)}
    assert {r["model"]: r["llm_spans"] for r in results[5]} == unpriced and unpriced


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


def test_price_matching_in_sql_follows_the_price_table(store: Store, prices: PriceTable) -> None:
    """Names that exercise every rule of PriceTable.family: exact, case, provider prefixes, dated, unknown."""
    names = ["gpt-4o", "GPT-4o", "openai/gpt-4o-2024-08-06", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
             "gpt-4o-mini-2024-07-18", "o3", "o3-mini", "gpt-4omni", "mystery-model-1", "claude-sonnet-4-5@20250929"]  # fmt: skip
    arr = "[" + ", ".join(grafana._lit(n) for n in names) + "]"
    sql = grafana.families_sql(prices, "1").replace(
        "SELECT DISTINCT model FROM ${database}.spans WHERE model != '' AND 1", f"SELECT arrayJoin({arr}) AS model"
    )
    got = {r["m_model"]: r["family"] for r in store.query(sql)}
    assert got == {n: prices.family(n) or "" for n in names}
