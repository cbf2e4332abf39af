"""Each destination converts AgentSpan/Run itself: only the destinations that are on, none from another's output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_inprocess import _chat

from otel_bridge.exporters.clickhouse import ClickHouseConversion, event_row
from otel_bridge.exporters.observatory import ObservatoryConversion
from otel_bridge.exporters.rows import encode_row
from otel_bridge.inspect import agent_spans
from otel_bridge.pipeline import Pipeline, PipelineOptions, build_inprocess
from otel_bridge.processors.flightdeck import FlightDeckMapping
from otel_bridge.processors.observatory import CUSTOM_EVENTS
from otel_bridge.processors.runs import assemble
from otel_bridge.semconv import recognise
from otel_bridge.spans import span_from_sdk, spans_from_otlp_proto
from otel_bridge.worker import RowShipper, WorkerLedger

OTLP_FIXTURES = Path(__file__).parent / "fixtures" / "otlp"


def _spans(turns: list[tuple[list[tuple[str, str]], str]]):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("invoke_agent support", attributes={"gen_ai.operation.name": "invoke_agent"}):
        for history, reply in turns:  # one trace: its chat messages share a thread
            _chat(tracer, history, reply)
    provider.shutdown()
    return [recognise(span_from_sdk(s)) for s in memory.get_finished_spans()]


def test_only_destinations_that_are_on_get_a_converter(observatory_sink):
    pipeline: Pipeline = build_inprocess(observatory_url=observatory_sink.url, only=("observatory",))
    try:
        assert list(pipeline.converters) == ["observatory"]
    finally:
        pipeline.shutdown(1.0)


def test_clickhouse_events_do_not_depend_on_observatory_being_on():
    """Two turns of one conversation: the second re-sends the first turn's history, which both destinations
    de-duplicate on their own state, so ClickHouse's events rows are the same with or without Observatory."""
    turns = [([("user", "hi")], "hello"), ([("user", "hi"), ("assistant", "hello"), ("user", "how much?")], "5 EUR")]
    observatory, alone, beside = (
        ObservatoryConversion("app"),
        ClickHouseConversion("app", FlightDeckMapping()),
        ClickHouseConversion("app", FlightDeckMapping()),
    )
    expected, rows_alone, rows_beside = [], [], []
    spans = _spans(turns)
    for a in spans:
        events = observatory.trace([a], [], frozenset())
        expected += [encode_row(event_row(e)) for e in events if e["name"] in CUSTOM_EVENTS]
        rows_beside += beside.trace([a], [], frozenset())
    for a in spans:
        rows_alone += alone.trace([a], [], frozenset())
    chats = [row for table, row in rows_alone if table == "events"]
    assert len(chats) == 4  # hi, hello, how much?, 5 EUR: the repeated history is not counted twice
    assert chats == [row for table, row in rows_beside if table == "events"] == expected
    assert [t for t, _ in rows_alone].count("spans") == 3


def test_chat_events_are_the_same_whichever_process_converts_a_trace():
    """A conversation of three calls, each its own trace (as an app serving a chat sends them): converted by one
    process, by two (traces shared out as `serve`'s workers get them) or again after a restart, it gives the same
    events rows — each message once, with one id and one time."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    history: list[tuple[str, str]] = []
    for question, reply in [("hi", "hello"), ("how much?", "5 EUR"), ("hi", "hello again")]:
        history.append(("user", question))
        with tracer.start_as_current_span("invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent"}):
            _chat(tracer, history, reply, extra={"gen_ai.conversation.id": "conv-7"})
        history.append(("assistant", reply))
    provider.shutdown()
    spans = [recognise(span_from_sdk(s)) for s in memory.get_finished_spans()]
    traces = [[a for a in spans if a.trace_id == t] for t in dict.fromkeys(a.trace_id for a in spans)]

    def chat_rows(conversions, order):
        out = []
        for i in order:
            out += [row for table, row in conversions[i % len(conversions)].trace(traces[i], [], frozenset())
                    if table == "events"]  # fmt: skip
        return sorted(out)

    one = chat_rows([ClickHouseConversion("app", FlightDeckMapping())], [0, 1, 2])
    assert len(one) == 6  # hi, hello, how much?, 5 EUR, hi (the second time), hello again
    two = chat_rows([ClickHouseConversion("app", FlightDeckMapping()) for _ in range(2)], [0, 1, 2])
    restarted = chat_rows([ClickHouseConversion("app", FlightDeckMapping())], [2, 0, 1])
    assert one == two == restarted
    assert all(b',"conv-7",' in row for row in one), one[0]
    observatory = ObservatoryConversion("app")
    events = [e for t in traces for e in observatory.trace(t, [], frozenset()) if e["name"] == "chat"]
    assert sorted(encode_row(event_row(e)) for e in events) == one  # the rows Observatory's events make


@pytest.mark.parametrize("path", sorted(OTLP_FIXTURES.glob("*.traces.pb")), ids=lambda p: p.name.split(".")[0])
def test_each_chat_message_of_a_real_instrumentation_is_reported_once(path):
    """Real instrumentations' traces, converted trace by trace as the pipeline does: an agent loop in one LLM span
    (Google ADK) or in one span per call (history and tool-call turns re-sent by each), a conversation over several
    traces. Every distinct user or assistant text of a thread (the n-th copy of a text counted apart) becomes one
    chat event: none lost, none twice. A thread is the conversation or session, else (Observatory's own grouping)
    an agent and user within the trace: a handoff's next agent starts its own."""
    logs = path.with_name(path.name.replace(".traces.pb", ".logs.pb"))
    agents = agent_spans([path, *([logs] if logs.exists() else [])])
    traces: dict[str, list] = {}
    for a in agents:
        traces.setdefault(a.trace_id, []).append(a)
    conversion = ObservatoryConversion("app")
    events = [e for t in traces.values() for e in conversion.trace(t, [], frozenset()) if e["name"] == "chat"]
    expected = set()
    for a in agents:
        if a.kind == "llm":
            thread = a.conversation_id or a.session_id or (a.agent, a.user_id or a.user_email, a.trace_id)
            counts: Counter = Counter()
            for m in a.input_messages + a.output_messages:
                if m.role in ("user", "assistant") and m.content:
                    counts[m.role, m.content] += 1
                    expected.add((thread, m.role, m.content, counts[m.role, m.content]))
    meta = [e["metadata"] for e in events]
    reported = Counter(
        (e.get("thread_id") or (m.get("agent"), m.get("user_id") or m.get("user_email"), m["trace_id"]),
         e["role"], e["content"]) for e, m in zip(events, meta, strict=True)
    )  # fmt: skip
    assert reported == Counter((thread, role, content) for thread, role, content, _ in expected)


@pytest.mark.parametrize("path", sorted(OTLP_FIXTURES.glob("*.traces.pb")), ids=lambda p: p.name.split(".")[0])
def test_tool_calls_read_from_model_outputs_are_those_the_model_server_asked_for(path):
    """The tool calls read from LLM output messages, whatever the convention, are the ones the fake model server
    answered with (the fixture's record of it): never invented, and every one where the instrumentation records
    them — Strands as Bedrock Converse ``toolUse`` blocks in JSON text, which used to be read as message text."""
    expected = json.loads(path.with_name(path.name.replace(".traces.pb", ".expected.json")).read_text())
    asked = {(t["call_id"], t["name"]) for t in expected["tool_calls"]}
    read = {(c.id, c.name) for a in agent_spans([path]) if a.kind == "llm" for m in a.output_messages
            for c in m.tool_calls}  # fmt: skip
    assert read <= asked
    if expected["convention"] == "strands":
        assert read == asked and len(asked) >= 2


def test_converted_traces_leave_no_reference_cycles():
    """Every fixture trace recognised, assembled and converted for all three destinations: what is left afterwards
    is freed by reference counting alone. A cycle through a trace's spans (a nested function calling itself held
    them all) kept every span's memory until the garbage collector ran, and made its runs cost 10 % of a worker."""
    import gc
    from pathlib import Path

    from otel_bridge.pipeline import PipelineOptions
    from otel_bridge.spans import spans_from_otlp_proto
    from otel_bridge.worker import RowShipper, WorkerLedger

    offered: list = []

    class Collect(RowShipper):  # a destination's queue: keeps what the conversion offered, nothing else
        def offer_many(self, items, pos=None):
            offered.extend(items)
            return len(items)

    ledger = WorkerLedger()
    exporters = {name: Collect(None, ledger) for name in ("observatory", "flightdeck", "clickhouse")}
    pipeline = Pipeline(exporters, PipelineOptions(wait=60, max_wait=60), ledger=ledger)
    pipeline._stop.set()
    bodies = [p.read_bytes() for p in sorted((Path(__file__).parent / "fixtures" / "otlp").glob("*.traces.pb"))]
    gc.collect()
    gc.disable()
    try:
        for i, body in enumerate(bodies):
            pipeline.submit_spans(spans_from_otlp_proto(body).items, i + 1)
        pipeline.assembler.flush()
        assert len(offered) > 200 and {type(x) for x in offered} >= {dict, tuple}
        assert gc.collect() < 50  # a handful from the first use of protobuf classes, not thousands
    finally:
        gc.enable()


def _fixture_traces() -> list[tuple[list, list]]:
    """Every committed real-instrumentation trace, recognised and assembled into runs as the pipeline hands it on."""
    traces: dict[str, dict] = {}
    for a in agent_spans(sorted(OTLP_FIXTURES.glob("*.traces.pb"))):
        traces.setdefault(a.trace_id, {})[a.span_id] = a
    return [(list(spans.values()), assemble(spans)) for spans in traces.values()]


def test_a_batch_of_traces_gives_each_trace_the_rows_it_gets_alone():
    """ClickHouse converts the traces of an assembly pass together, a step at a time over all of them: each
    trace's rows are exactly those it gets converted on its own, in the same order."""
    one_by_one = ClickHouseConversion("app", FlightDeckMapping())
    alone = [one_by_one.trace(spans, runs, frozenset()) for spans, runs in _fixture_traces()]
    batch = [(spans, runs, frozenset()) for spans, runs in _fixture_traces()]
    assert ClickHouseConversion("app", FlightDeckMapping()).traces(batch) == alone
    assert {table for rows in alone for table, _ in rows} == {"spans", "runs", "events"}
    assert len(alone) > 20  # every fixture: dozens of traces, of every framework


def test_a_trace_whose_conversion_fails_costs_only_itself(monkeypatch):
    """A pass's traces are converted together; when that fails they are converted again one by one: every other
    trace's rows are delivered as they would have been, the failing trace is counted, and no spool position it or
    the others came from stays held."""
    requests = [p.read_bytes() for p in sorted(OTLP_FIXTURES.glob("*.traces.pb"))]
    original = ClickHouseConversion._run_line

    def run(fail_trace: str | None) -> tuple[list, dict, int]:
        ledger, rows = WorkerLedger(), []
        pipeline = Pipeline(
            {"clickhouse": RowShipper(lambda message: rows.extend(message[2]), ledger)},
            PipelineOptions(wait=3600, max_wait=3600),
            ledger=ledger,
        )

        def run_line(run, identity):  # noqa: ANN001, ANN202 - a conversion bug in one trace
            if run.trace_id == fail_trace:
                raise ValueError("a conversion bug")
            return original(run, identity)

        monkeypatch.setattr(ClickHouseConversion, "_run_line", staticmethod(run_line))
        try:
            for pos, body in enumerate(requests, start=1):
                ledger.receive(pos)
                pipeline.submit_spans(spans_from_otlp_proto(body).items, pos)
                ledger.release(pos)
            pipeline.force_flush(60)
        finally:
            pipeline.shutdown(10)
        return rows, ledger.drained(), pipeline.counters["conversion_errors"]

    clean, drained, errors = run(None)
    assert errors == 0 and drained == dict.fromkeys(range(1, len(requests) + 1), 1)
    bad = next(line.split(b'"')[3].decode() for table, line in clean if table == "runs")  # a trace with a run
    rows, drained, errors = run(bad)
    assert errors == 1
    assert drained == dict.fromkeys(range(1, len(requests) + 1), 1)  # nothing held: the spool may let go
    lost = [line for line in clean if line not in rows]
    assert rows == [line for line in clean if line not in lost]  # the others, in the same order
    assert lost and all(bad.encode() in line for table, line in lost if table in ("spans", "runs"))
    assert [t for t, line in clean if t == "spans" and bad.encode() in line] == [t for t, _ in lost if t == "spans"]
