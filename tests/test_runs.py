"""Run assembly with a fake clock, and the Run → FlightDeck RunEvent mapping."""

from __future__ import annotations

import pytest

from otel_bridge.processors.flightdeck import FlightDeckMapping, run_events
from otel_bridge.processors.runs import EMIT_BATCH, SPAN_OBJECTS, RunAssembler, assemble
from otel_bridge.semconv import AgentSpan, recognise, run_id
from otel_bridge.spans import STATUS_ERROR, BridgeSpan

T = "ab" * 16


def span(sid: str, parent: str | None, attrs: dict, *, start: int = 0, end: int = 1_000_000, trace: str = T,
         error: bool = False, resource: dict | None = None, name: str = "") -> AgentSpan:  # fmt: skip
    s = BridgeSpan(trace, sid.rjust(16, "0"), parent.rjust(16, "0") if parent else None, name or sid, 1, start, end,
                   STATUS_ERROR if error else 0, "", attrs, [], resource or {"service.name": "svc", "service.version": "1.0"})  # fmt: skip
    return recognise(s)


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support", "gen_ai.agent.id": "agent-7"}


def llm(model: str, inp: int, cached: int, out: int, provider: str = "openai") -> dict:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": inp, "gen_ai.usage.cache_read.input_tokens": cached, "gen_ai.usage.output_tokens": out}  # fmt: skip


TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def assembler(**kw):  # noqa: ANN003, ANN201
    out: list = []
    clock = Clock()
    a = RunAssembler(lambda spans, runs: out.extend(runs), clock=clock, wait=5, max_wait=30, **kw)
    return a, clock, out


def test_children_arriving_after_the_root_within_the_wait_join_its_run():
    a, clock, runs = assembler()
    a.add([span("1", None, AGENT), span("2", "1", llm("gpt-4o", 100, 20, 10))])
    clock.now = 4
    a.add([span("3", "1", llm("gpt-4o", 50, 0, 5))])  # a later OTLP batch
    assert a.poll() == 0  # quiet for 0 s since the last span
    clock.now = 9.1
    assert a.poll() == 1
    (run,) = runs
    assert run.root.span_id.endswith("1") and len(run.spans) == 3 and run.total("input_tokens") == 150


def test_late_span_after_emission_is_counted_not_merged():
    a, clock, runs = assembler()
    a.add([span("1", None, AGENT)])
    clock.now = 6
    a.poll()
    a.add([span("4", "1", llm("gpt-4o", 1, 0, 1))])
    clock.now = 20
    a.poll()
    assert len(runs) == 1 and len(runs[0].spans) == 1
    assert a.counters["late_spans"] == 1


def test_root_not_seen_waits_max_wait_and_the_cap_emits_early():
    a, clock, runs = assembler(max_traces=2)
    a.add([span("2", "1", llm("gpt-4o", 1, 0, 1))])  # child of a root that has not arrived
    clock.now = 10
    assert a.poll() == 0  # root unseen: held up to max_wait
    clock.now = 31
    assert a.poll() == 1  # the local root with LLM descendants becomes the run
    for trace in ("cd" * 16, "ef" * 16, "01" * 16):
        a.add([span("1", None, AGENT, trace=trace)])
    assert a.counters["early"] == 1 and a.in_flight == 2  # oldest trace assembled early past the cap


def test_in_process_open_spans_hold_the_trace():
    a, clock, runs = assembler()
    root = span("1", None, AGENT)
    a.started(root)
    a.add([span("2", "1", llm("gpt-4o", 1, 0, 1))])
    clock.now = 100
    assert a.poll() == 0  # the root is still running
    a.add([root], ended_open=True)
    clock.now = 106
    assert a.poll() == 1 and len(runs[0].spans) == 2


def test_outermost_agent_nested_agents_and_traces_without_runs():
    spans = [span("1", None, {}), span("2", "1", AGENT), span("3", "2", {**AGENT, "gen_ai.agent.name": "sub"}),
             span("4", "3", llm("gpt-4o", 10, 0, 1)), span("5", "1", llm("gpt-4o-mini", 1, 0, 1))]  # fmt: skip
    (run,) = assemble({s.span_id: s for s in spans})
    assert run.root.span_id.endswith("2") and {s.span_id[-1] for s in run.spans} == {"2", "3", "4"}
    only_llm = [span("1", None, {}), span("2", "1", llm("gpt-4o", 1, 0, 1))]
    (run,) = assemble({s.span_id: s for s in only_llm})
    assert run.root.span_id.endswith("1")  # no agent: the local root with LLM descendants
    assert assemble({s.span_id: s for s in [span("1", None, {}), span("2", "1", TOOL)]}) == []


def _run(resource: dict | None = None, error: bool = False, root_attrs: dict | None = None):  # noqa: ANN202
    spans = [
        span(
            "1",
            None,
            {**AGENT, **(root_attrs or {})},
            start=1_000_000_000,
            end=3_500_000_000,
            error=error,
            resource=resource,
            name="triage",
        ),
        span("2", "1", llm("gpt-4o", 1000, 400, 100)),
        span("3", "1", llm("gpt-4o-mini", 300, 0, 50)),
        span("4", "1", llm("gpt-4o", 500, 100, 20)),
        span("5", "1", TOOL),
        span("6", "1", TOOL),
    ]
    (run,) = assemble({s.span_id: s for s in spans})
    return run


def test_run_event_mapping():
    event, = run_events(_run({"service.name": "svc", "service.version": "1.0", "flightdeck.release_id": "rel_res",
                              "deployment.environment.name": "prod", "tenant.id": "acme"}), FlightDeckMapping())  # fmt: skip
    assert event["release_id"] == "rel_res" and event["agent_id"] == "agent-7" and event["tenant_id"] == "acme"
    assert event["task_id"] == "triage" and event["environment"] == "prod" and event["workspace_id"] == "ws_local"
    assert event["timestamp"] == "1970-01-01T00:00:03.500Z" and event["type"] == "run_end"
    assert event["run_id"] == run_id(T, "1".rjust(16, "0"))
    assert event["metrics"] == {"latency_ms": 2500, "success": True, "error_type": None}
    usage = event["usage"]["model"]
    # Summed over every LLM span; input excludes the cached tokens FlightDeck prices separately.
    assert usage == {
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1800 - 500,
        "output_tokens": 170,
        "cached_input_tokens": 500,
    }
    assert event["usage"]["tools"] == [{"tool_name": "lookup", "invocations": 2}]
    assert event["labels"] == {"service.name": "svc", "service.version": "1.0", "models": "gpt-4o,gpt-4o-mini"}
    assert event["request"]["trace_id"] == T


@pytest.mark.parametrize(
    ("resource", "mapping", "release"),
    [
        (
            {"service.name": "svc", "service.version": "2.0"},
            FlightDeckMapping(release_map={"svc@2.0": "rel_map"}, release_id="rel_default"),
            "rel_map",
        ),
        (
            {"service.name": "svc", "service.version": "3.0"},
            FlightDeckMapping(release_map={"svc@2.0": "rel_map"}, release_id="rel_default"),
            "rel_default",
        ),
        ({"service.name": "svc", "service.version": "3.0"}, FlightDeckMapping(), None),
    ],
)
def test_release_precedence_and_runs_without_release(resource, mapping, release):
    events = run_events(_run(resource), mapping)
    assert [e["release_id"] for e in events] == ([release] if release else [])


def test_failed_run_defaults_and_opt_in_run_start():
    mapping = FlightDeckMapping(
        release_id="rel", tenant_id="t", task_id="task", environment="staging", emit_run_start=True
    )
    start, end = run_events(_run(error=True, root_attrs={"error.type": "Timeout", "gen_ai.agent.id": ""}), mapping)
    assert end["metrics"]["success"] is False and end["metrics"]["error_type"] == "Timeout"
    assert (end["tenant_id"], end["task_id"], end["environment"]) == ("t", "task", "staging")
    assert start["type"] == "run_start" and start["run_id"] == end["run_id"] + ":start"  # FlightDeck: first write wins
    assert start["timestamp"] == "1970-01-01T00:00:01.000Z"


def test_bytes_bound_assembles_the_oldest_trace_early_and_counts_it():
    """Memory is bounded by what the held spans weigh, not only by how many traces: a few traces carrying long
    conversations are cut early (counted) while the count bound is far away; a re-sent span is not counted twice."""
    text = "x" * 10_000
    a, clock, runs = assembler(max_traces=1000, max_bytes=30_000)
    for trace in ("cd" * 16, "ef" * 16):
        a.add([span("1", None, AGENT | {"input.value": text}, trace=trace)])
        a.add([span("1", None, AGENT | {"input.value": text}, trace=trace)])  # re-sent: replaces, not adds
    assert (
        a.in_flight == 2 and a.counters["cut_for_bytes"] == 0 and 2 * (SPAN_OBJECTS + 10_000) < a.held_bytes <= 30_000
    )
    assert not a.has_room()  # past 80 % of the bound receivers push back before anything is cut
    a.add([span("1", None, AGENT | {"input.value": text}, trace="01" * 16)])
    assert a.counters["cut_for_bytes"] == 1 and a.counters["early"] == 1 and a.in_flight == 2
    assert [r.trace_id for r in runs] == ["cd" * 16]  # the oldest went first, as a whole run
    a.flush()
    assert a.in_flight == 0 and a.held_bytes == 0 and a.has_room()


def test_traces_being_converted_still_count_against_the_bounds():
    """A poll takes every due trace at once and converts them one by one: until a trace's conversion is over its
    spans are still in memory, so receivers keep pushing back (else intake would refill the bound meanwhile)."""
    text = "x" * 10_000
    clock = Clock()
    seen: list[tuple[int, int, bool]] = []
    holder: list[RunAssembler] = []

    def emit(spans, runs):  # noqa: ANN001
        a = holder[0]
        seen.append((a.in_flight, a.held_bytes, a.has_room()))

    a = RunAssembler(emit, clock=clock, wait=5, max_wait=30, max_traces=1000, max_bytes=30_000)
    holder.append(a)
    for trace in ("cd" * 16, "ef" * 16):
        a.add([span("1", None, AGENT | {"input.value": text}, trace=trace)])
    held = a.held_bytes
    clock.now = 10
    assert a.poll() == 2
    one = held // 2
    assert seen == [(2, held, False), (1, held - one, True)]  # the first trace converting holds both; then one
    assert a.in_flight == 0 and a.held_bytes == 0


def test_protobuf_spans_carry_their_encoded_size():
    from pathlib import Path

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_bridge.spans import spans_from_otlp_proto

    body = (Path(__file__).parent / "fixtures" / "otlp" / "openllmetry.traces.pb").read_bytes()
    spans = spans_from_otlp_proto(body).items
    wire = [
        s for rs in ExportTraceServiceRequest.FromString(body).resource_spans for ss in rs.scope_spans for s in ss.spans
    ]
    assert spans and [s.size for s in spans] == [len(w.SerializeToString()) for w in wire]


def test_due_traces_go_to_emit_many_in_batches_and_are_let_go_after_each():
    """With ``emit_many`` the traces of one pass are handed over ``EMIT_BATCH`` at a time (converted together),
    each trace whole, in arrival order; what the assembler counts as held falls to nothing once they are through."""
    batches: list[list] = []
    held_during: list[int] = []

    def emit_many(batch: list) -> None:
        batches.append(batch)
        held_during.append(a.held_bytes)

    a = RunAssembler(lambda spans, runs: pytest.fail("emit_many given: no trace goes one by one"), emit_many=emit_many,
                     clock=Clock(), wait=5, max_wait=30, max_traces=10_000)  # fmt: skip
    n = 2 * EMIT_BATCH + 5
    for i in range(n):
        t = f"{i + 1:032x}"
        a.add([span("1", None, AGENT, trace=t), span("2", "1", llm("gpt-4o", 10, 0, 1), trace=t)])
    assert a.flush() == n
    assert [len(b) for b in batches] == [EMIT_BATCH, EMIT_BATCH, 5]
    assert [spans[0].trace_id for b in batches for spans, _ in b] == [f"{i + 1:032x}" for i in range(n)]
    assert all(len(spans) == 2 and len(runs) == 1 for b in batches for spans, runs in b)
    assert held_during[0] > held_during[1] > held_during[2] > 0  # each batch let go before the next is converted
    assert a.held_bytes == 0 and a.in_flight == 0
