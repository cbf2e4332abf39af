"""The dashboard in a real browser: Debian's headless chromium driven by Playwright, against a real ``serve``
filled with the demo's synthetic traffic (real OTel SDK over OTLP/gRPC). One server and one browser for all checks.

Chromium comes from apt (``make test`` installs it when missing); Playwright's own browser download is never used.
Screenshots land in test-artifacts/ (gitignored).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_server import Bridge, start_bridge, wait_until
from rich.console import Console

from otel_bridge import demo

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "dashboard-test-token"
RUNS_PER_RELEASE = 30


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    b = start_bridge(tmp_path_factory.mktemp("dash"), {"OTEL_BRIDGE_TOKEN": TOKEN})
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OTEL_BRIDGE_TOKEN", TOKEN)  # the demo's OTLP exporter sends it
            llm_calls = demo._send(b.grpc, RUNS_PER_RELEASE, Console(quiet=True))
        with b.client() as c:
            stored = wait_until(lambda: sum(r["calls"] for r in c.get("/api/costs").json()) >= llm_calls, timeout=60)
            assert stored, "the demo's LLM calls were not all stored"
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser, bridge: Bridge):  # noqa: ANN001, ANN201
    """One page; console errors and uncaught exceptions are collected for every visit."""
    ctx = browser.new_context(
        viewport={"width": 1440, "height": 1000}, extra_http_headers={"authorization": f"Bearer {TOKEN}"}
    )
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    ARTIFACTS.mkdir(exist_ok=True)
    yield pg
    ctx.close()


def _visit(page, url: str, shot: str) -> None:  # noqa: ANN001
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == 200, f"{url}: {response and response.status}"
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)


def test_same_auth_as_the_api(bridge: Bridge) -> None:
    with bridge.client(token=None) as c:
        assert c.get("/").status_code == 401 and c.get("/runs").status_code == 401
    with bridge.client() as c:
        assert c.get("/").status_code == 200 and c.get("/static/chart.umd.min.js").status_code == 200
        assert c.get("/", params={"range": "2y"}).status_code == 400
        assert c.get("/runs", params={"min_latency_s": "fast"}).status_code == 400
        assert c.get("/run/not-a-run").status_code == 404


def test_overview_charts_render_without_console_errors(page, bridge: Bridge) -> None:  # noqa: ANN001
    _visit(page, f"{bridge.url}/?range=24h", "overview")
    charts = page.eval_on_selector_all(
        "canvas[data-chart]",
        """els => els.map(c => {
            const chart = Chart.getChart(c);
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let ink = 0;
            for (let i = 3; i < px.length; i += 4) if (px[i] > 0) ink++;
            const values = chart ? chart.data.datasets.flatMap(d => d.data).filter(v => v != null) : [];
            return {id: c.dataset.chart, drawn: !!chart, values: values.length, positive: values.filter(v => v > 0).length, ink};
        })""",
    )
    assert {c["id"] for c in charts} == {"cost", "tokens", "latency_agent", "latency_model", "errors"}
    for c in charts:
        assert c["drawn"] and c["values"] > 0 and c["ink"] > 500, c
        assert c["positive"] > 0 or c["id"] == "errors", c
    assert page.locator("#unpriced").count() == 0  # every demo model has a price
    with bridge.client() as client:
        total = sum(r["cost"] for r in client.get("/api/costs").json())
    assert page.locator("#tile-cost").inner_text() == f"${total:.2f}"
    page.select_option("#range", "1h")  # the time-range picker re-renders the page with its range
    page.wait_for_url("**range=1h**")
    page.select_option("#refresh", "30")
    page.wait_for_url("**refresh=30**")
    assert page.locator("body").get_attribute("data-refresh") == "30"
    assert page.errors == []


def test_run_filters_show_exactly_the_api_rows(page, bridge: Bridge) -> None:  # noqa: ANN001
    with bridge.client() as c:
        model = c.get("/api/costs").json()[0]["model"]  # the most expensive model
        calls = c.get("/api/run/", params={"model": model, "limit": 10_000}).json()
        latencies = sorted(r["latency_s"] for r in calls)
        threshold = round(latencies[len(latencies) // 2], 3)
        expected = c.get("/api/run/", params={"model": model, "min_latency_s": threshold, "limit": 1000}).json()
    assert 0 < len(expected) < len(calls)
    _visit(page, f"{bridge.url}/runs?range=all", "runs")
    page.select_option("#filters select[name=model]", model)
    page.fill("#filters input[name=min_latency_s]", str(threshold))
    page.fill("#filters input[name=limit]", "1000")
    with page.expect_navigation():
        page.click("#apply")
    page.screenshot(path=str(ARTIFACTS / "runs-filtered.png"), full_page=True)
    shown = page.eval_on_selector_all("#runs-table tbody tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)")
    assert shown == [r["run_id"] for r in expected]
    assert page.locator("#run-count").inner_text() == str(len(expected))
    assert page.errors == []


def test_run_waterfall_shows_every_span_and_sums(page, bridge: Bridge) -> None:  # noqa: ANN001
    with bridge.client() as c:
        run = c.get(
            "/api/run/", params={"min_llm_calls": 3, "min_tool_calls": 1, "order": "-total_cost", "limit": 1}
        ).json()[0]
        same_agent = c.get("/api/run/", params={"agent": run["agent"], "limit": 10_000}).json()
    children = [r for r in same_agent if r["trace_id"] == run["trace_id"] and r["run_id"] != run["run_id"]]
    llm = [r for r in children if r["type"] == "llm"]
    _visit(page, f"{bridge.url}/run/{run['run_id']}?range=all", "run")
    rows = page.eval_on_selector_all(
        ".wf-row", "rs => rs.map(r => ({id: r.dataset.runId, type: r.dataset.type, cost: Number(r.dataset.cost)}))"
    )
    assert sorted(r["id"] for r in rows) == sorted([run["run_id"]] + [r["run_id"] for r in children])
    assert len(llm) == run["llm_calls"] >= 3
    shown_total = float(page.locator("#run-total-cost").get_attribute("data-value"))
    waterfall_llm = sum(r["cost"] for r in rows if r["type"] == "llm")
    assert math.isclose(shown_total, waterfall_llm, rel_tol=1e-9) and math.isclose(
        shown_total, sum(r["cost"] for r in llm), rel_tol=1e-9
    )
    assert math.isclose(shown_total, run["total_cost"], rel_tol=1e-9) and shown_total > 0
    assert page.locator("#run-llm-calls").inner_text() == str(len(llm))
    assert page.locator(".msg.user").count() >= 1 and page.locator(".msg.assistant").count() >= 1
    page.locator(".wf-row").nth(1).locator("summary").click()  # a span opens to its details
    page.screenshot(path=str(ARTIFACTS / "run-open.png"), full_page=True)
    assert page.errors == []


def test_release_diff_view(page, bridge: Bridge) -> None:  # noqa: ANN001
    _visit(page, f"{bridge.url}/diff?range=all", "diff")
    assert page.locator("#diff-table tbody tr").count() == 7
    assert page.locator("select[name=baseline]").input_value() == demo.RELEASES[0]
    assert page.locator("select[name=candidate]").input_value() == demo.RELEASES[1]
    assert page.errors == []
