"""Price table: ``prices.yaml`` overrides over genai-prices' rows, model matching, one LLM call's cost (DESIGN 5).

Two sources, overrides first: ``config/prices.yaml`` (contract prices, fine-tuned and self-hosted models at 0,
models the library lacks; matched by exact name, provider prefix stripped, then longest family) wins over the
genai-prices snapshot (``price_library``: its own match rules, dated prices, time-of-day windows, long-context
tiers). Cost follows FlowX Observatory's rules: only ``llm`` spans that carry tokens, a model and a row in force
cost anything; everything else costs 0 and its model is reported as unpriced. Token counts are inclusive, like
``AgentSpan`` and genai-prices' ``Usage``: input includes cache reads and writes, output includes reasoning, so
each token is charged once.

Analytics never store a cost: they hand ``PriceTable.rows_for`` to ClickHouse at query time, so an edit of
``prices.yaml`` or a ``prices update`` changes every answer at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from otel_bridge import price_library
from otel_bridge.price_library import Library, PriceRow, select

logger = logging.getLogger(__name__)

# What may follow a family name in a versioned model name: `@…`/`:…`, or `-`/`_` then a digit (a date, a version)
# or a release word. Not `-mini`: an override wins over the library, so `gpt-4o` must not capture `gpt-4o-mini`.
_VERSION_SUFFIX = re.compile(r"[@:]|[-_](?:\d|v\d|latest|preview|exp|beta|alpha|rc)")
_VENDOR_PREFIX = re.compile(r"^(?:[a-z]{2}(?:-[a-z]+)?\.)?(?:anthropic|meta|mistral|cohere|amazon|google)\.")
_FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning")


class PriceError(ValueError):
    """The price file is malformed; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class Priced:
    """What a (provider, model) seen in spans resolves to: ``source`` override or library, and its rows."""

    source: str
    provider: str
    model: str
    rows: list[PriceRow]


@dataclass(slots=True)
class PriceTable:
    """Overrides (``prices.yaml``, grouped by canonical model name, sorted by date) over the library's rows."""

    rows: dict[str, list[PriceRow]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # provider → {source, as_of, list_prices}
    path: str | None = None
    library: Library | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, path: str | Path | None = None, *, snapshot: str | Path | None = None, library: bool = True
    ) -> PriceTable:
        """Overrides from a prices.yaml (without a path the packaged ``otel_bridge/config/prices.yaml``) over
        genai-prices: the snapshot file ``prices update`` wrote when it exists, else the bundled one."""
        if path is None:
            text = resources.files("otel_bridge").joinpath("config/prices.yaml").read_text(encoding="utf-8")
            where = "otel_bridge/config/prices.yaml"
        else:
            text, where = Path(path).read_text(encoding="utf-8"), str(path)
        table = cls.from_mapping(yaml.safe_load(text) or {})
        table.path = where
        if library:
            table.library = price_library.load(snapshot)
        return table

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], library: Library | None = None) -> PriceTable:
        """Overrides only, unless a library is given."""
        providers = doc.get("providers")
        if not isinstance(providers, Mapping):
            raise PriceError("providers: must be a mapping of provider → {source, as_of, models}")
        table = cls(library=library)
        for provider, block in providers.items():
            if not isinstance(block, Mapping) or not isinstance(block.get("models"), Mapping):
                raise PriceError(f"providers.{provider}.models: must be a mapping")
            table.sources[provider] = {k: block.get(k) for k in ("source", "as_of", "list_prices")}
            for model, spec in block["models"].items():
                specs = spec if isinstance(spec, list) else [spec]
                group = [_row(str(provider), str(model), s, i) for i, s in enumerate(specs)]
                table.rows[str(model).lower()] = sorted(group, key=lambda r: r.effective_from_ns)
        return table

    # ----------------------------------------------------------------------------------------------- matching
    def family(self, model: str | None) -> str | None:
        """The override a model resolves to: exact, provider prefix stripped, then the longest family followed by
        a version (``claude-sonnet-4-5-20250929`` → claude-sonnet-4-5, ``mistral-large-latest`` → mistral-large)."""
        if not model:
            return None
        name = model.strip().lower()
        for candidate in (name, _strip_provider(name)):
            if candidate in self.rows:
                return candidate
        name = _strip_provider(name)
        best = None
        for fam in self.rows:
            versioned = name.startswith(fam) and _VERSION_SUFFIX.match(name, len(fam))
            if versioned and (best is None or len(fam) > len(best)):
                best = fam
        return best

    def resolve(self, model: str | None, provider: str | None = None) -> Priced | None:
        """Override first (it wins), then the library's match rules; None = unpriced."""
        if not model:
            return None
        fam = self.family(model)
        if fam is not None:
            rows = self.rows[fam]
            return Priced("override", rows[0].provider, fam, rows)
        if self.library is None:
            return None
        found = self.library.find(provider or None, model)
        if found is None:
            return None
        provider_id, info = found
        return Priced("library", provider_id, info.id, self.library.rows(provider_id, info))

    def source(self, model: str | None, provider: str | None = None) -> str:
        priced = self.resolve(model, provider)
        return priced.source if priced else "unpriced"

    def match(
        self, model: str | None, at_ns: int | None = None, provider: str | None = None, input_tokens: int = 0
    ) -> PriceRow | None:
        """The row in force for ``model`` at ``at_ns`` (now when None) for a prompt of ``input_tokens``."""
        priced = self.resolve(model, provider)
        return select(priced.rows, at_ns, input_tokens) if priced else None

    def cost(self, span: Any) -> float:
        """Observatory's rule for one AgentSpan: llm kind, tokens, model and a row — else 0."""
        if span.kind != "llm" or not span.model or not (span.input_tokens or span.output_tokens):
            return 0.0
        row = self.match(span.model, span.span.start_ns, span.provider, span.input_tokens or 0)
        if row is None:
            return 0.0
        return row.cost(
            span.input_tokens or 0,
            span.cached_input_tokens or 0,
            span.cache_write_tokens or 0,
            span.output_tokens or 0,
            span.reasoning_tokens or 0,
        )

    def rows_for(self, pairs: Iterable[tuple[str | None, str]]) -> list[tuple[str, str, list[PriceRow]]]:
        """(provider, model) pairs *as seen* in the data → their rows (sorted by ``sort_key``), for the
        query-time join; unpriced pairs are left out."""
        out = []
        for provider, seen in sorted(set(pairs), key=lambda p: (p[0] or "", p[1])):
            priced = self.resolve(seen, provider)
            if priced is not None:
                out.append((provider or "", seen, sorted(priced.rows, key=lambda r: r.sort_key)))
        return out


def _strip_provider(name: str) -> str:
    """``openai/gpt-4o`` → ``gpt-4o``; Bedrock's ``us.anthropic.claude-…`` → ``claude-…``."""
    name = name.rsplit("/", 1)[-1]
    return _VENDOR_PREFIX.sub("", name)


def _row(provider: str, model: str, spec: Any, index: int) -> PriceRow:
    where = f"providers.{provider}.models.{model}" + (f"[{index}]" if index else "")
    if not isinstance(spec, Mapping):
        raise PriceError(f"{where}: must be a mapping with input and output prices")
    unknown = set(spec) - set(_FIELDS) - {"effective_from"}
    if unknown:
        raise PriceError(f"{where}: unknown keys {sorted(unknown)}")
    values: dict[str, float] = {}
    for key in _FIELDS:
        if key not in spec:
            continue
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PriceError(f"{where}.{key}: must be a non-negative number (USD per 1M tokens)")
        values[key] = float(value)
    for key in ("input", "output"):
        if key not in values:
            raise PriceError(f"{where}.{key}: required")
    return PriceRow(
        match=f"override {model.lower()!r}",
        model=model.lower(),
        provider=provider,
        input=values["input"],
        output=values["output"],
        cached_input=values.get("cached_input", values["input"]),
        cache_write=values.get("cache_write", values["input"]),
        reasoning=values.get("reasoning", values["output"]),
        effective_from_ns=_instant_ns(spec.get("effective_from"), f"{where}.effective_from"),
    )


def _instant_ns(value: Any, where: str) -> int:
    """A YAML date, datetime or ISO string → ns since epoch (UTC when no zone is given); None → 0."""
    if value is None:
        return 0
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PriceError(f"{where}: not an ISO date or date-time") from exc
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        raise PriceError(f"{where}: not a date")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
