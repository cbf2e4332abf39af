"""``service.workers`` (issue 12): requests split by trace id, stages in worker processes, ClickHouse owned by the
serving process, the delivery ledger across processes, a killed worker restarted with nothing lost.

The routing tests split the committed real-instrumentation fixtures; the pool tests run the real Service (spool,
worker processes spawned from this test, chDB, the strict Observatory sink) through the receivers' ``receive``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from delivery_helpers import attr, count, llm_span, request, send, service, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

from otel_bridge.receivers.otlp import Refused
from otel_bridge.routing import split, worker_of
from otel_bridge.spans import spans_from_otlp_json, spans_from_otlp_proto
from otel_bridge.worker import WorkerLedger
from otel_bridge.workerpool import WorkerPool

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
SPANS = "SELECT count() FROM otel_bridge.spans FINAL"


def _merged_fixtures(encoding: str) -> bytes:
    """Every committed fixture in one request, as a collector batching many apps would send it."""
    if encoding == "pb":
        merged = ExportTraceServiceRequest()
        for p in sorted(FIXTURES.glob("*.traces.pb")):
            merged.resource_spans.extend(ExportTraceServiceRequest.FromString(p.read_bytes()).resource_spans)
        return merged.SerializeToString()
    blocks = [b for p in sorted(FIXTURES.glob("*.traces.json")) for b in orjson.loads(p.read_bytes())["resourceSpans"]]
    return orjson.dumps({"resourceSpans": blocks})


def _decode(fmt: str, body: bytes) -> list:
    return (spans_from_otlp_proto if fmt == "proto" else spans_from_otlp_json)(body).items


def _identity(s) -> tuple:  # noqa: ANN001
    return (s.trace_id, s.span_id, s.name, s.scope_name, tuple(sorted(map(str, s.resource.items()))))


@pytest.mark.parametrize(("fmt", "encoding"), [("proto", "pb"), ("json", "json")])
@pytest.mark.parametrize("workers", [2, 3])
def test_split_keeps_every_span_once_with_its_resource_and_scope(fmt, encoding, workers):
    body = _merged_fixtures(encoding)
    whole = _decode(fmt, body)
    shares = split("traces", fmt, body, workers)
    assert shares.count == len(whole) and sum(p is not None for p in shares.parts) == workers
    seen: Counter = Counter()
    owner: dict[str, int] = {}
    for w, part in enumerate(shares.parts):
        spans = _decode(fmt, part)
        assert len(spans) == shares.counts[w]
        seen.update(_identity(s) for s in spans)
        for s in spans:
            assert owner.setdefault(s.trace_id, w) == w, "a trace split across workers"
            assert worker_of(bytes.fromhex(s.trace_id), workers) == w
    assert seen == Counter(_identity(s) for s in whole)


@pytest.mark.parametrize("workers", [2, 3])
def test_split_keeps_order_when_a_scope_interleaves_traces(workers):
    """One scope holding several traces' spans interleaved (as an SDK batch ends them), its header fields written
    between two spans (field order is free on the wire): each worker gets its spans in their order, under the
    same scope and resource, and nothing else."""
    merged = ExportTraceServiceRequest.FromString(_merged_fixtures("pb"))
    spans = [s for rs in merged.resource_spans for ss in rs.scope_spans for s in ss.spans]
    leaves = [_field(2, s.SerializeToString()) for s in sorted(spans, key=lambda s: s.end_time_unix_nano)]
    header = ScopeSpans(scope=InstrumentationScope(name="interleaved"), schema_url="https://example.com/s")
    scope = b"".join(leaves[:5]) + header.SerializeToString() + b"".join(leaves[5:])
    body = _field(1, _field(1, merged.resource_spans[0].resource.SerializeToString()) + _field(2, scope))
    whole = _decode("proto", body)
    assert len(whole) == len(spans) and {s.scope_name for s in whole} == {"interleaved"}
    assert len({s.trace_id for s in whole[:8]}) > 1  # neighbours of different traces
    shares = split("traces", "proto", body, workers)
    for w, part in enumerate(shares.parts):
        got = [_identity(s) for s in _decode("proto", part)] if part is not None else []
        owned = [s for s in whole if worker_of(bytes.fromhex(s.trace_id), workers) == w]
        assert got == [_identity(s) for s in owned] and len(got) == shares.counts[w]


def _field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field, encoded by hand to place fields in any order."""
    size, key = bytearray(), bytes([number << 3 | 2])
    n = len(value)
    while n >= 0x80:
        size.append(n & 0x7F | 0x80)
        n >>= 7
    size.append(n)
    return key + bytes(size) + value


def test_a_trace_goes_to_the_same_worker_as_protobuf_and_as_json():
    for p in sorted(FIXTURES.glob("*.traces.pb")):
        pb = split("traces", "proto", p.read_bytes(), 3)
        js = split("traces", "json", p.with_suffix(".json").read_bytes(), 3)
        assert pb.counts == js.counts, p.name


def test_a_request_of_one_worker_is_forwarded_as_it_came():
    body = request([llm_span(0), llm_span(0)])
    shares = split("traces", "json", body, 4)
    assert shares.parts[worker_of(bytes.fromhex(f"{1:032x}"), 4)] == body and shares.count == 2


def test_what_the_split_cannot_place_goes_to_worker_0():
    unreadable = {"traceId": "not-hex", "spanId": "00000000000000aa", "name": "x"}
    body = orjson.dumps({"resourceSpans": [
        {"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": [unreadable, llm_span(7)]}]},
        {"resource": {}, "scopeSpans": "wrong shape"},
    ]})  # fmt: skip
    shares = split("traces", "json", body, 2)
    assert shares.counts[0] >= 2 and shares.count == 3
    assert orjson.loads(shares.parts[0])["resourceSpans"][-1]["scopeSpans"] == "wrong shape"


def test_worker_ledger_reports_a_position_drained_only_when_nothing_holds_it():
    ledger = WorkerLedger()
    ledger.receive(5)
    ledger.hold(5, 3)  # what the pipeline derived from the share
    ledger.release(5)  # the share was handed over
    assert ledger.drained() == {}
    ledger.receive(5)
    ledger.release(5)
    ledger.release(5, 3)
    assert ledger.drained() == {5: 2} and ledger.drained() == {}


# ---------------------------------------------------------------------------------------------- the pool


def _trace(i: int, start: int) -> list[dict]:
    """An agent run of three spans: root agent → LLM call → tool call."""
    tid = f"{i + 1:032x}"
    root, llm, tool = f"{3 * i + 1:016x}", f"{3 * i + 2:016x}", f"{3 * i + 3:016x}"
    common = {"traceId": tid, "kind": 1, "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 5_000_000)}
    return [
        {**common, "spanId": llm, "parentSpanId": root, "name": "chat gpt-4o-mini",
         "attributes": [attr("gen_ai.operation.name", "chat"), attr("gen_ai.provider.name", "openai"),
                        attr("gen_ai.request.model", "gpt-4o-mini"), attr("gen_ai.usage.input_tokens", 10 + i),
                        attr("gen_ai.usage.output_tokens", 5)]},
        {**common, "spanId": tool, "parentSpanId": root, "name": "execute_tool lookup",
         "attributes": [attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", "lookup")]},
        {**common, "spanId": root, "name": "invoke_agent planner",
         "attributes": [attr("gen_ai.operation.name", "invoke_agent"), attr("gen_ai.agent.name", "planner")]},
    ]  # fmt: skip


def test_runs_are_assembled_whole_when_a_trace_arrives_in_pieces(tmp_path):
    """Every trace's spans come in two requests that mix 100 traces: each worker still sees whole traces."""
    svc = service(tmp_path, T_WORKERS="2")
    try:
        assert isinstance(svc.pipeline, WorkerPool)
        start = time.time_ns() - 10_000_000_000
        traces = [_trace(i, start) for i in range(100)]
        assert send(svc, request([t[0] for t in traces] + [t[1] for t in traces])) == (200, 0, None)
        assert send(svc, request([t[2] for t in traces])) == (100, 0, None)
        assert svc.pipeline.force_flush(30)
        assert wait_until(lambda: count(svc, "SELECT count() FROM otel_bridge.runs FINAL") >= 100, 60)
        runs = svc.store.query("SELECT agent, spans, input_tokens, output_tokens FROM otel_bridge.runs FINAL")
        assert len(runs) == 100 and {(r["agent"], r["spans"], r["output_tokens"]) for r in runs} == {("planner", 3, 5)}
        assert sorted(r["input_tokens"] for r in runs) == [10 + i for i in range(100)]
        assert count(svc, SPANS) == 300
        stats = svc.stats_snapshot()
        assert stats["pipeline"]["spans"] == 300 and stats["workers"] == {"workers": 2, "restarts": 0, "alive": 2}
        assert {"serve", "worker-0", "worker-1"} <= set(stats["processes"])
        assert wait_until(lambda: svc.spool.stats()["segments"] <= 1, 30), "delivered segments are deleted"
    finally:
        svc.stop(20)


def test_partial_success_and_refusals_come_from_the_workers(tmp_path):
    svc = service(tmp_path, T_WORKERS="2")
    try:
        good = [llm_span(i) for i in range(20)]
        accepted, rejected, message = send(svc, request(good + [llm_span(99, start_ns=0)]))
        assert (accepted, rejected) == (20, 1) and "0 or missing" in message
        with pytest.raises(Refused) as bad:
            send(svc, b'{"resourceSpans": 7}')
        assert bad.value.reason == "invalid" and "resourceSpans" in bad.value.message
        with pytest.raises(Refused) as garbage:
            send(svc, b"\x00not json")
        assert garbage.value.reason == "invalid" and "JSON" in garbage.value.message
    finally:
        svc.stop(20)


def test_a_worker_killed_under_load_loses_nothing_acknowledged(tmp_path, observatory_sink):
    """kill -9 of one worker while requests stream in: its successor gets the spool shares it held; every
    acknowledged span is stored exactly once and reaches Observatory at least once."""
    env = {"T_WORKERS": "2", "T_OBSERVATORY_URL": observatory_sink.url, "T_OBSERVATORY_KEY": observatory_sink.api_key}
    svc = service(tmp_path, **env)
    acked: list[int] = []
    try:
        pool: WorkerPool = svc.pipeline  # type: ignore[assignment]
        victim = pool.workers[1].pid
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set() and i < 3000:
                batch = [llm_span(i + j) for j in range(50)]
                try:
                    accepted = send(svc, request(batch))[0]
                except Refused as r:
                    assert r.reason == "unavailable", r.message
                    time.sleep(0.05)
                    continue  # the client retries the same batch
                assert accepted == 50
                acked.extend(range(i, i + 50))
                i += 50

        sender = threading.Thread(target=load)
        sender.start()
        assert wait_until(lambda: len(acked) >= 500, 60)
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: pool.restarts == 1 and pool.workers[1].ready.is_set(), 60)
        sender.join(120)
        assert not sender.is_alive() and len(acked) == 3000
        assert pool.workers[1].pid != victim
        assert svc.pipeline.force_flush(60)
        assert wait_until(lambda: count(svc, SPANS) >= 3000, 90)
        assert count(svc, SPANS) == 3000
        stored = {r["span_id"] for r in svc.store.query("SELECT span_id FROM otel_bridge.spans FINAL")}
        assert stored == {f"{i + 1:016x}" for i in acked}
        expected = {(f"{i + 1:032x}", name) for i in acked for name in ("llm_start", "llm_end")}
        got = lambda: {(e["metadata"]["trace_id"], e["name"]) for e in list(observatory_sink.events)}  # noqa: E731
        assert wait_until(lambda: got() >= expected, 90), len(expected - got())
        assert not observatory_sink.violations
        assert wait_until(lambda: svc.spool.stats()["segments"] <= 1, 60), "the successor drained what it replayed"
    finally:
        svc.stop(30)


def test_memory_bounds_are_shared_out_between_workers():
    from otel_bridge.config import parse_config
    from otel_bridge.workerpool import per_worker

    cfg = parse_config(
        "processors: {runs: {max_traces: 1001, max_bytes: 100MiB}}\n"
        "exporters: {observatory: {url: 'http://127.0.0.1:1', batch: {max_batch: 50, max_queue: 30000}}}\n"
    )
    each = per_worker(cfg, 2)
    assert (each.processors.runs.max_traces, each.processors.runs.max_bytes) == (501, 50 * 2**20)
    assert (
        each.exporters.observatory.batch.max_queue == 15000 and each.exporters.observatory.url == "http://127.0.0.1:1"
    )
    assert per_worker(cfg, 1000).exporters.observatory.batch.max_queue == 50  # never below one batch


@pytest.mark.parametrize(("fmt", "suffix"), [("proto", "pb"), ("json", "json")])
def test_log_records_go_where_their_trace_goes(fmt, suffix):
    """GenAI message events (log records) are attached to their span in run assembly: same worker as the span."""
    from otel_bridge.spans import logs_from_otlp_json, logs_from_otlp_proto

    decode_logs = logs_from_otlp_proto if fmt == "proto" else logs_from_otlp_json
    body = (FIXTURES / f"openai_v2_content.logs.{suffix}").read_bytes()
    traces = split("traces", fmt, (FIXTURES / f"openai_v2_content.traces.{suffix}").read_bytes(), 3)
    span_worker = {s.trace_id: w for w, part in enumerate(traces.parts) if part for s in _decode(fmt, part)}
    shares = split("logs", fmt, body, 3)
    records = [(w, r) for w, part in enumerate(shares.parts) if part for r in decode_logs(part).items]
    assert len(records) == len(decode_logs(body).items) == shares.count > 0
    assert all(span_worker[r.trace_id] == w for w, r in records if r.trace_id)


def test_a_worker_near_its_run_assembly_bound_makes_clients_retry(tmp_path):
    """Traces held for assembly are memory: past 80 % of a worker's share of max_traces the serving process answers
    UNAVAILABLE (what a client retries), instead of holding ever more or cutting runs early."""
    svc = service(tmp_path, T_WORKERS="2", T_WAIT="60s", T_MAX_WAIT="60s", T_MAX_TRACES="20")
    try:
        assert send(svc, request([llm_span(i) for i in range(40)]))[0] == 40  # 20 traces a worker, bound 10 each
        refused = wait_until(lambda: _refused(svc, request([llm_span(1000)])), 10)
        assert refused and refused.reason == "unavailable"
        assert svc.pipeline.force_flush(30)  # assembled: room again
        assert wait_until(lambda: not _refused(svc, request([llm_span(2000)])), 10)
    finally:
        svc.stop(20)


def _refused(svc, body: bytes) -> Refused | None:  # noqa: ANN001
    try:
        send(svc, body)
    except Refused as r:
        return r
    return None


def test_concurrent_senders_with_full_pipes_never_deadlock(tmp_path):
    """Four clients sending big requests at once fill the pipes both ways (shares in, rows and reports out): the
    serving process keeps reading what workers send while its senders wait for room, so every request is answered
    and every span stored."""
    svc = service(tmp_path, T_WORKERS="2")
    answered: list[int] = []
    try:

        def client(c: int) -> None:
            for r in range(12):
                base = (c * 12 + r) * 400
                body = request([llm_span(base + i, attrs={"gen_ai.prompt": "x" * 2000}) for i in range(400)])
                while True:
                    try:
                        answered.append(send(svc, body)[0])
                        break
                    except Refused as exc:
                        assert exc.reason == "unavailable", exc.message
                        time.sleep(0.05)

        clients = [threading.Thread(target=client, args=(c,)) for c in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(180)
        assert not any(t.is_alive() for t in clients), "a request was never answered"
        assert answered == [400] * 48
        assert svc.pipeline.force_flush(60)
        assert wait_until(lambda: count(svc, SPANS) >= 19_200, 120)
        assert count(svc, SPANS) == 19_200
    finally:
        svc.stop(30)


def test_the_reader_never_waits_for_a_sender(tmp_path):
    """The deadlock the load test guards against, made certain: a sender blocked on a full pipe holds the send
    lock; the thread reading that worker's rows and reports must still get through (the worker may be blocked
    until it does)."""
    svc = service(tmp_path, T_WORKERS="2")
    try:
        handle = svc.pipeline.workers[0]
        with handle.lock:
            reader = threading.Thread(target=handle._handle, args=(("drained", {10**9: 1}),))
            reader.start()
            reader.join(5)
            assert not reader.is_alive()
    finally:
        svc.stop(20)
