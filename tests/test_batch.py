"""The shared batching engine, driven by a scripted sender and, for backoff, a fake clock and sleep."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest

from otel_bridge.exporters.batch import BatchExporter, PermanentError, RetryableError


class FakeClock:
    """A monotonic clock that only moves when the (fake) sleep says so: backoff tests take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class ScriptedSender:
    """Plays a script of outcomes (an exception to raise, or None for success), then succeeds."""

    name = "scripted"

    def __init__(self, script: list[BaseException | None] | None = None, fail=None) -> None:
        self.script = list(script or [])
        self.fail = fail  # optional callable(batch) -> exception or None, used after the script runs out
        self.calls: list[list[Any]] = []
        self.delivered: list[Any] = []
        self.closed = False
        self.lock = threading.Lock()

    def send(self, batch: list[Any]) -> None:
        with self.lock:
            self.calls.append(list(batch))
            outcome = self.script.pop(0) if self.script else (self.fail(batch) if self.fail else None)
        if outcome is not None:
            raise outcome
        with self.lock:
            self.delivered.extend(batch)

    def close(self) -> None:
        self.closed = True


def make(sender, **kw) -> BatchExporter:
    kw.setdefault("interval", 60.0)
    return BatchExporter(sender, **kw)


def stats(**kw) -> dict[str, int]:
    base = dict.fromkeys(("queued", "sent", "retried", "dropped", "failed", "abandoned"), 0)
    base.update(kw)
    return base


def wait_until(cond, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def test_size_flush_sends_full_batches_without_waiting_for_interval():
    sender = ScriptedSender()
    exp = make(sender, max_batch=5)
    assert exp.offer_many(range(10)) == 10
    assert wait_until(lambda: len(sender.delivered) == 10)
    assert sender.calls == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert exp.shutdown(2)
    assert exp.stats() == stats(queued=10, sent=10)


def test_interval_flush_sends_a_partial_batch():
    sender = ScriptedSender()
    exp = make(sender, max_batch=100, interval=0.05)
    start = time.monotonic()
    exp.offer("a")
    exp.offer("b")
    assert wait_until(lambda: sender.delivered == ["a", "b"], 2.0)
    assert time.monotonic() - start >= 0.04
    assert sender.calls == [["a", "b"]]
    exp.shutdown(2)


def test_force_flush_sends_everything_offered_before_the_call():
    sender = ScriptedSender()
    exp = make(sender, max_batch=100)
    exp.offer_many(list(range(7)))
    assert exp.force_flush(2)
    assert sender.delivered == list(range(7))
    assert exp.queue_depth == 0
    assert exp.stats() == stats(queued=7, sent=7)
    exp.shutdown(2)


def test_force_flush_without_worker_delivers_inline():
    sender = ScriptedSender()
    exp = make(sender, max_batch=3, start=False)
    exp.offer_many(range(7))
    assert exp.force_flush(1)
    assert sender.calls == [[0, 1, 2], [3, 4, 5], [6]]


def test_shutdown_flushes_everything_queued_and_closes_sender():
    sender = ScriptedSender()
    exp = make(sender, max_batch=10)
    exp.offer_many(range(25))
    assert exp.shutdown(2)
    assert sender.delivered == list(range(25))
    assert sender.closed
    assert exp.shutdown(2)  # idempotent
    assert exp.offer("late") is False
    assert exp.stats() == stats(queued=25, sent=25, dropped=1)


def test_large_batches_are_taken_in_one_go():
    sender = ScriptedSender()
    exp = make(sender, max_batch=10_000, max_queue=50_000)
    assert exp.offer_many(range(25_000)) == 25_000
    assert exp.shutdown(5)
    assert [len(c) for c in sender.calls] == [10_000, 10_000, 5_000]
    assert sender.delivered == list(range(25_000))


def test_retry_then_success_delivers_exactly_once():
    clock = FakeClock()
    sender = ScriptedSender([RetryableError("503"), RetryableError("503")])
    exp = make(sender, clock=clock, sleep=clock.sleep, initial_backoff=1.0, max_backoff=30.0)
    exp.offer_many(["x", "y"])
    assert exp.force_flush(2)
    assert sender.delivered == ["x", "y"]
    assert len(sender.calls) == 3
    # full jitter: each wait is within [0, initial * 2**(attempt-1)]
    assert len(clock.waits) == 2 and 0 <= clock.waits[0] <= 1.0 and 0 <= clock.waits[1] <= 2.0
    exp.shutdown(1)
    assert exp.stats() == stats(queued=2, sent=2, retried=4)


def test_retry_after_is_honoured_and_capped():
    clock = FakeClock()
    sender = ScriptedSender([RetryableError("429", retry_after=7.0), RetryableError("429", retry_after=500.0)])
    exp = make(sender, clock=clock, sleep=clock.sleep, max_backoff=30.0)
    exp.offer("x")
    assert exp.force_flush(2)
    assert clock.waits == [7.0, 30.0]
    assert sender.delivered == ["x"]
    exp.shutdown(1)


def test_retries_give_up_after_max_attempts():
    clock = FakeClock()
    sender = ScriptedSender(fail=lambda b: RetryableError("down"))
    exp = make(sender, clock=clock, sleep=clock.sleep, max_attempts=4)
    exp.offer_many([1, 2, 3])
    assert exp.force_flush(2)
    assert len(sender.calls) == 4 and len(clock.waits) == 3
    exp.shutdown(1)
    assert exp.stats() == stats(queued=3, retried=9, failed=3)


def test_permanent_error_is_not_retried_and_is_dead_lettered(tmp_path, caplog):
    dead = tmp_path / "dead.jsonl"
    clock = FakeClock()
    sender = ScriptedSender([PermanentError("HTTP 400: bad event")])
    exp = make(sender, clock=clock, sleep=clock.sleep, dead_letter=dead)
    exp.offer_many([{"n": 1}, {"n": 2}])
    assert exp.force_flush(2)
    assert len(sender.calls) == 1 and clock.waits == []
    lines = [{k: v for k, v in orjson.loads(x).items() if k != "time"} for x in dead.read_bytes().splitlines()]
    assert lines == [
        {"exporter": "scripted", "error": "HTTP 400: bad event", "item": {"n": 1}},
        {"exporter": "scripted", "error": "HTTP 400: bad event", "item": {"n": 2}},
    ]
    assert "HTTP 400: bad event" in caplog.text
    exp.shutdown(1)
    assert exp.stats() == stats(queued=2, failed=2)


def test_bisection_isolates_one_bad_item_among_ten(tmp_path):
    dead = tmp_path / "dead.jsonl"

    def reject_bad(batch):
        if any(item.get("bad") for item in batch):
            return PermanentError("event 'bad' is invalid", splittable=True)
        return None

    sender = ScriptedSender(fail=reject_bad)
    exp = make(sender, max_batch=10, dead_letter=dead)
    items = [{"i": i, "bad": i == 6} for i in range(10)]
    exp.offer_many(items)
    assert exp.force_flush(2)
    assert sorted(x["i"] for x in sender.delivered) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    lines = [{k: v for k, v in orjson.loads(x).items() if k != "time"} for x in dead.read_bytes().splitlines()]
    assert lines == [{"exporter": "scripted", "error": "event 'bad' is invalid", "item": items[6]}]
    exp.shutdown(1)
    assert exp.stats() == stats(queued=10, sent=9, failed=1)


def test_dead_letter_uses_str_for_unserialisable_values(tmp_path):
    dead = tmp_path / "dead.jsonl"
    exp = make(ScriptedSender([PermanentError("no")]), dead_letter=dead, start=False)
    exp.offer({"when": object, 1: "int key"})
    exp.force_flush(1)
    line = orjson.loads(dead.read_bytes())
    assert line["item"] == {"when": str(object), "1": "int key"}


def test_queue_full_drops_counts_and_offer_stays_fast(caplog):
    exp = make(ScriptedSender(), max_queue=5, start=False)
    assert exp.offer_many(range(4)) == 4
    assert exp.has_room(1) and not exp.has_room(2)
    assert exp.offer(4) is True
    assert exp.offer(5) is False
    assert exp.offer_many([6, 7]) == 0
    start = time.perf_counter()
    for i in range(10_000):
        exp.offer(i)
    per_call = (time.perf_counter() - start) / 10_000
    assert per_call < 20e-6  # generous for CI; ~0.3 µs measured
    assert exp.queue_depth == 5
    assert exp.stats() == stats(queued=5, dropped=10_003)
    assert caplog.text.count("queue full") == 1  # rate-limited warning


def test_unexpected_sender_exception_does_not_kill_worker(caplog):
    sender = ScriptedSender([ValueError("sender bug"), ValueError("sender bug again")])
    exp = make(sender, max_batch=1)
    exp.offer("a")
    exp.offer("b")
    exp.offer("c")
    assert exp.force_flush(2)
    assert sender.delivered == ["c"]
    assert exp.stats() == stats(queued=3, sent=1, failed=2)
    assert caplog.text.count("Traceback") == 1  # traceback logged once per exception type
    exp.shutdown(1)


def test_shutdown_deadline_honoured_while_sender_fails_forever():
    sender = ScriptedSender(fail=lambda b: RetryableError("down"))
    exp = make(sender, max_batch=2, max_attempts=1_000, initial_backoff=0.01, max_backoff=0.05)
    exp.offer_many(range(10))
    start = time.monotonic()
    assert not exp.shutdown(0.3)  # never reports success after giving up
    assert time.monotonic() - start < 1.0
    # every item is accounted for as left undelivered (an in-flight batch may be counted a moment later)
    assert wait_until(lambda: exp.stats()["abandoned"] == 10)
    assert exp.stats()["sent"] == 0 and exp.queue_depth == 0
    assert sender.closed


def test_shutdown_cuts_a_long_backoff_short():
    sender = ScriptedSender(fail=lambda b: RetryableError("busy", retry_after=25.0))
    exp = make(sender, max_batch=1, max_attempts=10)
    exp.offer("a")
    assert wait_until(lambda: len(sender.calls) == 1)
    start = time.monotonic()
    assert not exp.shutdown(0.5)
    assert time.monotonic() - start < 0.4  # gave up at once: the retry could only happen after the deadline
    assert exp.stats() == stats(queued=1, abandoned=1)


def test_shutdown_with_fake_clock_deadline_gives_up_remaining_retries():
    clock = FakeClock()

    # each send "takes" 4 s of fake time; the 10 s deadline is reached mid-retries
    def slow_fail(batch):
        clock.now += 4.0
        return RetryableError("timeout")

    sender = ScriptedSender(fail=slow_fail)
    exp = make(
        sender, clock=clock, sleep=clock.sleep, max_attempts=100, start=False, initial_backoff=0.1, max_backoff=0.1
    )
    exp.offer_many([1, 2])
    assert not exp.shutdown(10.0)
    assert 2 <= len(sender.calls) <= 4
    assert exp.stats()["abandoned"] == 2 and exp.stats()["failed"] == 0


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError):
        BatchExporter(ScriptedSender(), max_batch=0, start=False)
