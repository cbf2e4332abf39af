"""Memory (issue 12): spans held by run assembly as their bytes convert exactly as spans still parsed; freed heap
and chDB's start-up library pages go back to the OS."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import pytest

from otel_bridge import memory
from otel_bridge.exporters.clickhouse import ClickHouseConversion
from otel_bridge.exporters.flightdeck import FlightDeckConversion
from otel_bridge.exporters.observatory import ObservatoryConversion
from otel_bridge.processors.flightdeck import FlightDeckMapping
from otel_bridge.processors.redact import Redactor
from otel_bridge.processors.runs import RunAssembler, assemble
from otel_bridge.processors.stages import redact_span
from otel_bridge.semconv import recognise
from otel_bridge.spans import ProtoAttributes, ProtoEvents, spans_from_otlp_proto

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "otlp").glob("*.traces.pb"))


def _agents(body: bytes) -> list:
    return [recognise(s) for s in spans_from_otlp_proto(body).items]


def _fields(a) -> dict:  # noqa: ANN001
    """Everything recognition decided about a span, and the span as a stage reads it."""
    out = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name not in ("span", "redactor")}
    s = a.span
    out["attributes"] = dict(s.attributes)
    out["events"] = [(e.name, e.time_ns, dict(e.attributes)) for e in s.events]
    return out


def _convert(agents: list) -> list:
    """Every destination's conversion of the fixture, one trace at a time, after the redaction stage."""
    redactor = Redactor(secrets=True, pii=True)
    converters = [
        ClickHouseConversion("app", FlightDeckMapping()),
        ObservatoryConversion("app"),
        FlightDeckConversion(FlightDeckMapping()),
    ]
    traces: dict[str, dict] = defaultdict(dict)
    for a in agents:
        traces[a.trace_id][a.span_id] = a
    out = []
    for spans in traces.values():
        runs = assemble(spans)
        ordered = sorted(spans.values(), key=lambda a: a.span.start_ns)
        for a in ordered:
            redact_span(a, redactor)
        for c in converters:
            out.append(c.trace(ordered, runs, frozenset()))
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name.split(".")[0])
def test_a_held_span_reads_and_converts_as_a_parsed_one(path):
    """Run assembly lets each span's parse go and keeps its bytes: recognition's results, the attributes and
    events a stage reads and every destination's items are the same as from spans never let go."""
    body = path.read_bytes()
    parsed, held = _agents(body), _agents(body)
    assert parsed, "fixture without spans"
    emitted: list = []
    assembler = RunAssembler(lambda spans, runs: emitted.extend(spans), wait=0.0, max_wait=0.0)
    assembler.add(held)
    for a in held:  # held as bytes: no parse left behind, from any of the three holders
        assert type(a.span.attributes) is ProtoAttributes and a.span.attributes._map is None
        assert a.span.attributes._source._span is None
        assert not isinstance(a.span.events, ProtoEvents) or a.span.events._events is None
    assembler.flush()
    assert sorted(a.span_id for a in emitted) == sorted(a.span_id for a in held)
    assert _convert(held) == _convert(parsed)
    assert [_fields(a) for a in held] == [_fields(a) for a in parsed]


def test_held_events_are_read_again_after_a_read_before_holding():
    """A failed span's exception event is read during recognition; after the parse is let go its events and
    their attributes read the same from the bytes."""
    failed = [a for p in FIXTURES for a in _agents(p.read_bytes()) if a.error and a.span.events]
    assert len(failed) >= 10, "the fixtures have failed spans with events"
    assert all(a.span.events._list is not None for a in failed)  # read by recognition (the exception's type)
    before = [[(e.name, e.time_ns, dict(e.attributes)) for e in a.span.events] for a in failed]
    RunAssembler(lambda spans, runs: None).add(failed)
    assert all(a.span.events._list is None for a in failed)
    assert [len(a.span.events) for a in failed] == [len(b) for b in before]
    assert [[(e.name, e.time_ns, dict(e.attributes)) for e in a.span.events] for a in failed] == before


def test_trim_returns_freed_heap_on_glibc():
    assert memory.trim() is True  # the service runs on glibc Linux; elsewhere it is a no-op returning False


def test_page_out_leaves_chdb_working(tmp_path):
    """The library pages chDB's start-up touched are advised out; what it needs is read back on use."""
    from otel_bridge.analytics.store import Store, StoreConfig

    with Store.open(StoreConfig(data_dir=str(tmp_path / "data"))) as store:
        before = _file_rss()
        assert memory.page_out_library("_chdb") > 100 << 20  # the engine's code and read-only data
        assert _file_rss() < before
        assert store.query("SELECT count() AS n FROM otel_bridge.spans")[0]["n"] == 0
    assert memory.page_out_library("no-such-library") == 0


def _file_rss() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss_File:") or line.startswith("Pss_File:"):
            return int(line.split()[1])
    raise AssertionError("no file-backed RSS in smaps_rollup")
