"""Price table, model-name matching and the cost of one LLM call (DESIGN decision 5).

Cost follows FlowX Observatory's rules: only ``llm`` spans that carry tokens, a model and a matching price row
cost anything; everything else costs 0 and its model is reported as unpriced. Token counts are inclusive, like
``AgentSpan``: input includes cache reads and writes, output includes reasoning, so each token is charged once.

Analytics never store a cost: they hand ``PriceTable.rows_for`` to ClickHouse at query time, so an edit of
``prices.yaml`` changes every answer at once.
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

logger = logging.getLogger(__name__)

PER = 1_000_000  # prices are USD per 1M tokens
_FAMILY_BOUNDARY = "-@:_"  # what may follow a family name in a dated/versioned model name
_VENDOR_PREFIX = re.compile(r"^(?:[a-z]{2}(?:-[a-z]+)?\.)?(?:anthropic|meta|mistral|cohere|amazon|google)\.")
_FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning")


class PriceError(ValueError):
    """The price file is malformed; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One model's prices (USD per 1M tokens) from ``effective_from`` (ns since epoch, 0 = always) on."""

    model: str
    provider: str
    input: float
    output: float
    cached_input: float
    cache_write: float
    reasoning: float
    effective_from_ns: int = 0

    def cost(
        self, input_tokens: int, cached: int = 0, cache_write: int = 0, output_tokens: int = 0, reasoning: int = 0
    ) -> float:
        """USD for inclusive counts; the uncached/non-reasoning parts are clamped at 0 for inconsistent spans."""
        uncached = max(0, input_tokens - cached - cache_write)
        plain_out = max(0, output_tokens - reasoning)
        return (
            uncached * self.input
            + cached * self.cached_input
            + cache_write * self.cache_write
            + plain_out * self.output
            + reasoning * self.reasoning
        ) / PER


@dataclass(slots=True)
class PriceTable:
    """Rows grouped by canonical model name, each group sorted by ``effective_from``."""

    rows: dict[str, list[PriceRow]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # provider → {source, as_of, list_prices}
    path: str | None = None

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """Read a prices.yaml; without a path the packaged default (``otel_bridge/config/prices.yaml``)."""
        if path is None:
            text = resources.files("otel_bridge").joinpath("config/prices.yaml").read_text(encoding="utf-8")
            where = "otel_bridge/config/prices.yaml"
        else:
            text, where = Path(path).read_text(encoding="utf-8"), str(path)
        table = cls.from_mapping(yaml.safe_load(text) or {})
        table.path = where
        return table

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> PriceTable:
        providers = doc.get("providers")
        if not isinstance(providers, Mapping):
            raise PriceError("providers: must be a mapping of provider → {source, as_of, models}")
        table = cls()
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
        """The price-table name a model resolves to: exact, provider prefix stripped, then longest family."""
        if not model:
            return None
        name = model.strip().lower()
        for candidate in (name, _strip_provider(name)):
            if candidate in self.rows:
                return candidate
        name = _strip_provider(name)
        best = None
        for fam in self.rows:
            if name.startswith(fam) and name[len(fam)] in _FAMILY_BOUNDARY and (best is None or len(fam) > len(best)):
                best = fam
        return best

    def match(self, model: str | None, at_ns: int | None = None) -> PriceRow | None:
        """The row in force for ``model`` at ``at_ns`` (the latest when ``at_ns`` is None)."""
        fam = self.family(model)
        if fam is None:
            return None
        group = self.rows[fam]
        if at_ns is None:
            return group[-1]
        in_force = [r for r in group if r.effective_from_ns <= at_ns]
        return in_force[-1] if in_force else None

    def cost(self, span: Any) -> float:
        """Observatory's rule for one AgentSpan: llm kind, tokens, model and a row — else 0."""
        if span.kind != "llm" or not span.model or not (span.input_tokens or span.output_tokens):
            return 0.0
        row = self.match(span.model, span.span.start_ns)
        if row is None:
            return 0.0
        return row.cost(
            span.input_tokens or 0,
            span.cached_input_tokens or 0,
            span.cache_write_tokens or 0,
            span.output_tokens or 0,
            span.reasoning_tokens or 0,
        )

    def rows_for(self, models: Iterable[str]) -> list[tuple[str, int, float, float, float, float, float]]:
        """Price rows keyed by the model names *as seen* in the data, for a query-time join.

        Each tuple: (seen model, effective_from ns, input, cached_input, cache_write, output, reasoning).
        """
        out = []
        for seen in sorted(set(models)):
            fam = self.family(seen)
            for r in self.rows.get(fam, []) if fam else []:
                out.append((seen, r.effective_from_ns, r.input, r.cached_input, r.cache_write, r.output, r.reasoning))
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
