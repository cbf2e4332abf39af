"""Nothing acknowledged is lost (issue 10): one test per row of the issue's table, each counting exactly what was
delivered and dead-lettered, and 0 lost. The service is the real one (spool, ledger, pipeline, exporters, chDB),
fed through the receivers' shared ``receive`` step; the destinations are the strict Observatory sink and chDB."""

from __future__ import annotations

import time

import orjson
from delivery_helpers import count, dead_letters, llm_span, request, send, service, try_send, wait_until

from otel_bridge import deadletters
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.clickhouse import ClickHouseSender, span_row
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.exporters.rows import EventRow
from otel_bridge.semconv import recognise
from otel_bridge.spans import spans_from_otlp_json

SPANS = "SELECT count() FROM otel_bridge.spans FINAL"


def test_poison_span_among_2000_good_ones_loses_nothing(tmp_path):
    """Row 1 + row 8: non-string name / service fields are coerced, out-of-range values refused per span."""
    svc = service(tmp_path)
    try:
        good = [llm_span(i) for i in range(2000)]
        for i in range(0, 2000, 500):
            assert send(svc, request(good[i : i + 500])) == (500, 0, None)
        poison = request(
            [llm_span(5000, name=7, attrs={"gen_ai.request.model": 12})],
            resource={"service.name": 1, "service.version": 2, "deployment.environment.name": 3.5},
        )
        assert send(svc, poison)[:2] == (1, 0)
        now = time.time_ns()
        refused = [
            llm_span(6000, start_ns=2**64 - 2_000_000),
            llm_span(6001, attrs={"gen_ai.usage.input_tokens": 2**62 * 3}),
            llm_span(6002, start_ns=now - 91 * 86_400 * 10**9),
            llm_span(6003, start_ns=0),
        ]
        accepted, rejected, message = send(svc, request(refused + [llm_span(6004)]))
        assert (accepted, rejected) == (1, 4)
        assert "out of range" in message and "retention" in message and "0 or missing" in message
        assert wait_until(lambda: count(svc, SPANS) >= 2002, timeout=120)
        time.sleep(0.5)
        assert count(svc, SPANS) == 2002  # 2000 + the coerced poison + the good neighbour of the refused
        row = svc.store.query(
            "SELECT name, service_name, service_version, environment FROM otel_bridge.spans FINAL "
            f"WHERE span_id = '{5001:016x}'"
        )[0]
        assert row == {"name": "7", "service_name": "1", "service_version": "2", "environment": "3.5"}
        assert dead_letters(svc.pipeline.exporters["clickhouse"].dead_letter_path) == []
    finally:
        svc.stop(10)


def test_observatory_503_past_the_retry_budget_then_back(tmp_path, observatory_sink):
    """Row 2: retried for max_elapsed, then dead-lettered (0600, dir 0700), never forgotten; `retry` delivers."""
    observatory_sink.fail_next(503, 10**6)
    svc = service(
        tmp_path, T_OBSERVATORY_URL=observatory_sink.url, T_OBSERVATORY_KEY=observatory_sink.api_key, T_MAX_ELAPSED="1s"
    )
    obs = svc.pipeline.exporters["observatory"]
    try:
        for i in range(0, 200, 50):
            send(svc, request([llm_span(i + j) for j in range(50)]))
        expected = 400  # each span: llm_start + llm_end
        assert wait_until(lambda: obs.stats()["failed"] == expected, timeout=120), obs.stats()
        path = obs.dead_letter_path
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
        lines = dead_letters(path)
        assert len(lines) == expected and all("503" in e["error"] for e in lines)
        assert observatory_sink.events == [] and obs.stats()["dropped"] == 0
        # every segment is done once everything derived from it was delivered (ClickHouse) or dead-lettered
        assert wait_until(lambda: svc.spooled.collect() >= 0 and svc.spooled.spool.stats()["segments"] == 0, timeout=90)
    finally:
        svc.stop(10)
    observatory_sink._script.clear()
    sender = ObservatorySender(observatory_sink.url, observatory_sink.api_key)
    assert deadletters.retry(sender, "observatory", path) == (expected, 0)
    assert len(observatory_sink.events) == expected and dead_letters(path) == []
    assert not observatory_sink.violations


def test_observatory_down_under_sustained_load_answers_503_and_drops_nothing(tmp_path, observatory_sink):
    """Row 3: backpressure in events (2 per span) before acknowledging; everything acknowledged arrives."""
    observatory_sink.stop()
    svc = service(
        tmp_path, T_OBSERVATORY_URL=observatory_sink.url, T_OBSERVATORY_KEY=observatory_sink.api_key, T_OBS_QUEUE="300"
    )
    obs = svc.pipeline.exporters["observatory"]
    accepted = refused = i = 0
    try:
        while refused < 20:
            n = try_send(svc, request([llm_span(i + j) for j in range(40)]))
            i += 40
            if n is None:
                refused += 1
                time.sleep(0.02)
            else:
                accepted += n
        assert accepted >= 150  # the queue (300 events) filled before the first 503
        observatory_sink.start()
        assert observatory_sink.wait_for(2 * accepted, timeout=120), (len(observatory_sink.events), 2 * accepted)
        time.sleep(0.3)
        assert len(observatory_sink.events) == 2 * accepted
        assert obs.stats()["dropped"] == 0 and obs.stats()["failed"] == 0
        assert svc.stats.snapshot()["http"]["traces"]["requests"]["unavailable"] == refused
    finally:
        svc.stop(10)


def test_one_400_in_a_batch_dead_letters_only_that_event(tmp_path, observatory_sink):
    """Row 5: the strict sink refuses the batch; bisection delivers the 99 innocent events."""
    span = recognise(spans_from_otlp_json(request([llm_span(1)])).items[0])
    from otel_bridge.processors.observatory import ObservatoryConverter

    good = ObservatoryConverter().convert(span)[1]
    events = [{**good, "run_id": f"00000000-0000-4000-8000-{i:012d}"} for i in range(100)]
    events[37] = {**events[37], "type": "not-a-type"}
    dead = tmp_path / "dl" / "observatory.jsonl"
    exp = BatchExporter(
        ObservatorySender(observatory_sink.url, observatory_sink.api_key), max_batch=100, dead_letter=dead
    )
    exp.offer_many(events)
    assert exp.force_flush(30)
    exp.shutdown(5)
    assert len(observatory_sink.events) == 99
    lines = dead_letters(dead)
    assert [e["item"]["run_id"] for e in lines] == [events[37]["run_id"]] and "HTTP 400" in lines[0]["error"]
    assert exp.stats()["sent"] == 99 and exp.stats()["failed"] == 1
    # the sink saw the bad event once per bisection step, and nothing else wrong
    assert observatory_sink.violations and all(
        "not-a-type" in v or "unknown keys" in v for v in observatory_sink.violations
    )
    observatory_sink.violations.clear()


def test_poison_clickhouse_rows_cost_only_themselves(tmp_path):
    """Row 6: bisection by item across tables: the two bad rows alone are dead-lettered with the server's message."""
    store = Store.open(StoreConfig(data_dir=str(tmp_path / "data")))
    try:
        spans = spans_from_otlp_json(request([llm_span(i) for i in range(50)])).items
        rows = [("spans", span_row(recognise(s))) for s in spans]
        bad_span = ("spans", span_row(recognise(spans[0])))
        bad_span[1].run_id = "not-a-uuid"
        bad_event = (
            "events",
            EventRow.of("also-not-a-uuid", "chat", None, "t", "user", "hi", "", "", 1, "", "", "{}", 0),
        )
        dead = tmp_path / "dl" / "clickhouse.jsonl"
        exp = BatchExporter(ClickHouseSender(store), max_batch=1000, dead_letter=dead)
        exp.offer_many(rows[:25] + [bad_span] + rows[25:] + [bad_event])
        assert exp.force_flush(60)
        exp.shutdown(5)
        assert int(store.query(SPANS)[0]["count()"]) == 50
        lines = dead_letters(dead)
        assert sorted(e["item"][0] for e in lines) == ["events", "spans"] and all(e["error"] for e in lines)
        assert exp.stats() == {"queued": 52, "sent": 50, "retried": 0, "dropped": 0, "failed": 2, "abandoned": 0}
        assert orjson.loads(dead.read_bytes().splitlines()[0])["exporter"] == "clickhouse"
    finally:
        store.close()
