"""Cost in ClickHouse against genai-prices' own answers: reference figures come from ``calc_price``, not our code.

Spans take the production path (``BridgeSpan`` → recogniser → ClickHouse exporter rows → chDB) and are priced by
the real queries; the library is asked the same question with its ``Usage`` (input includes cache reads and
writes, output includes reasoning — our convention).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from ch_data import bridge, llm_attrs
from genai_prices import Usage, calc_price
from genai_prices import types as gp
from genai_prices.data import providers as PROVIDERS  # noqa: N812

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, spans_items
from otel_bridge.price_library import PROVIDER_IDS
from otel_bridge.pricing import PriceTable
from otel_bridge.semconv import normalise_provider, recognise_trace
from otel_bridge.synthetic import MODELS as DEMO_MODELS

ROOT = Path(__file__).resolve().parents[1]
NS = 10**9
DRAWS = 1000


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("prices") / "data")  # chDB: one data dir per process at a time


def _open(data_dir: str, database: str) -> Store:
    # Draws reach back to 2023: a TTL long enough that no row is dropped on insert (toDateTime ends in 2106).
    return Store.open(StoreConfig(data_dir=data_dir, database=database, ttl_days=3_650))


@pytest.fixture(scope="module")
def store(data_dir: str):
    """The 1,000 draws."""
    s = _open(data_dir, "draws")
    yield s
    s.close()


@pytest.fixture(scope="module")
def small(data_dir: str):
    """A few hand-picked calls, in a database of their own."""
    s = _open(data_dir, "calls")
    yield s
    s.close()


def _refs(clause: object):
    """Strings a match rule names (equals / starts_with / contains / ends_with), to use as model names."""
    for attr in ("equals", "starts_with", "contains", "ends_with"):
        if hasattr(clause, attr):
            yield getattr(clause, attr)
    for sub in getattr(clause, "or_", None) or getattr(clause, "and_", None) or []:
        yield from _refs(sub)


def _candidates() -> list[tuple[str, gp.Provider, gp.ModelInfo, str]]:
    """(provider name a span would carry, provider, model, model name that the library resolves to that model)."""
    names: dict[str, list[str]] = {}
    for name, pid in PROVIDER_IDS.items():
        names.setdefault(pid, []).append(name)
    out = []
    for p in PROVIDERS:
        for m in p.models:
            ref = next((r for r in (m.id, *_refs(m.match)) if p.find_model(r, all_providers=PROVIDERS) is m), None)
            if ref is not None:
                out.append((names.get(p.id, [p.id])[0], p, m, ref))
    return out


def _boundary_days(m: gp.ModelInfo) -> list[datetime]:
    conds = m.prices if isinstance(m.prices, list) else []
    days = [c.constraint.start_date for c in conds if isinstance(c.constraint, gp.StartDateConstraint)]
    return [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days]


def _draws(n: int, seed: int = 14) -> list[dict]:
    """``n`` seeded draws of (model, usage with cache and reasoning parts, instant) from the library's data.

    Instants: half on a day of one of the model's own price changes or the day before, half on a few random days
    (at most ~100 days in all: one insert may touch 100 partitions). Prompt sizes reach past every tier start.
    """
    rng = random.Random(seed)
    candidates = _candidates()
    all_boundaries = sorted({d for _, _, m, _ in candidates for d in _boundary_days(m)})
    start = datetime(2023, 1, 1, tzinfo=UTC)
    random_days = [start + timedelta(days=rng.randrange(0, 1600)) for _ in range(100 - 2 * len(all_boundaries))]
    out = []
    for k in range(n):
        provider, p, m, ref = rng.choice(candidates)
        own = _boundary_days(m)
        if rng.random() < 0.5:
            day = rng.choice(own or all_boundaries) - timedelta(days=rng.choice((0, 0, 1)))
        else:
            day = rng.choice(random_days)
        at_ns = int(day.timestamp()) * NS + rng.randrange(0, 86_400 * NS)
        out.append(dict(k=k, provider=provider, pid=p.id, model=ref, at_ns=at_ns, **_usage(rng)))
    return out


def _usage(rng: random.Random) -> dict[str, int]:
    """Token counts in our convention: input includes cache reads and writes, output includes reasoning."""
    inp = rng.randrange(0, 700_000) if rng.random() < 0.35 else rng.randrange(0, 20_000)
    cached = rng.randrange(0, inp + 1) if rng.random() < 0.7 else 0
    write = rng.randrange(0, inp - cached + 1) if rng.random() < 0.5 else 0
    out = rng.randrange(0, 30_000)
    reasoning = rng.randrange(0, out + 1) if rng.random() < 0.5 else 0
    return dict(input=inp, cached=cached, write=write, output=out, reasoning=reasoning)


def _reference(d: dict) -> Decimal:
    usage = Usage(input_tokens=d["input"], cache_read_tokens=d["cached"], cache_write_tokens=d["write"],
                  output_tokens=d["output"], output_reasoning_tokens=d["reasoning"])  # fmt: skip
    when = datetime.fromtimestamp(d["at_ns"] // NS, UTC).replace(microsecond=d["at_ns"] % NS // 1000)
    return calc_price(usage, d["model"], provider_id=d["pid"], genai_request_timestamp=when).total_price


def _span(trace: int, d: dict, service: str):
    attrs = llm_attrs(d["provider"], d["model"], d["input"], d["output"], d["cached"], d["write"], d["reasoning"])
    s = bridge(trace, 1, None, "chat", d["at_ns"], 5, attrs, service=service)
    return recognise_trace([s])[0]


def test_costs_in_chdb_equal_calc_price_on_random_draws(store: Store, prices: PriceTable) -> None:
    draws = _draws(DRAWS)
    want = {f"draw-{d['k']:04d}": _reference(d) for d in draws}
    spans = [_span(100_000 + d["k"], d, f"draw-{d['k']:04d}") for d in draws]
    ClickHouseSender(store).send(spans_items(spans))  # one batch
    got = {r["service"]: r for r in q.costs(store, prices, by="service")}  # one query: one group per draw
    assert set(got) == set(want)
    worst = max(abs(got[s]["cost"] - float(want[s])) for s in want)
    assert worst <= 1e-9, worst
    assert all(r["unpriced_calls"] == 0 and r["calls"] == 1 for r in got.values())
    # the coverage the draws claim: tiers crossed, dated changes, per-call fees, non-zero answers
    assert sum(float(v) > 0 for v in want.values()) > DRAWS * 0.8
    assert any(d["input"] > 272_000 for d in draws)
    # per span, through the runs query (the same cost expression without the pre-aggregation)
    rows = {r["trace_id"]: r["cost"] for r in q.runs(store, prices, limit=10_000, model=None)}
    per_span = [abs(rows[f"{100_000 + d['k']:032x}"] - float(want[f"draw-{d['k']:04d}"])) for d in draws]
    assert max(per_span) <= 1e-9


def test_time_of_day_windows_call_fees_and_reasoning_prices_equal_calc_price(small: Store, prices: PriceTable) -> None:
    """The rare shapes a random draw seldom hits, each at both sides of every DeepSeek window edge on three days."""
    rng = random.Random(1414)
    special = [c for c in _candidates() if c[2].id.startswith(("deepseek", "sonar", "perplexity/sonar"))]
    assert {c[1].id for c in special} >= {"deepseek", "perplexity"}
    edges = [(0, 0), (0, 30), (1, 0), (4, 0), (6, 0), (10, 0), (16, 30)]
    draws = []
    for provider, p, _m, ref in special:
        for day in (datetime(y, mo, 1, tzinfo=UTC) for y, mo in ((2025, 3), (2025, 10), (2026, 6))):
            for hour, minute in edges:
                edge_ns = int((day + timedelta(hours=hour, minutes=minute)).timestamp()) * NS
                for at_ns in (edge_ns, edge_ns - 1000):  # on the edge and a microsecond before
                    d = dict(k=len(draws), provider=provider, pid=p.id, model=ref, at_ns=at_ns, **_usage(rng))
                    draws.append(d)
    want = {f"special-{d['k']:04d}": _reference(d) for d in draws}
    ClickHouseSender(small).send(spans_items([_span(300_000 + d["k"], d, f"special-{d['k']:04d}") for d in draws]))
    got = {r["service"]: r["cost"] for r in q.costs(small, prices, by="service") if r["service"] in want}
    assert set(got) == set(want)
    assert max(abs(got[s] - float(want[s])) for s in want) <= 1e-9
    # the windows did change prices: DeepSeek's rows in force differ across the edges
    deepseek = [d for d in draws if d["pid"] == "deepseek"]
    in_force = {(d["model"], prices.match(d["model"], d["at_ns"], d["provider"]).input) for d in deepseek}
    assert len(in_force) > len({m for m, _ in in_force})


def _one(store: Store, prices: PriceTable, trace: int, provider: str, model: str, at: datetime, **tokens: int) -> float:
    d = dict(provider=provider, model=model, at_ns=int(at.timestamp()) * NS, input=tokens.get("input", 0),
             cached=tokens.get("cached", 0), write=tokens.get("write", 0), output=tokens.get("output", 0),
             reasoning=tokens.get("reasoning", 0))  # fmt: skip
    service = f"one-{trace}"
    ClickHouseSender(store).send(spans_items([_span(trace, d, service)]))
    (row,) = [r for r in q.costs(store, prices, by="service") if r["service"] == service]
    (run,) = [r for r in q.runs(store, prices, limit=10_000) if r["trace_id"] == f"{trace:032x}"]
    assert run["cost"] == pytest.approx(row["cost"], abs=1e-12)
    return row["cost"]


def test_a_long_prompt_is_priced_at_its_tier(small: Store, prices: PriceTable) -> None:
    at = datetime(2025, 11, 1, 12, tzinfo=UTC)
    # claude-sonnet-4-5: 3 / 0.30 / 3.75 / 15 USD per 1M, all tokens 6 / 0.60 / 7.50 / 22.50 past 200k input
    short = _one(small, prices, 200_001, "anthropic", "claude-sonnet-4-5-20250929", at, input=200_000, cached=50_000,
                 write=10_000, output=1_000)  # fmt: skip
    long = _one(small, prices, 200_002, "anthropic", "claude-sonnet-4-5-20250929", at, input=200_001, cached=50_000,
                write=10_000, output=1_000)  # fmt: skip
    assert short == pytest.approx((140_000 * 3 + 50_000 * 0.30 + 10_000 * 3.75 + 1_000 * 15) / 1e6)
    assert long == pytest.approx((140_001 * 6 + 50_000 * 0.60 + 10_000 * 7.50 + 1_000 * 22.50) / 1e6)
    # the threshold counts cache reads and writes (genai-prices' total input), as the library does
    for cost, n in ((short, 200_000), (long, 200_001)):
        usage = Usage(input_tokens=n, cache_read_tokens=50_000, cache_write_tokens=10_000, output_tokens=1_000)
        ref = calc_price(usage, "claude-sonnet-4-5-20250929", provider_id="anthropic", genai_request_timestamp=at)
        assert cost == pytest.approx(float(ref.total_price), abs=1e-12)


def test_o3_is_priced_as_it_was_on_each_side_of_2025_06_10(small: Store, prices: PriceTable) -> None:
    before = datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC)
    after = datetime(2025, 6, 10, tzinfo=UTC)
    tokens = dict(input=10_000, cached=4_000, output=2_000, reasoning=1_500)
    old = _one(small, prices, 200_010, "openai", "o3", before, **tokens)
    new = _one(small, prices, 200_011, "openai", "o3-2025-04-16", after, **tokens)
    assert old == pytest.approx((6_000 * 10 + 4_000 * 0.5 + 2_000 * 40) / 1e6)  # 10 / 0.50 / 40 before the cut
    assert new == pytest.approx((6_000 * 2 + 4_000 * 0.5 + 2_000 * 8) / 1e6)  # 2 / 0.50 / 8 from 2025-06-10
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=2_000, output_reasoning_tokens=1_500)
    for cost, at in ((old, before), (new, after)):
        assert cost == pytest.approx(float(calc_price(usage, "o3", genai_request_timestamp=at).total_price))


def test_an_override_wins_in_chdb(small: Store, prices: PriceTable, tmp_path: Path) -> None:
    at = datetime(2025, 11, 2, 8, tzinfo=UTC)
    library = _one(small, prices, 200_020, "openai", "gpt-4o-2024-08-06", at, input=1_000, cached=400, output=100)
    assert library == pytest.approx((600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6)
    path = tmp_path / "prices.yaml"
    path.write_text(
        "providers:\n  openai:\n    source: contract\n    models:\n"
        "      gpt-4o: {input: 1.0, cached_input: 0.25, output: 4.0}\n"
        "  self-hosted:\n    models:\n      my-llama: {input: 0, output: 0}\n"
    )
    table = PriceTable.load(path)
    got = {r["service"]: r for r in q.costs(small, table, by="service")}
    assert got["one-200020"]["cost"] == pytest.approx((600 * 1.0 + 400 * 0.25 + 100 * 4.0) / 1e6)
    _one(small, prices, 200_021, "vllm", "my-llama-2025-01", at, input=500, output=50)
    checked = {r["model"]: r for r in q.prices_check(small, table)}
    assert checked["my-llama-2025-01"]["source"] == "override" and checked["gpt-4o-2024-08-06"]["source"] == "override"
    assert checked["o3"]["source"] == "library"
    assert {r["model"]: r["source"] for r in q.prices_check(small, prices)}["my-llama-2025-01"] == "unpriced"


def test_every_demo_and_fixture_model_is_priced_by_the_library(prices: PriceTable) -> None:
    seen = {(provider, model) for provider, model, _ in DEMO_MODELS}
    for path in sorted((ROOT / "tests/fixtures/otlp").glob("*.expected.json")):
        for call in json.loads(path.read_text())["calls"]:
            if call["prompt_tokens"] or call["completion_tokens"]:  # a call that failed bills nothing
                seen.add((normalise_provider(call["provider"]), call["response_model"] or call["request_model"]))
    assert len(seen) >= 7
    for provider, model in sorted(seen):
        assert prices.source(model, provider) == "library", (provider, model)
        assert prices.match(model, provider=provider).input > 0, (provider, model)
