"""Run totals: every run carries its subtree's tokens, cost, calls and errors, compared with a pure-Python walk."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from ch_data import BASE_NS, MS, Dataset, bridge, llm_attrs, make_dataset

from otel_bridge.agentspan import AgentSpan
from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender, spans_items
from otel_bridge.pricing import PriceTable
from otel_bridge.semconv import recognise_trace


def _nested_trace() -> list[AgentSpan]:
    """planner agent → (LLM, researcher agent → (2 LLMs, failing tool)): totals must reach two levels down."""
    t0 = BASE_NS + 3600 * 10**9
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
    sub = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"}
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
    spans = [
        bridge(900, 1, None, "invoke_agent planner", t0, 9000, agent),
        bridge(900, 2, 1, "chat", t0 + MS, 800, llm_attrs("openai", "gpt-4o", 1200, 300, cached=200)),
        bridge(900, 3, 1, "invoke_agent researcher", t0 + 900 * MS, 7000, sub),
        bridge(900, 4, 3, "chat", t0 + 1000 * MS, 900, llm_attrs("openai", "o3", 2000, 700, reasoning=400)),
        bridge(
            900, 5, 3, "chat", t0 + 2000 * MS, 900, llm_attrs("anthropic", "claude-sonnet-4-5", 3000, 100, write=500)
        ),
        bridge(900, 6, 3, "execute_tool", t0 + 3000 * MS, 50, tool, error=True),
    ]
    return recognise_trace(spans)


@pytest.fixture(scope="module")
def data() -> Dataset:
    d = make_dataset(n_traces=24, seed=11)
    d.spans.extend(_nested_trace())
    return d


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data: Dataset):
    s = Store.open(StoreConfig(data_dir=str(tmp_path_factory.mktemp("totals") / "data")))
    ClickHouseSender(s).send(spans_items(data.spans))
    yield s
    s.close()


def expected_totals(data: Dataset, prices: PriceTable) -> dict[str, dict[str, float]]:
    """Walk the stored spans' parent links in Python: each run's subtree, itself included."""
    stored = data.stored
    children: dict[tuple[str, str], list[AgentSpan]] = defaultdict(list)
    for a in stored:
        if a.span.parent_span_id:
            children[(a.trace_id, a.span.parent_span_id)].append(a)
    out = {}
    for a in stored:
        tree, stack = [], [a]
        while stack:
            node = stack.pop()
            tree.append(node)
            stack.extend(children[(node.trace_id, node.span_id)])
        llm = [n for n in tree if n.kind == "llm"]
        out[a.run_id] = {
            "total_input_tokens": sum(n.input_tokens or 0 for n in llm),
            "total_cached_input_tokens": sum(n.cached_input_tokens or 0 for n in llm),
            "total_cache_write_tokens": sum(n.cache_write_tokens or 0 for n in llm),
            "total_output_tokens": sum(n.output_tokens or 0 for n in llm),
            "total_reasoning_tokens": sum(n.reasoning_tokens or 0 for n in llm),
            "total_tokens": sum((n.input_tokens or 0) + (n.output_tokens or 0) for n in llm),
            "total_cost": sum(prices.cost(n) for n in llm),
            "llm_calls": len(llm),
            "tool_calls": sum(n.kind == "tool" for n in tree),
            "errors": sum(bool(n.error) for n in tree),
        }
    return out


@pytest.mark.parametrize(
    "path",
    [{}, {"max_cost": 1e9}, {"min_total_cost": 0.0, "order": "-start_time"}],
    ids=["page-then-totals", "priced-then-totals", "recursive-walk"],
)
def test_every_run_carries_its_subtree_totals(store: Store, prices: PriceTable, data: Dataset, path: dict) -> None:
    rows = q.runs(store, prices, limit=10_000, **path)
    expected = expected_totals(data, prices)
    assert {r["run_id"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["run_id"]]
        for key, value in want.items():
            assert math.isclose(row[key], value, rel_tol=1e-9, abs_tol=1e-12), (row["run_id"], key)
        if row["type"] == "llm":  # an LLM run's own Observatory cost is its total; an agent's own cost stays 0
            assert math.isclose(row["cost"], row["total_cost"], rel_tol=1e-9, abs_tol=1e-12)
        if row["type"] == "agent":
            assert row["cost"] == 0 and row["prompt_tokens"] == 0


def test_nested_agents_sum_two_levels(store: Store, prices: PriceTable, data: Dataset) -> None:
    rows = {
        r["name"]: r
        for r in q.runs(store, prices, agent="planner", limit=50) + q.runs(store, prices, agent="researcher", limit=50)
        if r["type"] == "agent"
    }
    planner, researcher = rows["invoke_agent planner"], rows["invoke_agent researcher"]
    assert planner["llm_calls"] == 3 and researcher["llm_calls"] == 2
    assert planner["tool_calls"] == researcher["tool_calls"] == 1 and planner["errors"] == 1
    assert planner["total_input_tokens"] == 1200 + 2000 + 3000 and planner["total_reasoning_tokens"] == 400
    assert planner["total_cost"] > researcher["total_cost"] > 0


@pytest.mark.parametrize(
    "filters",
    [
        {"min_total_cost": 0.01},
        {"max_total_cost": 0.0},
        {"min_total_cost": 0.005, "max_total_cost": 0.03, "status": "success"},
        {"min_total_tokens": 4000},
        {"max_total_tokens": 1000, "min_llm_calls": 1},
        {"min_llm_calls": 2},
        {"min_tool_calls": 1, "min_errors": 1},
    ],
)
def test_total_filters(store: Store, prices: PriceTable, data: Dataset, filters: dict) -> None:
    expected = expected_totals(data, prices)
    by_id = {a.run_id: a for a in data.stored}
    bounds = {
        "min_total_cost": ("total_cost", 1), "max_total_cost": ("total_cost", -1),
        "min_total_tokens": ("total_tokens", 1), "max_total_tokens": ("total_tokens", -1),
        "min_llm_calls": ("llm_calls", 1), "min_tool_calls": ("tool_calls", 1), "min_errors": ("errors", 1),
    }  # fmt: skip
    want = set()
    for run_id, totals in expected.items():
        ok = all((totals[bounds[k][0]] - v) * bounds[k][1] >= 0 for k, v in filters.items() if k in bounds)
        status = "error" if by_id[run_id].error else "success"
        if ok and filters.get("status") in (None, status):
            want.add(run_id)
    got = {r["run_id"] for r in q.runs(store, prices, limit=10_000, **filters)}
    assert got == want and want  # every case selects something


def test_order_by_total_cost_and_page(store: Store, prices: PriceTable, data: Dataset) -> None:
    ranked = sorted(expected_totals(data, prices).items(), key=lambda kv: (-kv[1]["total_cost"], kv[0]))
    page = q.runs(store, prices, order="-total_cost", limit=5, offset=2)
    assert [r["run_id"] for r in page] == [run_id for run_id, _ in ranked[2:7]]
    with pytest.raises(ValueError, match="unknown run filters"):
        q.runs(store, prices, min_total_costs=1)
