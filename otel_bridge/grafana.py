"""A Grafana dashboard over otel-bridge's ClickHouse schema, for the ClickHouse data source plugin
(grafana-clickhouse-datasource, v4): cost by model over time, latency percentiles, error rate, top agents, unpriced
models.

Grafana talks to ClickHouse directly, so it prices spans from the ``model_prices`` table, which otel-bridge keeps
equal to its price table for every (provider, model) seen (``analytics.price_sync``): each span is joined to its
pair's row and costed with ``analytics.cost.SPAN_COST``, the expression the API uses — the same rows, the same
formula, the same figures. The SQL holds no prices, so the JSON only changes with the panels;
``otel-bridge grafana dashboard`` prints it, config/grafana/dashboards/otel-bridge.json is its output.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from otel_bridge.analytics.cost import SPAN_COST

DS = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
DB = "${database}"
TIMESERIES, TABLE = 0, 1  # the plugin's query formats
_COLUMNS = ("kind, provider, model, agent, status, duration_ms, start, input_tokens, cached_input_tokens, "
            "cache_write_tokens, output_tokens, reasoning_tokens")  # fmt: skip
PRICE_JOIN = f"LEFT JOIN {DB}.model_prices AS pr FINAL ON s.provider = pr.p_provider AND s.model = pr.p_model"


def priced_spans_sql(where: str) -> str:
    """Finished spans matching ``where`` with ``cost`` (USD, current prices) and ``priced`` (their pair has
    price rows in ``model_prices``; no row or an empty one = unpriced)."""
    return f"""(
    SELECT s.*, {SPAN_COST} AS cost, notEmpty(p_from) AS priced
    FROM (
        SELECT {_COLUMNS}, toUnixTimestamp64Nano(start) AS start_ns
        FROM {DB}.spans FINAL WHERE status != 'started' AND {where}
    ) AS s
    {PRICE_JOIN}
    )"""


def panels() -> list[dict[str, Any]]:
    """(title, type, format, SQL, grid position) for each panel."""
    window = "$__timeFilter(start)"
    priced = priced_spans_sql(window)
    specs = [
        (
            "Cost by model (USD, current prices)",
            "timeseries",
            TIMESERIES,
            f"""SELECT $__timeInterval(start) AS time, model, sum(cost) AS cost
FROM {priced}
WHERE kind = 'llm'
GROUP BY time, model ORDER BY time, model""",
            {"h": 9, "w": 12, "x": 0, "y": 0},
            {"unit": "currencyUSD", "stack": True},
        ),
        (
            "Latency percentiles (${kind} spans)",
            "timeseries",
            TIMESERIES,
            f"""SELECT $__timeInterval(start) AS time,
    quantile(0.5)(duration_ms) AS p50, quantile(0.95)(duration_ms) AS p95, quantile(0.99)(duration_ms) AS p99
FROM {DB}.spans FINAL
WHERE {window} AND status != 'started' AND kind = '${{kind}}'
GROUP BY time ORDER BY time""",
            {"h": 9, "w": 12, "x": 12, "y": 0},
            {"unit": "ms"},
        ),
        (
            "Error rate",
            "timeseries",
            TIMESERIES,
            f"""SELECT $__timeInterval(start) AS time, kind, countIf(status = 'error') / count() AS error_rate
FROM {DB}.spans FINAL
WHERE {window} AND status != 'started' AND kind IN ('agent', 'llm', 'tool')
GROUP BY time, kind ORDER BY time, kind""",
            {"h": 8, "w": 12, "x": 0, "y": 9},
            {"unit": "percentunit"},
        ),
        (
            "Top agents",
            "table",
            TABLE,
            f"""SELECT agent, countIf(kind = 'agent') AS runs, countIf(kind = 'agent' AND status = 'error') AS errors,
    if(runs > 0, errors / runs, 0) AS error_rate, quantileIf(0.95)(duration_ms, kind = 'agent') AS p95_ms,
    countIf(kind = 'llm') AS llm_calls, sum(cost) AS cost
FROM {priced}
WHERE agent != ''
GROUP BY agent ORDER BY cost DESC, agent LIMIT 20""",
            {"h": 8, "w": 12, "x": 12, "y": 9},
            {},
        ),
        (
            "Unpriced models (their calls count as $0)",
            "table",
            TABLE,
            f"""SELECT model, provider, count() AS spans, countIf(kind = 'llm') AS llm_spans,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, min(start) AS first_seen,
    max(start) AS last_seen
FROM {priced}
WHERE model != '' AND NOT priced
GROUP BY model, provider ORDER BY spans DESC, model, provider""",
            {"h": 7, "w": 24, "x": 0, "y": 17},
            {},
        ),
    ]
    return [_panel(i + 1, *spec) for i, spec in enumerate(specs)]


def _panel(pid: int, title: str, kind: str, fmt: int, sql: str, pos: dict, opts: dict) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": opts["unit"]} if "unit" in opts else {}
    if opts.get("stack"):
        defaults["custom"] = {"stacking": {"mode": "normal"}, "drawStyle": "bars", "fillOpacity": 80}
    return {
        "id": pid, "title": title, "type": kind, "datasource": DS, "gridPos": pos,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [{"refId": "A", "datasource": DS, "editorType": "sql", "format": fmt,
                     "queryType": "timeseries" if fmt == TIMESERIES else "table", "rawSql": sql}],
    }  # fmt: skip


def dashboard(database: str = "otel_bridge") -> dict[str, Any]:
    variables = [
        {"name": "datasource", "type": "datasource", "query": "grafana-clickhouse-datasource", "label": "ClickHouse",
         "current": {"text": "otel-bridge ClickHouse", "value": "otel-bridge-clickhouse"}},
        {"name": "database", "type": "constant", "query": database, "hide": 2},
        {"name": "kind", "type": "custom", "label": "span kind", "query": "llm,agent,tool",
         "current": {"text": "llm", "value": "llm"},
         "options": [{"text": k, "value": k, "selected": k == "llm"} for k in ("llm", "agent", "tool")]},
    ]  # fmt: skip
    return {
        "uid": "otel-bridge", "title": "otel-bridge: AI agents", "tags": ["otel-bridge", "genai"],
        "timezone": "utc", "schemaVersion": 39, "version": 1, "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "description": "Generated by `otel-bridge grafana dashboard`; costs from the model_prices table that "
                       "otel-bridge keeps in sync with its price table (`otel-bridge prices sync`).",
        "templating": {"list": variables}, "panels": panels(),
    }  # fmt: skip


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("grafana", help="Grafana dashboard for the ClickHouse data source plugin")
    sub = g.add_subparsers(dest="grafana_cmd", required=True)
    p = sub.add_parser("dashboard", help="print the dashboard JSON (costs from the model_prices table)")
    p.add_argument("--database", default="otel_bridge", help="the ClickHouse database of the tables")
    p.set_defaults(func=_print)


def _print(a: argparse.Namespace) -> int:
    doc = dashboard(a.database)
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
