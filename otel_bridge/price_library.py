"""Default prices: genai-prices' data (https://github.com/pydantic/genai-prices), flattened into price rows.

The library's own lookup (its match rules, provider fallbacks) finds the model; its own ``ModelInfo.get_prices``
says which prices are in force. What we add is the flattening: a model's prices become a complete grid of rows over

- date epochs: ``StartDateConstraint`` applies from 00:00 UTC of its start date (``request.date() >= start_date``);
- time-of-day slots: ``TimeOfDateConstraint`` windows (DeepSeek's off-peak hours), as ns since 00:00 UTC;
- input tiers: ``TieredPrices`` apply to *all* tokens once total input tokens (cache reads and writes included)
  exceed the tier start, so a row with ``tier_from = t`` applies when ``input_tokens > t`` (base row: -1).

Each grid cell is evaluated by the library itself at a representative instant, so ClickHouse picks among plain
numbers. Per-token prices by kind follow the library's unit tree for the usage a span carries: cache reads and
writes are parts of input and fall back to the input price when a model has no price of their own; reasoning is
part of output likewise; ``requests_kcount`` is a fee per call. Service-tier and batch variants (``price_variants``)
need a request context spans don't carry: the standard price applies.

No network at run time: the bundled snapshot, or the file that ``otel-bridge prices update`` wrote.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from genai_prices import __version__ as GENAI_PRICES_VERSION  # noqa: N812
from genai_prices import types as gp
from genai_prices.data_snapshot import DataSnapshot

logger = logging.getLogger(__name__)

NS = 1_000_000_000
DAY_NS = 86_400 * NS
SNAPSHOT_FILE = "genai-prices.json"
DEFAULT_SNAPSHOT = f"./.otel-bridge/{SNAPSHOT_FILE}"  # beside the default chDB data dir
UPDATE_URL = "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"

# GenAI registry `gen_ai.provider.name` values (what the recogniser emits) → genai-prices provider ids.
# Anything else is handed to the library's own provider matching (its ids and `provider_match` rules).
PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "x_ai": "x-ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "moonshotai": "moonshotai",
}
# price keys → our kinds; anything else (web searches, audio, images…) has no usage on a span and costs 0
KINDS = {
    "input_mtok": "input",
    "cache_read_mtok": "cached_input",
    "cache_write_mtok": "cache_write",
    "output_mtok": "output",
    "output_reasoning_mtok": "reasoning",
    "requests_kcount": "request",
}


@dataclass(frozen=True, slots=True)
class PriceRow:
    """Prices (USD per 1M tokens; ``request`` USD per call) of one grid cell: in force from ``effective_from_ns``,
    from ``tod_from_ns`` into the UTC day, for prompts whose total input tokens exceed ``tier_from``."""

    model: str
    provider: str
    input: float
    output: float
    cached_input: float
    cache_write: float
    reasoning: float
    effective_from_ns: int = 0
    tod_from_ns: int = 0
    tier_from: int = -1
    request: float = 0.0
    source: str = "override"
    match: str = ""

    @property
    def sort_key(self) -> tuple[int, int, int]:
        return (self.effective_from_ns, self.tod_from_ns, self.tier_from)

    def cost(
        self, input_tokens: int, cached: int = 0, cache_write: int = 0, output_tokens: int = 0, reasoning: int = 0
    ) -> float:
        """USD for inclusive counts; the uncached/non-reasoning parts are clamped at 0 for inconsistent spans."""
        uncached = max(0, input_tokens - cached - cache_write)
        plain_out = max(0, output_tokens - reasoning)
        per_token = (
            uncached * self.input
            + cached * self.cached_input
            + cache_write * self.cache_write
            + plain_out * self.output
            + reasoning * self.reasoning
        )
        return per_token / 1_000_000 + self.request


def select(rows: list[PriceRow], at_ns: int | None, input_tokens: int = 0) -> PriceRow | None:
    """The row in force: the last (rows sorted by ``sort_key``) whose date, time of day and tier all apply.

    Each model's rows form a complete grid, so the last match is the latest epoch, then slot, then tier — the
    same rule the SQL applies with ``arrayLastIndex``. ``at_ns`` None means now.
    """
    at = at_ns if at_ns is not None else int(datetime.now(UTC).timestamp() * NS)
    tod = at % DAY_NS
    hit = None
    for row in rows:
        if row.effective_from_ns <= at and row.tod_from_ns <= tod and row.tier_from < input_tokens:
            hit = row
    return hit


@dataclass
class Library:
    """One genai-prices snapshot: lookups and flattened rows, both cached per name seen."""

    providers: list[gp.Provider]
    label: str
    _snapshot: DataSnapshot = field(init=False, repr=False)
    _found: dict[tuple[str | None, str], tuple[str, gp.ModelInfo] | None] = field(default_factory=dict, repr=False)
    _rows: dict[tuple[str, str], list[PriceRow]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._snapshot = DataSnapshot(providers=self.providers, from_auto_update=False)

    @property
    def model_count(self) -> int:
        return sum(len(p.models) for p in self.providers)

    def find(self, provider: str | None, model: str) -> tuple[str, gp.ModelInfo] | None:
        """(provider id, model) by the library's rules: the span's provider first, then the model name alone;
        a ``prefix/`` (``models/…``, ``openai/…``) is tried stripped when the full name matches nothing."""
        key = (provider, model)
        if key not in self._found:
            self._found[key] = self._find(provider, model)
        return self._found[key]

    def _find(self, provider: str | None, model: str) -> tuple[str, gp.ModelInfo] | None:
        pid = PROVIDER_IDS.get(provider or "", provider or None)
        prefix, _, rest = model.rpartition("/")
        attempts = [(pid, model)]
        if prefix:
            attempts += [(pid, rest), (PROVIDER_IDS.get(prefix.split("/")[-1], prefix.split("/")[-1]), rest)]
        attempts += [(None, model)] + ([(None, rest)] if prefix else [])
        for provider_id, ref in dict.fromkeys(attempts):
            try:
                found, info = self._snapshot.find_provider_model(ref, None, provider_id, None)
            except LookupError:
                continue
            return found.id, info
        return None

    def rows(self, provider_id: str, info: gp.ModelInfo) -> list[PriceRow]:
        key = (provider_id, info.id)
        if key not in self._rows:
            self._rows[key] = flatten(provider_id, info)
        return self._rows[key]


def flatten(provider_id: str, info: gp.ModelInfo) -> list[PriceRow]:
    """A model's prices as a complete (epoch × time-of-day slot × tier) grid, repeated cells merged."""
    conds = info.prices if isinstance(info.prices, list) else [gp.ConditionalPrice(prices=info.prices)]
    epochs = sorted({0} | {_midnight_ns(c.constraint.start_date) for c in conds if _is(c, gp.StartDateConstraint)})
    windows = [c.constraint for c in conds if _is(c, gp.TimeOfDateConstraint)]
    slots = sorted({0} | {_tod_ns(w.start_time) for w in windows} | {_tod_ns(w.end_time) for w in windows})
    tiered = [v for c in conds for v in c.prices.__dict__.values() if isinstance(v, gp.TieredPrices)]
    tiers = sorted({-1} | {t.start for v in tiered for t in v.tiers})
    grid = {(e, d): [_kinds(info.get_prices(_instant(e + d)), t) for t in tiers] for e in epochs for d in slots}
    if all(grid[(e, d)] == grid[(e, 0)] for e in epochs for d in slots):
        slots = [0]  # prices never depend on the time of day
    match = render_match(info.match)
    rows: list[PriceRow] = []
    previous = None
    for e in epochs:
        cells = [grid[(e, d)] for d in slots]
        if cells == previous:
            continue  # same prices as the epoch before: no new rows
        previous = cells
        for d, column in zip(slots, cells, strict=True):
            for t, kinds in zip(tiers, column, strict=True):
                rows.append(PriceRow(model=info.id, provider=provider_id, effective_from_ns=e, tod_from_ns=d,
                                     tier_from=t, source="library", match=match, **kinds))  # fmt: skip
    return rows


def _is(cond: gp.ConditionalPrice, kind: type) -> bool:
    return isinstance(cond.constraint, kind)


def _kinds(price: gp.ModelPrice, tier_from: int) -> dict[str, float]:
    """Per-kind prices for prompts of ``tier_from + 1`` input tokens (the library's tier rule: input > start)."""
    raw = {kind: _at_tier(price.__dict__.get(key), tier_from + 1) for key, kind in KINDS.items()}
    inp = raw["input"] if raw["input"] is not None else Decimal(0)
    out = raw["output"] if raw["output"] is not None else Decimal(0)
    pick = {
        "input": inp,
        "cached_input": raw["cached_input"] if raw["cached_input"] is not None else inp,
        "cache_write": raw["cache_write"] if raw["cache_write"] is not None else inp,
        "output": out,
        "reasoning": raw["reasoning"] if raw["reasoning"] is not None else out,
        "request": (raw["request"] or Decimal(0)) / 1000,
    }
    return {k: float(v) for k, v in pick.items()}


def _at_tier(value: Any, input_tokens: int) -> Decimal | None:
    if isinstance(value, gp.TieredPrices):
        for tier in reversed(value.tiers):
            if input_tokens > tier.start:
                return tier.price
        return value.base
    return value


def _midnight_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * NS


def _tod_ns(value: time) -> int:
    """A time of day (naive = UTC) → ns since 00:00 UTC, as the library compares it."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    utc = datetime.combine(date(1970, 1, 2), aware).astimezone(UTC)
    return ((utc.hour * 3600 + utc.minute * 60 + utc.second) * 1_000_000 + utc.microsecond) * 1000


def _instant(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS, UTC).replace(microsecond=(ns % NS) // 1000)


def render_match(clause: Any) -> str:
    """A match rule as one line: ``= 'o3' or = 'o3-2025-04-16'``."""
    for attr, op in (("equals", "="), ("starts_with", "starts with"), ("ends_with", "ends with"),
                     ("contains", "contains"), ("regex", "regex")):  # fmt: skip
        if hasattr(clause, attr):
            return f"{op} {getattr(clause, attr)!r}"
    if isinstance(clause, gp.ClauseOr):
        return " or ".join(render_match(c) for c in clause.or_)
    if isinstance(clause, gp.ClauseAnd):
        return " and ".join(f"({render_match(c)})" for c in clause.and_)
    return repr(clause)


@cache
def bundled() -> Library:
    from genai_prices.data import providers  # ~1.5 s to import: only when prices are first needed

    return Library(list(providers), f"genai-prices {GENAI_PRICES_VERSION} bundled snapshot")


def load(snapshot: str | os.PathLike | None = None) -> Library:
    """The snapshot file ``prices update`` wrote, when it exists; else the bundled snapshot."""
    path = Path(snapshot if snapshot is not None else DEFAULT_SNAPSHOT)
    if not path.is_file():
        return bundled()
    return _load_file(str(path.resolve()), path.stat().st_mtime_ns)


@cache
def _load_file(path: str, mtime_ns: int) -> Library:
    stamp = datetime.fromtimestamp(mtime_ns / NS, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Library(parse(Path(path).read_bytes()), f"{path} (fetched {stamp})")


def parse(raw: bytes) -> list[gp.Provider]:
    """genai-prices' JSON data (a provider array) → providers, validated as the library's updater does."""
    from genai_prices.types import _providers_from_raw  # what UpdatePrices.fetch uses

    payload = json.loads(raw)
    if not isinstance(payload, list):
        raise ValueError("expected a JSON array of providers")
    return _providers_from_raw(payload)


def update(out: str | os.PathLike | None = None, url: str = UPDATE_URL, timeout: float = 30.0) -> Library:
    """Fetch fresh data (only ever on a user's ``prices update``), validate it, write it atomically to ``out``."""
    import httpx

    path = Path(out if out is not None else DEFAULT_SNAPSHOT)
    response = httpx.get(url, timeout=timeout, follow_redirects=True)
    response.raise_for_status()
    library = Library(parse(response.content), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(response.content)
    os.replace(tmp, path)
    return library


def snapshot_path(data_dir: str | None) -> str:
    """Where ``prices update`` writes and the next start reads: beside the chDB data directory."""
    if not data_dir:
        return DEFAULT_SNAPSHOT
    return str(Path(data_dir).expanduser().parent / SNAPSHOT_FILE)
