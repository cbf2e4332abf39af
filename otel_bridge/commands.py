"""CLI sub-commands over the analytics: ``runs``, ``costs``, ``latency``, ``diff``, ``prices check``, ``prices sync``,
``schema print`` (``prices show`` and ``prices update`` live in ``price_commands``).

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

from otel_bridge import price_commands
from otel_bridge.analytics import queries
from otel_bridge.analytics.price_sync import INTERVAL_S, sync_prices
from otel_bridge.analytics.schema import render_ddl
from otel_bridge.analytics.store import DEFAULT_DATA_DIR, Store, StoreConfig, StoreError
from otel_bridge.analytics.totals import TOTAL_FILTERS
from otel_bridge.client import ServerClient
from otel_bridge.config import ClientTLS
from otel_bridge.price_library import snapshot_path
from otel_bridge.pricing import PriceError, PriceTable
from otel_bridge.tls import clickhouse_options, client_context

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
    g.add_argument(
        "--config", help="bridge YAML: its data_dir, and its http listener's tls.cert_file to verify the running server"
    )
    g.add_argument(
        "--ca-file",
        help="CA that signed the server's certificate (https `otel-bridge serve`, or ClickHouse with --secure)",
    )
    g.add_argument("--cert-file", help="client certificate, for a server that requires mutual TLS")
    g.add_argument("--key-file", help="the client certificate's private key")
    g.add_argument("--prices", help="prices.yaml (default: the packaged table)")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print a JSON array with every value in full")
    g.add_argument("--wide", action="store_true", help="every column, not only those that fit 120 characters")
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
    g = p.add_argument_group("run totals (the run and everything below it)")
    g.add_argument("--min-total-cost", type=float, help="USD")
    g.add_argument("--max-total-cost", type=float, help="USD")
    g.add_argument("--min-total-tokens", type=float)
    g.add_argument("--max-total-tokens", type=float)
    g.add_argument("--min-llm-calls", type=int)
    g.add_argument("--min-tool-calls", type=int)
    g.add_argument("--min-errors", type=int)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--order", default="-start_time",
                   help="start_time, latency_s, cost, total_cost, total_tokens, llm_calls, prompt_tokens or "
                   "completion_tokens; prefix - for descending (default -start_time)")  # fmt: skip
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
    p = prices.add_parser(
        "sync", parents=[conn], help="write the price rows of every model seen to model_prices (Grafana)"
    )
    p.set_defaults(func=_prices_sync)
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
        **{k: getattr(a, k) for k in TOTAL_FILTERS},
    }  # fmt: skip


def _runs(store: Store, prices: PriceTable, a: argparse.Namespace) -> list[dict[str, Any]]:
    return queries.runs(store, prices, limit=a.limit, offset=a.offset, order=a.order, **_run_filters(a))


def _runs_params(a: argparse.Namespace) -> dict[str, Any]:
    return {**_run_filters(a), "limit": a.limit, "offset": a.offset, "order": a.order}


def _tls_from_config(a: argparse.Namespace) -> None:
    """``--config``: fill what the flags left unset from the file: the data dir, and the http listener's own
    certificate as the one to trust (the CLI runs where ``serve`` runs: it finds it through the data dir)."""
    if not getattr(a, "config", None):
        return
    from otel_bridge.config import load_config

    cfg = load_config(a.config)
    a.data_dir = a.data_dir or cfg.exporters.clickhouse.data_dir
    listener = cfg.receivers.otlp.protocols.http.tls
    a.ca_file = a.ca_file or (listener.cert_file if listener else None)


def _client_tls(a: argparse.Namespace) -> ClientTLS:
    return ClientTLS(ca_file=a.ca_file or "", cert_file=a.cert_file or "", key_file=a.key_file or "")


def store_config(a: argparse.Namespace) -> StoreConfig:
    password = os.environ.get(a.password_env, "")
    tls = clickhouse_options(_client_tls(a), "tls", password=bool(password)) if a.secure and a.host else {}
    return StoreConfig(
        data_dir=a.data_dir,
        host=a.host,
        port=a.port,
        username=a.username,
        password=password,
        database=a.database,
        secure=a.secure,
        tls=tls,
    )


def _with_store(
    query: Callable[[Store, PriceTable, argparse.Namespace], list[dict[str, Any]]],
    path: str,
    params: Callable[[argparse.Namespace], dict[str, Any]],
) -> Callable:
    """Ask the running server's HTTP API when one serves this data dir (it owns the chDB directory); otherwise
    open the store and price table and run the query here. Errors are one line on stderr, exit code 2."""

    def run(a: argparse.Namespace) -> int:
        kind = a.command + (" check" if a.command == "prices" else "")
        try:
            _tls_from_config(a)
            verify = client_context(_client_tls(a), "tls")
            server = ServerClient.find(a.data_dir, verify=verify) if a.host is None and a.prices is None else None
            with working(f"{kind}: asking the server" if server else f"{kind}: opening the store"):
                rows = _fetch(server, query, path, params, a)
        except (StoreError, PriceError, ValueError, OSError) as exc:
            print(f"otel-bridge {a.command}: {exc}", file=sys.stderr)
            return 2
        emit(rows, a.json, title=_title(kind, rows), kind=kind, wide=a.wide)
        return 0

    return run


def _fetch(server: ServerClient | None, query: Callable, path: str, params: Callable, a: argparse.Namespace) -> Any:
    if server is not None:
        logger.debug("asking the running server at %s", server.url)
        try:
            return server.get(path, params(a))
        finally:
            server.close()
    prices = PriceTable.load(a.prices, snapshot=snapshot_path(a.data_dir))
    with Store.open(store_config(a)) as store:
        if a.prices is None:  # the configured table, as `serve` would write it; a what-if --prices writes nothing
            _sync_quietly(store, prices)
        return query(store, prices, a)


def _sync_quietly(store: Store, prices: PriceTable) -> None:
    """Keep model_prices (what Grafana joins) current for the models seen; a read-only user just can't."""
    try:
        sync_prices(store, prices)
    except Exception as exc:  # noqa: BLE001 - the query the user asked for still runs
        logger.warning("model_prices not updated: %s", exc)


def _prices_sync(a: argparse.Namespace) -> int:
    """``prices sync``: open the store and write what differs. A running server owns the chDB directory and its
    table already: it syncs at start and writes new models as they appear."""
    try:
        _tls_from_config(a)
        server = ServerClient.find(a.data_dir, verify=client_context(_client_tls(a), "tls")) if a.host is None else None
        if server is not None:
            server.close()
            print(f"otel-bridge prices sync: the server at {server.url} owns this data dir and keeps model_prices in "
                  f"sync with its price table (at start, new models within {INTERVAL_S:.0f} s); restart it to apply "
                  "a price edit", file=sys.stderr)  # fmt: skip
            return 0 if a.prices is None else 2
        prices = PriceTable.load(a.prices, snapshot=snapshot_path(a.data_dir))
        with working("prices sync: opening the store"), Store.open(store_config(a)) as store:
            rows = sync_prices(store, prices)
    except (StoreError, PriceError, ValueError, OSError) as exc:
        print(f"otel-bridge prices sync: {exc}", file=sys.stderr)
        return 2
    emit(rows, a.json, title=f"model_prices: {len(rows)} model(s) written (the rest were current)", wide=a.wide)
    return 0


def working(message: str) -> Any:
    """A spinner on stderr while something may take a second or more (chDB start-up, a big query);
    nothing at all when stderr is not a terminal, so pipes and tests see only the table."""
    from rich.console import Console

    return Console(stderr=True).status(message, spinner="dots")


_TITLES = {
    "runs": "runs (tokens and cost: the run and everything below it)",
    "costs": "cost at current prices",
    "latency": "latency",
    "diff": "release diff",
    "prices check": "models seen and what priced them (unpriced calls cost $0)",
}


def _title(kind: str, rows: list) -> str:
    return f"{_TITLES.get(kind, kind)} · {len(rows)} row{'s' if len(rows) != 1 else ''}"


def _schema_print(a: argparse.Namespace) -> int:
    for stmt in render_ddl(a.cluster, a.database, a.ttl_days, a.text_ttl_days):
        print(stmt.rstrip() + ";\n")
    return 0


def emit(rows: list[dict[str, Any]], as_json: bool, title: str = "", *, kind: str = "", wide: bool = False) -> None:
    """``--json``: the rows as the query returned them; otherwise a table of human numbers (``tables``)."""
    if as_json:
        sys.stdout.write(orjson.dumps(rows, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from otel_bridge.tables import print_table

    print_table(rows, kind, wide=wide, title=title or None)
