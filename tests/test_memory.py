"""Memory (issue 12): spans held by run assembly as their bytes convert exactly as spans still parsed; freed heap
and chDB's start-up library pages go back to the OS."""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from otel_bridge import memory
from otel_bridge.exporters.clickhouse import ClickHouseConversion
from otel_bridge.exporters.flightdeck import FlightDeckConversion
from otel_bridge.exporters.observatory import ObservatoryConversion
from otel_bridge.messages import CONTENT_KEYS, CONTENT_PREFIXES, content_attributes
from otel_bridge.processors.flightdeck import FlightDeckMapping
from otel_bridge.processors.redact import Redactor
from otel_bridge.processors.runs import RunAssembler, assemble
from otel_bridge.processors.stages import redact_span
from otel_bridge.semconv import recognise
from otel_bridge.server.metrics import process_usage
from otel_bridge.spans import ProtoAttributes, ProtoEvents, has_event, spans_from_otlp_proto

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


def test_a_held_span_is_parsed_again_only_for_keys_it_has():
    """Let go, a span keeps its attribute names: asking it for message content it lacks (a tool span's) parses
    nothing, asking for content it has parses it once."""
    agents = [a for p in FIXTURES for a in _agents(p.read_bytes())]
    RunAssembler(lambda spans, runs: None).add(agents)
    has = {
        a.span_id: any(k in CONTENT_KEYS or k.startswith(CONTENT_PREFIXES) for k in a.span.attributes) for a in agents
    }
    assert all(a.span.attributes._source._span is None for a in agents)  # the names answered, nothing parsed
    assert 0 < sum(has.values()) < len(agents)
    for a in agents:
        content = content_attributes(a.span)
        assert bool(content) == has[a.span_id] and (a.span.attributes._source._span is not None) == has[a.span_id]


def test_a_held_span_answers_which_events_it_has_without_a_parse():
    """Let go, a span keeps its event names: the stages looking for custom or message events it lacks (most
    spans' events are exceptions or framework steps) parse nothing."""
    agents = [a for p in FIXTURES for a in _agents(p.read_bytes())]
    names = {a.span_id: [e.name for e in a.span.events] for a in agents}
    RunAssembler(lambda spans, runs: None).add(agents)
    with_events = [a for a in agents if names[a.span_id]]
    assert len(with_events) >= 10, "the fixtures have spans with events"
    for a in with_events:
        assert list(a.span.events.names()) == names[a.span_id]
        assert not has_event(a.span.events, ("no-such-event",))
    assert all(a.span.attributes._source._span is None for a in agents)  # the names answered, nothing parsed


def test_full_collections_are_spaced_by_their_own_cost():
    """A full collection of a busy worker's objects takes a third of a second: it must not come every 10 s."""
    assert memory.collect_interval(0.001) == memory.COLLECT_MIN  # an idle process: soon, cycles freed quickly
    for took in (0.05, 0.1, 0.3):  # up to a worker holding the largest backlog
        assert took / (took + memory.collect_interval(took)) <= memory.COLLECT_SHARE
    assert memory.collect_interval(1.0) == memory.COLLECT_MAX  # cyclic garbage waits this long at most


_ARENAS = """
import ctypes, importlib.util, os, sys, threading
# memory.py alone: importing the package first runs the OpenTelemetry SDK's resource detection, whose threads
# make arenas of their own before any cap can apply
spec = importlib.util.spec_from_file_location("memory", sys.argv[2])
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
if sys.argv[1] == "limit":
    assert memory.limit_arenas() == len(os.sched_getaffinity(0))
if sys.argv[1] == "operator":
    assert memory.limit_arenas() == 0  # the operator's GLIBC_TUNABLES stands
n = 4 * len(os.sched_getaffinity(0))
barrier, kept = threading.Barrier(n + 1), []
def allocate():
    kept.append(bytearray(50_000))  # from this thread's malloc arena (below the mmap threshold)
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(n)]
[t.start() for t in threads]
barrier.wait()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


@pytest.mark.parametrize("mode", ["limit", "default", "operator"])
def test_malloc_arenas_are_capped_at_the_cores(mode):
    """chDB's threads each grew an arena of their own; after ``limit_arenas`` threads share one per core, unless
    the operator set a cap of their own."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX")}
    if mode == "operator":
        env["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=3"
    argv = [sys.executable, "-c", _ARENAS, mode, memory.__file__]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    arenas = out.stderr.count("Arena ")
    cores = len(os.sched_getaffinity(0))
    expected = {"limit": arenas <= cores, "default": arenas > cores, "operator": arenas <= 3}  # default: 8 per core
    assert expected[mode], out.stderr


def test_a_process_reports_its_cpu_seconds_as_the_kernel_counts_them():
    """CPU per span by process is the sizing figure: /metrics reports each process's CPU seconds from /proc."""
    before = process_usage()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # busy: user time
        pass
    after = process_usage()
    spent = after["cpu_seconds"] - before["cpu_seconds"]
    assert 0.25 <= spent <= 0.3 + 0.5  # clock ticks of 10 ms; other threads of pytest may run meanwhile
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert abs(after["cpu_seconds"] - (usage.ru_utime + usage.ru_stime)) < 0.1
    assert after["peak_rss_bytes"] >= after["rss_bytes"] >= after["anon_rss_bytes"] > 0
    assert process_usage(2**22 + 12345)["cpu_seconds"] == 0.0  # no such process: nothing, no error


def test_trim_returns_freed_heap_on_glibc():
    assert memory.trim() is True  # the service runs on glibc Linux; elsewhere it is a no-op returning False


def test_the_store_inserts_and_reads_without_importing_pandas(tmp_path):
    """``serve`` keeps clickhouse-connect from importing pandas (~70 MiB) at its first insert; rows are lists, so
    migrations, row inserts and queries work as with pandas absent. Own interpreter: another test may import it."""
    script = f"""
import sys
from otel_bridge import memory
from otel_bridge.analytics.store import Store, StoreConfig
memory.without_pandas()
with Store.open(StoreConfig(data_dir={str(tmp_path / "data")!r})) as store:
    store.insert("schema_migrations", [[999, "a row inserted as a list"]], ["version", "description"])
    rows = store.query("SELECT version, description FROM otel_bridge.schema_migrations WHERE version = 999")
assert rows == [{{"version": 999, "description": "a row inserted as a list"}}], rows
assert "pandas" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


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


# ---------------------------------------------------------------------------------------------- ClickHouse queue


def _rows() -> list:
    """Real ClickHouse items: the conversion's encoded lines for a real-instrumentation fixture."""
    agents = _agents((FIXTURES[0].parent / "openai_v2_content.traces.pb").read_bytes())
    conversion = ClickHouseConversion("app", FlightDeckMapping())
    traces: dict[str, dict] = defaultdict(dict)
    for a in agents:
        traces[a.trace_id][a.span_id] = a
    rows = [
        row for spans in traces.values() for row in conversion.trace(list(spans.values()), assemble(spans), frozenset())
    ]
    assert rows and all(type(line) is bytes for _, line in rows)
    return rows


def test_a_byte_bounded_queue_takes_what_was_acknowledged_and_pushes_back(tmp_path):
    """Past ``max_queue_bytes`` the engine says "no room" (receivers answer retry-later), yet rows offered with a
    spool position — acknowledged already — are all taken and held until written; rows offered without one
    (in-process) are dropped and counted, never blocking the app."""
    from otel_bridge.analytics.store import Store, StoreConfig
    from otel_bridge.exporters.batch import BatchExporter, Ledger, item_size
    from otel_bridge.exporters.clickhouse import ClickHouseSender

    rows = _rows()
    weight = sum(map(item_size, rows))
    with Store.open(StoreConfig(data_dir=str(tmp_path / "data"))) as store:
        ledger = Ledger()
        engine = BatchExporter(ClickHouseSender(store), max_queue=100_000, max_queue_bytes=weight // 2,
                               max_batch=100_000, ledger=ledger, start=False)  # fmt: skip
        assert engine.has_room(len(rows))
        assert engine.offer_many(rows, pos=7) == len(rows)  # acknowledged: all of it, past the bound
        assert engine.queue_bytes == weight and not engine.has_room(1) and ledger.held() == {7: len(rows)}
        assert engine.offer_many(rows[:3]) == 0 and engine.stats()["dropped"] == 3  # in-process: dropped, counted
        assert engine.force_flush(30)
        assert engine.queue_bytes == 0 and engine.has_room(len(rows)) and ledger.held() == {}
        stored = store.query("SELECT count() AS n FROM otel_bridge.spans")[0]["n"]
        assert stored == sum(table == "spans" for table, _ in rows) and engine.stats()["dropped"] == 3
        engine.shutdown(5)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_retry_later_past_the_clickhouse_queue_bytes_and_loses_nothing(tmp_path, workers):
    """Rows waiting for their insert weigh more than ``max_queue_bytes``: the next request is refused with the
    retryable status before it is acknowledged; what was acknowledged is all stored once the queue drains."""
    from delivery_helpers import count, llm_span, request, send, service, wait_until

    from otel_bridge.receivers.otlp import Refused

    svc = service(tmp_path, T_WORKERS=workers, T_CH_INTERVAL="1h", T_CH_QUEUE_BYTES="20KiB")
    try:
        big = {"gen_ai.prompt": "x" * 3000}
        assert send(svc, request([llm_span(i, attrs=big) for i in range(10)]))[0] == 10
        clickhouse = svc.pipeline.exporters["clickhouse"]
        assert wait_until(lambda: clickhouse.queue_bytes >= 20 * 1024, 30), "the rows reach the ClickHouse queue"
        with pytest.raises(Refused) as refused:
            send(svc, request([llm_span(100)]))
        assert refused.value.reason == "unavailable" and "retry later" in refused.value.message
        assert svc.pipeline.force_flush(30)
        assert count(svc, "SELECT count() FROM otel_bridge.spans FINAL") == 10
        assert clickhouse.queue_bytes == 0 and clickhouse.stats()["dropped"] == 0
        assert send(svc, request([llm_span(100)]))[0] == 1  # room again
    finally:
        svc.stop(20)
