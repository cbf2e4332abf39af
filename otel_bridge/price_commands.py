"""``otel-bridge prices show MODEL`` and ``otel-bridge prices update``: the price table without a store.

``show`` prints every row that can apply to a model (its date epochs, time-of-day slots and long-context tiers)
and marks the one in force for ``--at`` / ``--input-tokens``. ``update`` is the only code that fetches prices:
a user runs it, it writes genai-prices' current data beside the data directory, and the next start (``serve``,
any CLI query) reads that file instead of the bundled snapshot. Nothing fetches at run time.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import httpx

from otel_bridge import price_library
from otel_bridge.price_library import DAY_NS, NS, PriceRow, select, snapshot_path
from otel_bridge.pricing import Priced, PriceError, PriceTable


def register(prices: Any) -> None:
    """Add ``show`` and ``update`` to the ``prices`` sub-command group."""
    p = prices.add_parser("show", help="the price rows that apply to a model, with their dates and tiers")
    p.add_argument("model", help="model name as spans carry it (gen_ai.response.model)")
    p.add_argument("--provider", help="gen_ai.provider.name (openai, gcp.gemini, aws.bedrock…); default: by name")
    p.add_argument("--at", help="ISO timestamp for the row in force (default: now)")
    p.add_argument("--input-tokens", type=int, default=0, help="prompt size for the tier in force")
    _table_args(p)
    p.set_defaults(func=_show)

    p = prices.add_parser("update", help="fetch genai-prices' current data into a local file (the next start uses it)")
    p.add_argument("--url", default=price_library.UPDATE_URL, help="where to fetch the JSON data from")
    p.add_argument("--out", help="file to write (default: genai-prices.json beside the data dir)")
    p.add_argument("--data-dir", default=None, help="embedded chDB directory the file goes beside")
    p.set_defaults(func=_update)


def _table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prices", help="prices.yaml overrides (default: the packaged file)")
    p.add_argument("--data-dir", default=None, help="data dir whose `prices update` file to use")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")


def _show(a: argparse.Namespace) -> int:
    from otel_bridge.commands import emit

    try:
        table = PriceTable.load(a.prices, snapshot=snapshot_path(a.data_dir))
        at_ns = _to_ns(a.at) if a.at else int(datetime.now(UTC).timestamp() * NS)
    except (PriceError, ValueError, OSError) as exc:
        print(f"otel-bridge prices show: {exc}", file=sys.stderr)
        return 2
    priced = table.resolve(a.model, a.provider)
    if priced is None:
        print(f"{a.model}: unpriced — no override in {table.path} and no match in {_label(table)}", file=sys.stderr)
        return 1
    rows = show_rows(priced, at_ns, a.input_tokens)
    if not a.json:
        where = table.path if priced.source == "override" else _label(table)
        print(f"{a.model} → {priced.provider}/{priced.model} ({priced.source}: {where}); match: {rows[0]['match']}")
        rows = [{k: v for k, v in row.items() if k != "match"} for row in rows]
    emit(rows, a.json, title=f"prices of {a.model}", kind="prices show")
    return 0


def show_rows(priced: Priced, at_ns: int, input_tokens: int = 0) -> list[dict[str, Any]]:
    """One dict per row; ``in_force`` marks the row that prices a call at ``at_ns`` with that prompt size."""
    current = select(priced.rows, at_ns, input_tokens)
    return [_describe(row, row is current) for row in sorted(priced.rows, key=lambda r: r.sort_key)]


def _describe(row: PriceRow, in_force: bool) -> dict[str, Any]:
    return {
        "in_force": "*" if in_force else "",
        "source": row.source,
        "provider": row.provider,
        "model": row.model,
        "effective_from": _iso(row.effective_from_ns) if row.effective_from_ns else "always",
        "time_of_day_from": _tod(row.tod_from_ns) if row.tod_from_ns else "",
        "tier": f"input > {row.tier_from:,}" if row.tier_from >= 0 else "",
        "input": row.input,
        "cached_input": row.cached_input,
        "cache_write": row.cache_write,
        "output": row.output,
        "reasoning": row.reasoning,
        "per_call": row.request,
        "match": row.match,
    }


def _update(a: argparse.Namespace) -> int:
    out = a.out or snapshot_path(a.data_dir)
    try:
        library = price_library.update(out, a.url)
    except (httpx.HTTPError, ValueError, OSError) as exc:
        print(f"otel-bridge prices update: {a.url}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {len(library.providers)} providers, {library.model_count} models (the next start uses it)")
    return 0


def _label(table: PriceTable) -> str:
    return table.library.label if table.library is not None else "no library"


def _to_ns(value: str) -> int:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


def _iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // NS, UTC)
    return dt.strftime("%Y-%m-%d") if ns % DAY_NS == 0 else dt.isoformat().replace("+00:00", "Z")


def _tod(ns: int) -> str:
    seconds = ns // NS
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d} UTC"
