"""Price table: packaged overrides over genai-prices, both matchers, effective dates, inclusive-token cost."""

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


# The old hand table's families, kept as an override table: the override matcher is unchanged.
OVERRIDES = {
    "providers": {
        "hand": {
            "models": {
                m: {"input": 1, "output": 1}
                for m in (
                    "gpt-4o",
                    "gpt-4o-mini",
                    "gpt-4o-2024-05-13",
                    "gpt-4.1-mini",
                    "claude-sonnet-4-5",
                    "claude-sonnet-4",
                    "claude-3-5-sonnet",
                    "claude-3-5-haiku",
                    "gemini-2.5-flash",
                    "gemini-2.5-flash-lite",
                    "mistral-large",
                )  # fmt: skip
            }
        }
    }
}


def test_packaged_overrides_are_the_config_file_and_the_library_prices_the_rest(prices: PriceTable) -> None:
    assert (ROOT / "config/prices.yaml").resolve() == (ROOT / "otel_bridge/config/prices.yaml").resolve()
    assert PriceTable.load(ROOT / "config/prices.yaml").rows == prices.rows == {}  # no override ships by default
    assert prices.library is not None and prices.library.label.startswith("genai-prices 0.2.3")
    assert len(prices.library.providers) >= 40 and prices.library.model_count >= 2000
    for provider, model in (
        ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-nano"), ("openai", "o3"), ("openai", "o4-mini"), ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"), ("openai", "gpt-5-nano"), ("openai", "text-embedding-3-small"),
        ("openai", "text-embedding-3-large"), ("anthropic", "claude-opus-4-1"), ("anthropic", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-3-7-sonnet"), ("anthropic", "claude-3-5-sonnet"),
        ("anthropic", "claude-3-5-haiku"), ("gcp.gemini", "gemini-2.5-pro"), ("gcp.gemini", "gemini-2.5-flash"),
        ("gcp.vertex_ai", "gemini-2.5-flash-lite"), ("gcp.gemini", "gemini-2.0-flash"),
        ("mistral_ai", "mistral-large-latest"), ("mistral_ai", "mistral-medium-latest"),
        ("mistral_ai", "mistral-small-latest"), ("mistral_ai", "codestral-latest"),
    ):  # fmt: skip
        assert prices.source(model, provider) == "library", model
        assert prices.match(model, provider=provider) is not None, model


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
        ("gpt-4.1-mini-turbo", None),  # …and be followed by a version, not another model's name
        ("mystery-model-1", None),
        ("", None),
    ],
)
def test_override_matching(seen: str, family: str | None) -> None:
    assert PriceTable.from_mapping(OVERRIDES).family(seen) == family


@pytest.mark.parametrize(
    ("provider", "seen", "priced_as"),
    [
        ("openai", "gpt-4o-2024-08-06", "openai/gpt-4o"),  # the library's match rules, not ours
        ("openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
        (
            "aws.bedrock",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "aws/regional.anthropic.claude-3-5-haiku-20241022-v1:0",
        ),
        ("gcp.gemini", "models/gemini-2.5-flash-lite", "google/gemini-2.5-flash-lite"),  # prefix stripped
        ("azure.ai.openai", "gpt-4o", "azure/gpt-4o"),  # registry names map onto library ids
        ("mistral_ai", "mistral-large-latest", "mistral/mistral-large"),
        ("x_ai", "grok-4", "x-ai/grok-4-0709"),
        (None, "openai/gpt-4o", "openai/gpt-4o"),  # the prefix names the provider
        ("acme-gateway", "claude-3-5-haiku-20241022", "anthropic/claude-3-5-haiku-latest"),  # unknown provider: by name
        ("openai", "mystery-model-1", None),
        ("openai", "gpt-4o1", None),
    ],
)
def test_library_matching(prices: PriceTable, provider: str | None, seen: str, priced_as: str | None) -> None:
    priced = prices.resolve(seen, provider)
    assert (f"{priced.provider}/{priced.model}" if priced else None) == priced_as
    assert prices.source(seen, provider) == ("library" if priced_as else "unpriced")


def test_an_override_wins_over_the_library() -> None:
    table = PriceTable.from_mapping(
        {"providers": {"contract": {"models": {"gpt-4o": {"input": 1.0, "cached_input": 0.5, "output": 4.0}}}}},
        library=PriceTable.load().library,
    )
    assert table.source("gpt-4o-2024-08-06", "openai") == "override"
    assert table.match("gpt-4o-2024-08-06", provider="openai").cost(1000, 0, 0, 100) == pytest.approx(1.4e-3)
    assert table.source("gpt-4o-2024-11-20", "openai") == "override"  # a family covers its versions…
    assert table.source("gpt-4o-latest", "openai") == "override"
    assert table.source("gpt-4o-mini", "openai") == "library"  # …not a sibling model that shares its prefix
    assert table.source("gpt-4.1", "openai") == "library"


def test_cost_never_charges_cached_tokens_twice(prices: PriceTable) -> None:
    row = prices.match("claude-sonnet-4-5-20250929", provider="anthropic")
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
    cut = 1_749_513_600 * 10**9  # 2025-06-10T00:00:00Z, o3's price change in genai-prices
    assert prices.match("o3", cut - 1, "openai").input == 10.0
    assert prices.match("o3", cut, "openai").input == 2.0
    assert prices.match("o3", provider="openai").input == 2.0
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
