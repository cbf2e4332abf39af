"""Price table: shipped file, matching, effective dates and inclusive-token cost (hand-computed figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_bridge.pricing import PriceError, PriceTable
from otel_bridge.semconv import recognise
from otel_bridge.spans import BridgeSpan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def test_packaged_table_is_the_config_file_and_dated(prices: PriceTable) -> None:
    assert (ROOT / "config/prices.yaml").resolve() == (ROOT / "otel_bridge/config/prices.yaml").resolve()
    assert PriceTable.load(ROOT / "config/prices.yaml").rows == prices.rows
    assert set(prices.sources) == {"openai", "anthropic", "google", "mistral"}
    for block in prices.sources.values():
        assert block["source"].startswith("https://") and block["as_of"] and block["list_prices"] is True
    for model in (
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5", "gpt-5-mini",
        "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large", "claude-opus-4-1", "claude-sonnet-4-5",
        "claude-haiku-4-5", "claude-3-7-sonnet", "claude-3-5-sonnet", "claude-3-5-haiku", "gemini-2.5-pro",
        "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash", "mistral-large", "mistral-medium",
        "mistral-small", "codestral",
    ):  # fmt: skip
        assert prices.match(model) is not None, model


@pytest.mark.parametrize(
    ("seen", "family"),
    [
        ("gpt-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # longest family wins
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # an exact dated row beats the family
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("models/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("mistral-large-latest", "mistral-large"),
        ("GPT-4.1-MINI", "gpt-4.1-mini"),
        ("gpt-4", None),  # a prefix of a family is not that family
        ("gpt-4o1", None),  # a family must end at a separator
        ("mystery-model-1", None),
        ("", None),
    ],
)
def test_matching(prices: PriceTable, seen: str, family: str | None) -> None:
    assert prices.family(seen) == family


def test_cost_never_charges_cached_tokens_twice(prices: PriceTable) -> None:
    row = prices.match("claude-sonnet-4-5-20250929")
    # input 1000 inclusive of 600 cache reads and 100 cache writes; output 200 inclusive of 50 reasoning:
    # 300 × 3 + 600 × 0.30 + 100 × 3.75 + 150 × 15 + 50 × 15 = 4455 USD per 1M tokens
    assert row.cost(1000, 600, 100, 200, 50) == pytest.approx(4455 / 1e6)
    # inconsistent counts clamp the uncached part at 0 instead of going negative
    assert row.cost(100, 300, 0, 0) == pytest.approx(300 * 0.30 / 1e6)
    mini = prices.match("gpt-4o-mini")
    assert mini.cost(1_000_000, 400_000, 0, 1_000_000) == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.60)


def _span(attrs: dict, start_ns: int = 1_750_000_000_000_000_000) -> BridgeSpan:
    return BridgeSpan("a" * 32, "b" * 16, None, "chat", 1, start_ns, start_ns + 10**9, 1, "", attrs)


def test_observatory_rules_for_agent_spans(prices: PriceTable) -> None:
    llm = {"gen_ai.operation.name": "chat", "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
           "gen_ai.usage.output_tokens": 100}  # fmt: skip
    assert prices.cost(recognise(_span(llm))) == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert prices.cost(recognise(_span(llm | {"gen_ai.operation.name": "embeddings"}))) == 0  # not an llm span
    assert prices.cost(recognise(_span(llm | {"gen_ai.response.model": "mystery"}))) == 0  # no price row
    no_tokens = {k: v for k, v in llm.items() if "usage" not in k}
    assert prices.cost(recognise(_span(no_tokens))) == 0


def test_effective_from_picks_the_row_in_force(prices: PriceTable) -> None:
    cut = 1_749_513_600 * 10**9  # 2025-06-10T00:00:00Z, o3's price change in the shipped table
    assert prices.match("o3", cut - 1).input == 10.0
    assert prices.match("o3", cut).input == 2.0
    assert prices.match("o3").input == 2.0
    table = PriceTable.from_mapping(
        {"providers": {"x": {"models": {"m": [{"effective_from": "2026-01-01T12:00:00Z", "input": 1, "output": 1}]}}}}
    )
    assert table.match("m", 0) is None  # nothing was in force yet: unpriced for that span


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "providers: must be a mapping"),
        ({"providers": {"x": {"models": {"m": {"input": 1}}}}}, "providers.x.models.m.output: required"),
        ({"providers": {"x": {"models": {"m": {"input": -1, "output": 1}}}}}, "providers.x.models.m.input: must"),
        ({"providers": {"x": {"models": {"m": {"input": 1, "output": 1, "oops": 2}}}}}, "unknown keys ['oops']"),
        (
            {"providers": {"x": {"models": {"m": {"input": 1, "output": 1, "effective_from": "soon"}}}}},
            "providers.x.models.m.effective_from: not an ISO",
        ),
    ],
)
def test_bad_price_files_name_the_key(doc: dict, message: str) -> None:
    with pytest.raises(PriceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PriceTable.from_mapping(doc)
