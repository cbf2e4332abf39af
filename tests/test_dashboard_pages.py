"""Dashboard pages rendered by the real app over a chDB store (no browser): unpriced-models panel, run totals in
the run list, bad input as 400, the packaged static files."""

from __future__ import annotations

import re

import pytest
from ch_data import make_dataset
from fastapi.testclient import TestClient

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, run_row, spans_items
from otel_bridge.pricing import PriceTable
from otel_bridge.server.app import Runtime, create_app


def _no_ingest(kind: str, body: bytes, events: object) -> int:
    raise AssertionError("the dashboard pages never ingest")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    data = make_dataset(n_traces=12, seed=3)
    store = Store.open(StoreConfig(data_dir=str(tmp_path_factory.mktemp("dashpages") / "data")))
    ClickHouseSender(store).send(spans_items(data.spans) + [("runs", run_row(r)) for r in data.runs])
    rt = Runtime(store=store, prices=PriceTable.load(), stats=dict, ingest=_no_ingest, token="t0ken")
    with TestClient(create_app(rt), headers={"authorization": "Bearer t0ken"}) as c:
        c.rt = rt
        yield c
    store.close()


def test_overview_warns_of_unpriced_models(client: TestClient) -> None:
    page = client.get("/", params={"range": "all"})
    assert page.status_code == 200
    panel = re.search(r'<section class="panel warn" id="unpriced">(.*?)</section>', page.text, re.S)
    assert panel and "mystery-model-1" in panel.group(1) and "without a price" in panel.group(1)
    listed = re.findall(r"<tr><td><code>([^<]+)</code>", panel.group(1))
    assert listed == [
        r["model"] for r in q.prices_check(client.rt.store, client.rt.prices) if r["source"] == "unpriced"
    ]
    assert listed == ["mystery-model-1"]  # the priced models are not in the warning
    for chart in ("cost", "tokens", "latency_agent", "latency_model", "errors"):
        assert f'data-chart="{chart}"' in page.text


def test_run_list_shows_totals_and_filters(client: TestClient) -> None:
    rows = q.runs(client.rt.store, client.rt.prices, agent="writer", limit=1000, min_total_cost=0.001)
    page = client.get("/runs", params={"range": "all", "agent": "writer", "min_total_cost": "0.001", "limit": "1000"})
    assert page.status_code == 200
    assert re.findall(r'<tr data-run-id="([^"]+)"', page.text) == [r["run_id"] for r in rows] and rows
    assert all(r["type"] != "agent" or r["total_cost"] > 0 for r in rows)


def test_bad_input_is_a_400_with_its_message(client: TestClient) -> None:
    bad = client.get("/runs", params={"min_latency_s": "soon"})
    assert bad.status_code == 400 and "min latency (s): expected a number" in bad.json()["detail"]
    assert client.get("/runs", params={"order": "-nonsense"}).status_code == 400
    assert client.get("/", params={"refresh": "7"}).status_code == 400
    assert client.get("/static/..%2Fdashboard.py").status_code == 404
    assert client.get("/run/00000000-0000-0000-0000-000000000000").status_code == 404
    assert TestClient(client.app).get("/").status_code == 401  # no token: the API's bearer check applies


def test_static_assets_are_packaged(client: TestClient) -> None:
    js = client.get("/static/chart.umd.min.js")
    assert js.status_code == 200 and "Chart.js v4" in js.text[:200] and "sourceMappingURL" not in js.text
    assert client.get("/static/dashboard.js").status_code == 200


def test_diff_defaults_to_the_two_latest_releases(client: TestClient) -> None:
    page = client.get("/diff")
    assert page.status_code == 200 and 'id="diff-table"' in page.text
    assert "1.0.0 → 1.1.0" in page.text
