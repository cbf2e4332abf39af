"""CLI sub-commands over the analytics: ``runs``, ``costs``, ``latency``, ``diff``, ``prices check``, ``schema print``
(``prices show`` and ``prices update`` live in ``price_commands``).

``cli.py`` calls ``register(subparsers)`` and then ``args.func(args)``. Output is a rich table, or with ``--json`` a
JSON array of objects with the same keys as the query functions return. The password is read from an environment
variable (named by ``--password-env``), never from the command line, so it does not land in shell history or ps.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from otel_bridge.analytics import queries
from otel_bridge.analytics.schema import render_ddl
from otel_bridge.analytics.store import DEFAULT_DATA_DIR, Store, StoreConfig, StoreError
from otel_bridge.client import ServerClient
from otel_bridge import price_commands
from otel_bridge.price_library import snapshot_path
from otel_bridge.pricing import PriceError, PriceTable

logger = logging.getLogger(__name__)

PASSWORD_ENV = "OTEL_BRIDGE_CLICKHOUSE_PASSWORD"


def _connection_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--data-dir", default=None, help=f"embedded chDB directory (default {DEFAULT_DATA_DIR})")
    g.add_argument("--host", help="ClickHouse server host (instead of the embedded chDB)")
    g.add_argument("--port", type=int, help="HTTP(S) port (default 8123, or 8443 with --secure)")
    g.add_argument("--username", default="default")
    g.add_argument("--password-env", default=PASSWORD_ENV, help=f"env var holding the password ({PASSWORD_ENV})")
    g.add_argument("--database", default="otel_bridge")
    g.add_argument("--secure", action="store_true", help="HTTPS to the server")
    g.add_argument("--prices", help="prices.yaml (default: the packaged table)")
    g.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    return p


def register(subparsers: Any) -> None:
    """Add the analytics sub-commands to the ``otel-bridge`` parser."""
    conn = _connection_parent()
    p = subparsers.add_parser("runs", parents=[conn], help="list runs (every agent/LLM/tool span) with filters")
    p.add_argument("--status", choices=("success", "error", "started"))
    p.add_argument("--model", help="exact model name")
    p.add_argument("--agent", help="exact agent name")
    p.add_argument("--min-latency-s", type=float)
    p.add_argument("--max-latency-s", type=float)
    p.add_argument("--min-cost", type=float, help="USD")
    p.add_argument("--max-cost", type=float, help="USD")
    p.add_argument("--tags", action="append", help="any-of; repeat or comma-separate")
    p.add_argument("--user-email")
    p.add_argument("--from", dest="from_", help="ISO timestamp, inclusive")
    p.add_argument("--to", help="ISO timestamp, inclusive")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--order", default="-start_time", help="start_time|latency_s|cost|prompt_tokens|completion_tokens")
    p.set_defaults(func=_with_store(_runs, "/api/run/", _runs_params))

    p = subparsers.add_parser("costs", parents=[conn], help="cost and tokens at current prices")
    p.add_argument("--by", default="model", choices=("model", "provider", "agent", "service", "release", "day"))
    p.add_argument("--from", dest="from_")
    p.add_argument("--to")
    p.set_defaults(
        func=_with_store(
            lambda s, pr, a: queries.costs(s, pr, by=a.by, from_=a.from_, to=a.to),
            "/api/costs",
            lambda a: {"group_by": a.by, "from": a.from_, "to": a.to},
        )
    )

    p = subparsers.add_parser("latency", parents=[conn], help="count, error rate, p50/p90/p95/p99 (ms)")
    p.add_argument("--by", default="model", choices=("model", "agent", "kind", "release"))
    p.add_argument("--kind", help="only spans of this kind (llm, tool, agent…)")
    p.add_argument("--from", dest="from_")
    p.add_argument("--to")
    p.set_defaults(
        func=_with_store(
            lambda s, pr, a: queries.latency(s, a.by, a.from_, a.to, a.kind),
            "/api/latency",
            lambda a: {"group_by": a.by, "kind": a.kind, "from": a.from_, "to": a.to},
        )
    )

    p = subparsers.add_parser("diff", parents=[conn], help="baseline vs candidate release over runs")
    p.add_argument("baseline", help="release_id or service.version")
    p.add_argument("candidate", help="release_id or service.version")
    p.set_defaults(
        func=_with_store(
            lambda s, pr, a: queries.diff(s, pr, a.baseline, a.candidate),
            "/api/diff",
            lambda a: {"baseline": a.baseline, "candidate": a.candidate},
        )
    )

    prices = subparsers.add_parser("prices", help="price table tools").add_subparsers(dest="prices_cmd", required=True)
    p = prices.add_parser("check", parents=[conn], help="each model seen and its source: override, library, unpriced")
    p.set_defaults(func=_with_store(lambda s, pr, a: queries.prices_check(s, pr), "/api/prices/check", lambda a: {}))
    price_commands.register(prices)

    schema = subparsers.add_parser("schema", help="ClickHouse schema").add_subparsers(dest="schema_cmd", required=True)
    p = schema.add_parser("print", help="print the DDL (nothing is executed)")
    p.add_argument("--cluster", help="render ON CLUSTER / Replicated / Distributed DDL for this cluster")
    p.add_argument("--database", default="otel_bridge")
    p.add_argument("--ttl-days", type=int, default=90)
    p.add_argument("--text-ttl-days", type=int)
    p.set_defaults(func=_schema_print)


def _run_filters(a: argparse.Namespace) -> dict[str, Any]:
    tags = [t.strip() for group in a.tags or [] for t in group.split(",") if t.strip()]
    return {
        "status": a.status, "model": a.model, "agent": a.agent, "min_latency_s": a.min_latency_s,
        "max_latency_s": a.max_latency_s, "min_cost": a.min_cost, "max_cost": a.max_cost, "tags": tags or None,
        "user_email": a.user_email, "from": a.from_, "to": a.to,
    }  # fmt: skip


def _runs(store: Store, prices: PriceTable, a: argparse.Namespace) -> list[dict[str, Any]]:
    return queries.runs(store, prices, limit=a.limit, offset=a.offset, order=a.order, **_run_filters(a))


def _runs_params(a: argparse.Namespace) -> dict[str, Any]:
    return {**_run_filters(a), "limit": a.limit, "offset": a.offset, "order": a.order}


def store_config(a: argparse.Namespace) -> StoreConfig:
    return StoreConfig(
        data_dir=a.data_dir,
        host=a.host,
        port=a.port,
        username=a.username,
        password=os.environ.get(a.password_env, ""),
        database=a.database,
        secure=a.secure,
    )


def _with_store(
    query: Callable[[Store, PriceTable, argparse.Namespace], list[dict[str, Any]]],
    path: str,
    params: Callable[[argparse.Namespace], dict[str, Any]],
) -> Callable:
    """Ask the running server's HTTP API when one serves this data dir (it owns the chDB directory); otherwise
    open the store and price table and run the query here. Errors are one line on stderr, exit code 2."""

    def run(a: argparse.Namespace) -> int:
        server = ServerClient.find(a.data_dir) if a.host is None and a.prices is None else None
        try:
            if server is not None:
                logger.debug("asking the running server at %s", server.url)
                try:
                    rows = server.get(path, params(a))
                finally:
                    server.close()
            else:
                prices = PriceTable.load(a.prices, snapshot=snapshot_path(a.data_dir))
                with Store.open(store_config(a)) as store:
                    rows = query(store, prices, a)
        except (StoreError, PriceError, ValueError, OSError) as exc:
            print(f"otel-bridge {a.command}: {exc}", file=sys.stderr)
            return 2
        emit(rows, a.json, title=a.command)
        return 0

    return run


def _schema_print(a: argparse.Namespace) -> int:
    for stmt in render_ddl(a.cluster, a.database, a.ttl_days, a.text_ttl_days):
        print(stmt.rstrip() + ";\n")
    return 0


def emit(rows: list[dict[str, Any]], as_json: bool, title: str = "") -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for key in rows[0] if rows else ["(no rows)"]:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped: don't squeeze to 80 columns


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
