"""The agent-framework fixtures (issue 9) are whole and self-consistent: what expected.json says was served
adds up, both encodings decode to the span and trace counts the producer emitted, and every fixture is
documented (README row, versions.json).  What the recogniser makes of them is asserted elsewhere."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import FIXTURES, REFERENCE_FIXTURES

from otel_bridge.inspect import read_otlp_file

AGENT_FIXTURES = sorted(
    p.name.split(".")[0] for p in FIXTURES.glob("*.expected.json") if p.name.split(".")[0] not in REFERENCE_FIXTURES
)
TOKENS = ("prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens", "reasoning_tokens")


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.expected.json").read_text())


def _declared() -> list[str]:
    """The producers gen/producers.py declares (stdlib only, imported by path)."""
    spec = importlib.util.spec_from_file_location("producers", FIXTURES.parent / "gen" / "producers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.AGENT_FIXTURES)


def test_every_declared_producer_has_its_fixture():
    assert AGENT_FIXTURES == _declared()


@pytest.mark.parametrize("name", AGENT_FIXTURES)
def test_both_encodings_hold_what_the_producer_emitted(name):
    counts = _expected(name)["counts"]
    for suffix in ("pb", "json"):
        spans, _ = read_otlp_file(FIXTURES / f"{name}.traces.{suffix}")
        assert len(spans) == counts["total_spans"], suffix
        assert len({s.trace_id for s in spans}) == counts["traces"], suffix


@pytest.mark.parametrize("name", AGENT_FIXTURES)
def test_served_figures_add_up(name):
    e = _expected(name)
    ok = [c for c in e["calls"] if c["error"] is None]
    assert {f: sum(c[f] for c in ok) for f in TOKENS} == {f: e["totals"][f] for f in TOKENS}
    assert e["totals"]["billed_tokens"] == e["totals"]["prompt_tokens"] + e["totals"]["completion_tokens"]
    for c in ok:  # the normalised parts never exceed their whole
        assert c["cached_tokens"] + c["cache_write_tokens"] <= c["prompt_tokens"]
        assert c["reasoning_tokens"] <= c["completion_tokens"]
        assert c["usage_as_served"], "the usage as the provider spelled it"
    if "by_agent" in e:  # i9-recognise merge: i9-fixtures2's manifests predate by_agent (integrator: regenerate them)
        assert sum(a["billed_tokens"] for a in e["by_agent"].values()) == e["totals"]["billed_tokens"]
        assert set(e["by_agent"]) <= set(e["agents"]) | {c["plan"] for c in e["calls"]} and "?" not in e["by_agent"]
    assert e["counts"]["model_calls"] == len(e["calls"]) >= 2
    assert e["counts"]["model_calls_failed"] == sum(1 for c in e["calls"] if c["error"]) >= 0
    assert e["counts"]["tool_calls"] == len(e["tool_calls"]) >= 1
    assert e["counts"]["agents"] == len(e["agents"]) >= 1
    assert [t["name"] for t in e["tool_calls"]] == [n for c in e["calls"] for n in c["tool_calls"]]


@pytest.mark.parametrize("name", AGENT_FIXTURES)
def test_every_fixture_is_documented(name):
    readme = (FIXTURES.parent / "README.md").read_text()
    assert f"| `{name}` |" in readme
    assert name in json.loads((FIXTURES / "versions.json").read_text())
