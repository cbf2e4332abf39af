"""A Grafana dashboard over otel-bridge's ClickHouse schema, for the ClickHouse data source plugin
(grafana-clickhouse-datasource, v4): cost by model over time, latency percentiles, error rate, top agents, unpriced
models.

Grafana talks to ClickHouse directly, so the price table travels inside the SQL: the rows of ``prices.yaml`` become
an array literal, model names are matched to price families in SQL the way ``PriceTable.family`` does (exact,
provider prefix stripped, then the longest family followed by ``-@:_``), and the row in force is picked with the same
ASOF join and cost formula as ``analytics.queries``. ``otel-bridge grafana dashboard`` regenerates the JSON after a
price edit; config/grafana/dashboards/otel-bridge.json is its output for the packaged table.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from otel_bridge.analytics.queries import _COST_EXPR
from otel_bridge.pricing import PriceTable

DS = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
DB = "${database}"
TIMESERIES, TABLE = 0, 1  # the plugin's query formats
_STRIP = r"^(?:[a-z]{2}(?:-[a-z]+)?\\.)?(?:anthropic|meta|mistral|cohere|amazon|google)\\."
COST = _COST_EXPR.format(
    kind="kind = 'llm'", i="input_tokens", c="cached_input_tokens", w="cache_write_tokens", o="output_tokens",
    r="reasoning_tokens",
)  # fmt: skip


def _lit(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'" if isinstance(value, str) else repr(value)


_COLUMNS = ("kind, model, agent, status, duration_ms, start, input_tokens, cached_input_tokens, cache_write_tokens, "
            "output_tokens, reasoning_tokens")


def price_rows_sql(prices: PriceTable) -> str:
    """The price table as a relation (p_model = family, p_from ns, USD per 1M tokens)."""
    rows = [(fam, r.effective_from_ns, r.input, r.cached_input, r.cache_write, r.output, r.reasoning)
            for fam, group in sorted(prices.rows.items()) for r in group]  # fmt: skip
    arr = "[" + ", ".join("(" + ", ".join(map(_lit, row)) + ")" for row in rows) + "]"
    return (
        "(SELECT p.1 AS p_model, toInt64(p.2) AS p_from, toFloat64(p.3) AS p_in, toFloat64(p.4) AS p_cached, "
        "toFloat64(p.5) AS p_write, toFloat64(p.6) AS p_out, toFloat64(p.7) AS p_reason "
        f"FROM (SELECT arrayJoin({arr}) AS p))"
    )


def families_sql(prices: PriceTable, where: str) -> str:
    """Each distinct model seen → its price family ('' when unpriced), as ``PriceTable.family`` resolves it."""
    fams = "[" + ", ".join(_lit(f) for f in sorted(prices.rows)) + "]"
    return f"""(
    SELECT model AS m_model, multiIf(has({fams}, n), n, has({fams}, s), s,
        arrayElement(arrayReverseSort(f -> length(f), arrayFilter(f -> startsWith(s, f) AND length(s) > length(f)
            AND position('-@:_', substring(s, length(f) + 1, 1)) > 0, {fams})), 1)) AS family
    FROM (
        SELECT model, lower(trimBoth(model)) AS n,
            replaceRegexpOne(arrayElement(splitByChar('/', n), -1), '{_STRIP}', '') AS s
        FROM (SELECT DISTINCT model FROM {DB}.spans WHERE model != '' AND {where})
    ))"""


def priced_spans_sql(prices: PriceTable, where: str) -> str:
    """Finished spans in the panel's time range with ``family`` and ``cost`` (USD, current price table)."""
    return f"""(
    SELECT s.*, {COST} AS cost
    FROM (
        SELECT sp.*, toUnixTimestamp64Nano(sp.start) AS start_ns, fm.family AS family
        FROM (SELECT {_COLUMNS} FROM {DB}.spans FINAL WHERE status != 'started' AND {where}) AS sp
        LEFT JOIN {families_sql(prices, where)} AS fm ON sp.model = fm.m_model
    ) AS s
    ASOF LEFT JOIN {price_rows_sql(prices)} AS pr ON s.family = pr.p_model AND s.start_ns >= pr.p_from
    )"""


def panels(prices: PriceTable) -> list[dict[str, Any]]:
    """(title, type, format, SQL, grid position) for each panel."""
    window = "$__timeFilter(start)"
    priced = priced_spans_sql(prices, window)
    specs = [
        ("Cost by model (USD, current prices)", "timeseries", TIMESERIES, f"""SELECT $__timeInterval(start) AS time, model, sum(cost) AS cost
FROM {priced}
WHERE kind = 'llm'
GROUP BY time, model ORDER BY time, model""", {"h": 9, "w": 12, "x": 0, "y": 0}, {"unit": "currencyUSD", "stack": True}),
        ("Latency percentiles (${kind} spans)", "timeseries", TIMESERIES, f"""SELECT $__timeInterval(start) AS time,
    quantile(0.5)(duration_ms) AS p50, quantile(0.95)(duration_ms) AS p95, quantile(0.99)(duration_ms) AS p99
FROM {DB}.spans FINAL
WHERE {window} AND status != 'started' AND kind = '${{kind}}'
GROUP BY time ORDER BY time""", {"h": 9, "w": 12, "x": 12, "y": 0}, {"unit": "ms"}),
        ("Error rate", "timeseries", TIMESERIES, f"""SELECT $__timeInterval(start) AS time, kind, countIf(status = 'error') / count() AS error_rate
FROM {DB}.spans FINAL
WHERE {window} AND status != 'started' AND kind IN ('agent', 'llm', 'tool')
GROUP BY time, kind ORDER BY time, kind""", {"h": 8, "w": 12, "x": 0, "y": 9}, {"unit": "percentunit"}),
        ("Top agents", "table", TABLE, f"""SELECT agent, countIf(kind = 'agent') AS runs, countIf(kind = 'agent' AND status = 'error') AS errors,
    if(runs > 0, errors / runs, 0) AS error_rate, quantileIf(0.95)(duration_ms, kind = 'agent') AS p95_ms,
    countIf(kind = 'llm') AS llm_calls, sum(cost) AS cost
FROM {priced}
WHERE agent != ''
GROUP BY agent ORDER BY cost DESC, agent LIMIT 20""", {"h": 8, "w": 12, "x": 12, "y": 9}, {}),
        ("Unpriced models (their calls count as $0)", "table", TABLE, f"""SELECT model, count() AS spans, countIf(kind = 'llm') AS llm_spans, sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens, min(start) AS first_seen, max(start) AS last_seen
FROM {priced}
WHERE model != '' AND family = ''
GROUP BY model ORDER BY spans DESC, model""", {"h": 7, "w": 24, "x": 0, "y": 17}, {}),
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


def dashboard(prices: PriceTable, database: str = "otel_bridge") -> dict[str, Any]:
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
        "description": f"Generated by `otel-bridge grafana dashboard` from {prices.path or 'a price table'}.",
        "templating": {"list": variables}, "panels": panels(prices),
    }  # fmt: skip


def register(subparsers: Any) -> None:
    g = subparsers.add_parser("grafana", help="Grafana dashboard for the ClickHouse data source plugin")
    sub = g.add_subparsers(dest="grafana_cmd", required=True)
    p = sub.add_parser("dashboard", help="print the dashboard JSON (prices from the price table, current today)")
    p.add_argument("--prices", help="prices.yaml (default: the packaged table)")
    p.add_argument("--database", default="otel_bridge", help="the ClickHouse database of the tables")
    p.set_defaults(func=_print)


def _print(a: argparse.Namespace) -> int:
    doc = dashboard(PriceTable.load(a.prices), a.database)
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
