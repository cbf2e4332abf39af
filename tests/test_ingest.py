"""Vendor-format ingest into the ClickHouse store (real chDB): Observatory events and FlightDeck RunEvents."""

from __future__ import annotations

import pytest
from conftest import FIXTURES
from flightdeck_server import make_run_event

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import ClickHouseSender
from otel_bridge.inspect import agent_spans
from otel_bridge.pricing import PriceTable
from otel_bridge.processors.observatory import ObservatoryConverter
from otel_bridge.server.ingest import IngestError, flightdeck_rows, observatory_rows, stable_uuid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store.open(StoreConfig(data_dir=str(tmp_path_factory.mktemp("ingest") / "data")))
    yield s
    s.close()


def test_observatory_events_round_trip(store):
    spans = agent_spans([FIXTURES / "openinference.traces.pb"])
    converter = ObservatoryConverter()
    events = [e for a in sorted(spans, key=lambda a: a.span.start_ns) for e in converter.convert(a)]
    rows = observatory_rows(events)
    ClickHouseSender(store).send(rows)
    ClickHouseSender(store).send(rows)  # a re-sent report is not counted twice
    prices = PriceTable.load()
    got = q.runs(store, prices, limit=100)
    assert len(got) == len(spans)
    llm = [r for r in got if r["type"] == "llm" and r["status"] == "success"]
    assert sorted(r["prompt_tokens"] for r in llm) == [203, 412, 468]
    assert all(r["agent"] == "support-agent" for r in got)
    assert {r["status"] for r in got} == {"success", "error"}
    chats = store.query(
        f"SELECT role, content FROM {store.table('events')} FINAL WHERE name = 'chat' ORDER BY timestamp"
    )
    assert [c["role"] for c in chats] == ["user", "assistant", "user", "assistant", "user"]


def test_flightdeck_events_land_as_runs(store):
    events = [
        make_run_event(
            release_id="rel_a",
            agent_id="a",
            model="gpt-4o-mini",
            input_tokens=100,
            cached_input_tokens=50,
            output_tokens=10,
            latency_ms=200,
        )
        for _ in range(3)
    ]
    events.append(
        make_run_event(
            release_id="rel_b",
            agent_id="a",
            model="gpt-4o-mini",
            input_tokens=100,
            output_tokens=10,
            latency_ms=400,
            success=False,
            error_type="Timeout",
        )
    )
    ClickHouseSender(store).send(flightdeck_rows(events))
    rows = store.query(
        f"SELECT release_id, input_tokens, cached_input_tokens, latency_ms, success FROM {store.table('runs')} FINAL WHERE release_id IN ('rel_a','rel_b') ORDER BY release_id"
    )
    assert [(r["release_id"], r["input_tokens"], r["cached_input_tokens"]) for r in rows] == [
        ("rel_a", 150, 50)
    ] * 3 + [("rel_b", 100, 0)]
    diff = {r["metric"]: r for r in q.diff(store, PriceTable.load(), "rel_a", "rel_b")}
    assert diff["error_rate"]["candidate"] == 1.0 and diff["runs"]["baseline"] == 3


def test_bad_events_are_named():
    with pytest.raises(IngestError, match=r"events\[1\]: missing run_id"):
        observatory_rows(
            [
                {
                    "name": "chat",
                    "type": "chat",
                    "run_id": "x",
                    "timestamp": "2026-01-01T00:00:00.000Z",
                    "role": "user",
                    "content": "hi",
                },
                {"name": "llm_end", "type": "llm", "timestamp": "2026-01-01T00:00:00.000Z"},
            ]
        )
    with pytest.raises(IngestError, match=r"events\[0\].timestamp"):
        observatory_rows([{"name": "llm_end", "type": "llm", "run_id": "r", "timestamp": "yesterday"}])
    bad = make_run_event(release_id="r", agent_id="a", model="m", output_tokens=-1)
    with pytest.raises(IngestError, match=r"events\[0\]: invalid RunEvent.*output_tokens"):
        flightdeck_rows([bad])
    assert stable_uuid("01HXYZ") == stable_uuid("01HXYZ") != stable_uuid("01HXYY")
