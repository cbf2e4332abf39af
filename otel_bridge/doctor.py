"""``otel-bridge doctor``: checks a set-up end to end and says what to fix.

Config → ports → ClickHouse → each exporter's endpoint and auth → spool and dead letters → unpriced models.
Each check is one line (ok / warn / fail) with, when not ok, the one thing to do about it. Nothing is changed and
nothing is sent that a server would keep: the exporter probe posts an empty batch (``{"events": []}``), which a server refuses (400/422) after authentication
or accepts as nothing.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from otel_bridge.client import ServerClient

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor", help="check config, ports, storage, exporters, spool and prices; says what to fix"
    )
    p.add_argument("--config", help="bridge YAML (default: the packaged config/bridge.yaml)")
    p.add_argument("--data-dir", help="embedded chDB directory (default: the config's)")
    p.add_argument("--json", action="store_true", help="the checks as a JSON array")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per network probe (default 5)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from otel_bridge.config import ConfigError, load_config

    try:
        cfg = load_config(a.config, data_dir=a.data_dir)
    except ConfigError as exc:
        checks = [
            Check(
                "config",
                FAIL,
                str(exc).strip(),
                f"fix the lines above; re-check with: otel-bridge config check {a.config or ''}".strip(),
            )
        ]
    else:
        checks = list(_with_progress(_checks(cfg, a), a.json))
    _report(checks, a.json)
    return 1 if any(c.status == FAIL for c in checks) else 0


def _checks(cfg: Any, a: argparse.Namespace) -> list[Callable[[], list[Check]]]:
    server = ServerClient.find(cfg.exporters.clickhouse.data_dir)
    steps: list[Callable[[], list[Check]]] = [
        lambda: [
            Check(
                "config",
                OK,
                f"{a.config or 'packaged config'} is valid; exporters on: {', '.join(cfg.enabled_exporters())}",
            )
        ],
        lambda: _ports(cfg, server),
        lambda: _clickhouse(cfg, server),
    ]
    for name in ("observatory", "flightdeck"):
        steps.append(lambda name=name: _exporter(cfg, name, a.timeout))
    steps += [lambda: _spool(cfg, server), lambda: _dead_letters(cfg), lambda: _unpriced(cfg, server)]
    return steps


def _with_progress(steps: list[Callable[[], list[Check]]], quiet: bool) -> Iterator[Check]:
    """A progress bar on stderr (probes may wait for timeouts); hidden when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=quiet) as progress:
        task = progress.add_task("checking", total=len(steps))
        for step in steps:
            yield from step()
            progress.advance(task)


def _ports(cfg: Any, server: ServerClient | None) -> list[Check]:
    from otel_bridge.config import split_endpoint

    protocols = cfg.receivers.otlp.protocols
    out = []
    for proto, key in ((protocols.grpc, "grpc"), (protocols.http, "http")):
        if proto is None:
            continue
        host, port = split_endpoint(proto.endpoint)
        name = f"port {key}"
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.bind((host, port))
            out.append(Check(name, OK, f"{proto.endpoint} is free"))
        except OSError as exc:
            if server is not None:
                out.append(Check(name, OK, f"{proto.endpoint} is served by the running otel-bridge ({server.url})"))
            else:
                out.append(Check(name, FAIL, f"cannot bind {proto.endpoint}: {exc.strerror or exc}",
                                 f"stop what holds it, or change receivers.otlp.protocols.{key}.endpoint"))  # fmt: skip
    return out


def _clickhouse(cfg: Any, server: ServerClient | None) -> list[Check]:
    from otel_bridge.analytics.store import Store, StoreError, StoreInUseError
    from otel_bridge.pipeline import store_config

    ch = cfg.exporters.clickhouse
    where = f"{ch.host}:{ch.port}" if ch.host else f"chdb {ch.data_dir}"
    if server is not None and ch.embedded:
        return [Check("clickhouse", OK, f"{where} is owned by the running server; queries go through {server.url}")]
    try:
        with Store.open(store_config(cfg)) as store:
            n = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows[0][0]
    except StoreInUseError as exc:
        return [
            Check(
                "clickhouse", FAIL, str(exc), "stop the other process using the data dir, or point data_dir elsewhere"
            )
        ]
    except (StoreError, OSError, httpx.HTTPError) as exc:
        fix = (
            "check exporters.clickhouse host, port, username and OTEL_BRIDGE_CLICKHOUSE_PASSWORD"
            if ch.host
            else "check that data_dir is writable"
        )
        return [Check("clickhouse", FAIL, f"{where}: {exc}", fix)]
    return [Check("clickhouse", OK, f"{where}: connected, {n:,} span rows")]


_PATHS = {"observatory": "/api/report", "flightdeck": "/v1/events"}
_SECRETS = {"observatory": ("api_key_value", "api_key"), "flightdeck": ("token_value", "token")}


def _exporter(cfg: Any, name: str, timeout: float) -> list[Check]:
    """POST an empty batch: a refusal of the credentials is 401/403, a wrong URL 404 or no answer."""
    exp = getattr(cfg.exporters, name)
    check = f"exporter {name}"
    if name not in cfg.service.pipelines.traces.exporters or not exp.url:
        return [Check(check, OK, "off (no url set)")]
    attr, key = _SECRETS[name]
    secret = getattr(exp, attr)
    url = exp.url.rstrip("/") + _PATHS[name]
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    try:
        r = httpx.post(
            url, content=b'{"events": []}', headers={"content-type": "application/json", **headers}, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return [
            Check(
                check,
                FAIL,
                f"{url}: unreachable ({type(exc).__name__}: {exc})",
                f"check exporters.{name}.url and that the server runs",
            )
        ]
    if r.status_code in (401, 403):
        how = "wrong" if secret else "missing"
        return [
            Check(
                check,
                FAIL,
                f"{url}: HTTP {r.status_code}, credentials {how}",
                f"set exporters.{name}.{key} (from env, never in the file)",
            )
        ]
    if r.status_code == 404:
        return [
            Check(
                check, FAIL, f"{url}: HTTP 404, nothing there", f"exporters.{name}.url should be the server's base URL"
            )
        ]
    if r.status_code >= 500 or r.status_code not in (200, 202, 204, 400, 422):
        return [
            Check(
                check,
                WARN,
                f"{url}: HTTP {r.status_code}: {_message(r)}",
                "the server is up but refusing; batches will be retried or dead-lettered",
            )
        ]
    if r.status_code in (400, 422):  # the empty probe batch was read and refused: past authentication, unless
        msg = _message(r)  # the server checks the key with the body and says so
        if re.search(r"authori[sz]|token|api.?key|credential|bearer", msg, re.I):
            return [
                Check(
                    check,
                    FAIL,
                    f"{url}: HTTP {r.status_code}, credentials refused: {msg}",
                    f"set exporters.{name}.{key} (from env, never in the file)",
                )
            ]
    return [Check(check, OK, f"{url}: reachable, {'credentials accepted' if secret else 'no credentials needed'}")]


def _message(r: httpx.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return r.text[:200]
    return str(doc.get("detail", doc) if isinstance(doc, dict) else doc)[:200]


def _spool(cfg: Any, server: ServerClient | None) -> list[Check]:
    spool = cfg.receivers.otlp.spool
    if not spool.enabled:
        return [
            Check(
                "spool",
                WARN,
                "off: spans acknowledged but not yet stored are lost in a crash",
                "set receivers.otlp.spool.enabled: true",
            )
        ]
    data_dir = Path(cfg.exporters.clickhouse.data_dir).expanduser().resolve()
    path = data_dir.with_name(data_dir.name + ".spool")
    segments = sorted(path.glob("*")) if path.is_dir() else []
    used = sum(p.stat().st_size for p in segments if p.is_file())
    share = used / spool.max_size if spool.max_size else 0
    detail = f"{path}: {len(segments)} segment(s), {used / 2**20:.1f} MiB of {spool.max_size / 2**20:.0f} MiB"
    if share > 0.8:
        return [
            Check("spool", WARN, detail, "an exporter is falling behind: check its endpoint, or raise spool.max_size")
        ]
    if segments and server is None:
        return [
            Check("spool", WARN, detail + " left by a stopped server", "start otel-bridge serve: it replays them first")
        ]
    return [Check("spool", OK, detail if path.exists() else f"{path} (created at first start)")]


def _dead_letters(cfg: Any) -> list[Check]:
    out = []
    for name in ("observatory", "flightdeck"):
        path = getattr(cfg.exporters, name).dead_letter
        if not path or not Path(path).is_file() or Path(path).stat().st_size == 0:
            out.append(
                Check(f"dead letters {name}", OK, "none" if path else "off (exporters.%s.dead_letter empty)" % name)
            )
            continue
        lines = Path(path).read_bytes().splitlines()
        try:
            last = orjson.loads(lines[-1]).get("error", "")
        except (orjson.JSONDecodeError, AttributeError):
            last = "unreadable line"
        out.append(Check(f"dead letters {name}", WARN, f"{len(lines)} in {path}; latest error: {str(last)[:160]}",
                         "fix what the error says, then re-send the items and move the file aside"))  # fmt: skip
    return out


def _unpriced(cfg: Any, server: ServerClient | None) -> list[Check]:
    from otel_bridge.analytics import queries
    from otel_bridge.analytics.store import Store, StoreError
    from otel_bridge.pipeline import store_config
    from otel_bridge.price_library import snapshot_path
    from otel_bridge.pricing import PriceTable

    try:
        if server is not None:
            rows = server.get("/api/prices/check", {})
        else:
            with Store.open(store_config(cfg)) as store:
                prices = PriceTable.load(snapshot=snapshot_path(cfg.exporters.clickhouse.data_dir))
                rows = queries.prices_check(store, prices)
    except (StoreError, ValueError, OSError, httpx.HTTPError) as exc:
        return [Check("prices", WARN, f"could not list models: {exc}")]
    rows = [r for r in rows if r["source"] == "unpriced"]  # prices check lists every model seen and its source
    if not rows:
        return [Check("prices", OK, "every model seen has a price")]
    names = ", ".join(f"{r['model']} ({r['llm_spans']} calls)" for r in rows[:5]) + (" …" if len(rows) > 5 else "")
    return [Check("prices", WARN, f"{len(rows)} model(s) without a price, their calls cost $0: {names}",
                  "add them to the price table; list them with: otel-bridge prices check")]  # fmt: skip


def _report(checks: list[Check], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps([asdict(c) for c in checks], option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    from otel_bridge.tables import console

    con = console()
    marks = {OK: "[green]✓[/green]", WARN: "[yellow]![/yellow]", FAIL: "[red]✗[/red]"}
    width = max(len(c.name) for c in checks)
    for c in checks:
        con.print(f"{marks[c.status]} {c.name.ljust(width)}  {c.detail}", soft_wrap=False, overflow="fold")
        if c.fix:
            con.print(f"  {' ' * width}  [bold]→ {c.fix}[/bold]")
    fails, warns = sum(c.status == FAIL for c in checks), sum(c.status == WARN for c in checks)
    con.print(f"\n{fails} failed, {warns} warning(s), {len(checks) - fails - warns} ok")
