"""The one batching engine every exporter runs on (DESIGN decision 6).

Shaped like the OTel Python SDK's generic batch processor (one daemon worker, a wake-up condition, a shutdown
deadline) and the Collector's exporterhelper: *the exporter classifies, the engine decides*. A ``Sender`` turns
a failure into ``RetryableError`` or ``PermanentError``; this module never looks at HTTP status codes.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

logger = logging.getLogger(__name__)

_DROP_WARN_EVERY = 10.0  # seconds between "queue full" warnings, so a flood cannot flood the log too


class RetryableError(Exception):
    """The batch may succeed later (connection error, 429, 5xx); ``retry_after`` is the server's hint in s."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Resending the same batch cannot succeed; ``splittable`` asks the engine to bisect it to find bad items."""

    def __init__(self, message: str, splittable: bool = False) -> None:
        super().__init__(message)
        self.splittable = splittable


class Sender(Protocol):
    """What an exporter implements: deliver one batch or raise one of the errors above."""

    name: str

    def send(self, batch: list[Any]) -> None: ...

    def close(self) -> None: ...


class _GiveUp(Exception):
    """Internal: retries exhausted or the shutdown deadline passed."""


class BatchExporter:
    """Bounded queue + one worker: flush on size or interval, retry with backoff, dead-letter what is refused.

    ``offer`` runs on the application's threads, so it never blocks and never raises; everything slow happens on
    the worker. ``clock`` and ``sleep`` are seams for tests (a fake clock makes backoff tests instant).
    """

    def __init__(
        self,
        sender: Sender,
        *,
        max_queue: int = 10_000,
        max_batch: int = 100,
        interval: float = 1.0,
        max_attempts: int = 6,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        dead_letter: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        start: bool = True,
    ) -> None:
        if max_queue < 1 or max_batch < 1 or max_attempts < 1:
            raise ValueError("max_queue, max_batch and max_attempts must be >= 1")
        self._sender = sender
        self._name = getattr(sender, "name", type(sender).__name__)
        self._max_queue, self._max_batch, self._interval = max_queue, max_batch, interval
        self._max_attempts = max_attempts
        self._initial_backoff, self._max_backoff = initial_backoff, max_backoff
        self._dead_letter = os.fspath(dead_letter) if dead_letter is not None else None
        self._clock = clock
        self._sleep = sleep if sleep is not None else self._interruptible_wait
        # A list, not a deque: the worker takes a whole batch in one slice (10_000 rows for ClickHouse).
        self._queue: list[Any] = []
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # worker waits here for items / flush / shutdown
        self._done = threading.Condition(self._lock)  # force_flush waits here for the worker's progress
        self._pause = threading.Condition(self._lock)  # backoff waits here, so shutdown can cut them short
        self._oldest = 0.0  # clock() when the queue last went from empty to non-empty
        self._accepted = 0  # items ever appended: force_flush waits until _finished reaches this mark
        self._finished = 0
        self._flush_mark = 0
        self._stopping = False
        self._deadline: float | None = None
        self._shut = False
        self._counts = dict.fromkeys(("queued", "sent", "retried", "dropped", "failed"), 0)
        self._last_drop_warn = self._last_giveup_warn = -_DROP_WARN_EVERY
        self._traced: set[type] = set()  # exception types whose traceback was already logged
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---- app side (hot path) -------------------------------------------------------------------------------

    def offer(self, item: Any) -> bool:
        """Queue one item; False (and counted as dropped) when full or shut down. Never blocks, never raises."""
        try:
            with self._lock:
                queue = self._queue
                n = len(queue)
                if n < self._max_queue and not self._stopping:
                    if not n:
                        self._oldest = self._clock()
                    queue.append(item)
                    self._accepted += 1
                    self._counts["queued"] += 1
                    if n + 1 == self._max_batch:
                        self._work.notify()
                    return True
                self._counts["dropped"] += 1
            self._warn_dropped()
        except Exception:  # noqa: BLE001 - the app's thread must never see our failure
            pass
        return False

    def offer_many(self, items: Iterable[Any]) -> int:
        """Queue as many items as fit; the rest are dropped and counted. Returns how many were accepted."""
        try:
            items = items if isinstance(items, list) else list(items)
            with self._lock:
                queue = self._queue
                n = len(queue)
                room = 0 if self._stopping else max(0, self._max_queue - n)
                take = items if len(items) <= room else items[:room]
                if take:
                    if not n:
                        self._oldest = self._clock()
                    queue.extend(take)
                    self._accepted += len(take)
                    self._counts["queued"] += len(take)
                    if n < self._max_batch <= n + len(take):
                        self._work.notify()
                lost = len(items) - len(take)
                self._counts["dropped"] += lost
            if lost:
                self._warn_dropped()
            return len(take)
        except Exception:  # noqa: BLE001
            return 0

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more items would fit now (the OTLP server answers 503 before accepting otherwise)."""
        return not self._stopping and len(self._queue) + n <= self._max_queue

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, int]:
        """Counters in items (not batches): queued, sent, retried, dropped, failed."""
        with self._lock:
            return dict(self._counts)

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_warn >= _DROP_WARN_EVERY:
            self._last_drop_warn = now
            logger.warning(
                "%s exporter: queue full (%d) or shut down, dropping items; %d dropped so far",
                self._name, self._max_queue, self._counts["dropped"],
            )

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (done by the constructor unless ``start=False``)."""
        with self._lock:
            if self._thread is not None or self._shut:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"otel-bridge-{self._name}-exporter", daemon=True
            )
        self._thread.start()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send everything offered before this call; True when all of it was sent or counted as failed."""
        if not self._worker_alive():
            return self._drain_inline()
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            mark = self._accepted
            self._flush_mark = max(self._flush_mark, mark)
            self._work.notify()
            while self._finished < mark:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done.wait(left)
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush what remains (giving up at the deadline), then close the sender. Idempotent."""
        with self._lock:
            if self._shut:
                return True
            self._shut = self._stopping = True
            # The worker gives up a little before join() does, so it can still count what it gives up.
            margin = 0.0 if timeout is None else min(0.05, timeout / 10)
            self._deadline = None if timeout is None else self._clock() + timeout - margin
            self._work.notify_all()
            self._pause.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            ok = not thread.is_alive()
            if not ok:
                self._abandon_queue()
        else:
            ok = self._drain_inline()
        try:
            self._sender.close()
        except Exception:  # noqa: BLE001
            logger.exception("%s exporter: closing the sender failed", self._name)
        return ok

    def _abandon_queue(self) -> None:
        """Shutdown timed out with the worker still busy: what it never took counts as failed."""
        with self._lock:
            left, self._queue = self._queue, []
            self._counts["failed"] += len(left)
            self._finished += len(left)
            self._done.notify_all()
        logger.warning("%s exporter: shutdown timed out; %d queued item(s) not delivered", self._name, len(left))

    def _worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _drain_inline(self) -> bool:
        """Deliver on the caller's thread when no worker runs (``start=False``, or after shutdown)."""
        while batch := self._take():
            self._deliver(batch)
            self._mark_finished(len(batch))
        return True

    # ---- worker --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._deliver(batch)
            except Exception:  # noqa: BLE001 - defensive: nothing may kill the worker
                logger.exception("%s exporter: unexpected error delivering a batch", self._name)
                self._count("failed", len(batch))
            self._mark_finished(len(batch))

    def _next_batch(self) -> list[Any] | None:
        """Block until a batch is due (size, interval, flush or shutdown); None once stopped and drained."""
        with self._lock:
            while True:
                n = len(self._queue)
                if not n:
                    if self._stopping:
                        return None
                    self._work.wait(self._interval)
                    continue
                due = self._oldest + self._interval - self._clock()
                if n >= self._max_batch or due <= 0 or self._stopping or self._flush_mark > self._finished:
                    return self._take_locked()
                self._work.wait(due)

    def _take(self) -> list[Any]:
        with self._lock:
            return self._take_locked() if self._queue else []

    def _take_locked(self) -> list[Any]:
        # One slice (or a swap) under the lock: cheap even for 10_000-row ClickHouse batches.
        queue = self._queue
        if len(queue) <= self._max_batch:
            self._queue = []
            return queue
        batch = queue[: self._max_batch]
        del queue[: self._max_batch]
        return batch

    def _mark_finished(self, n: int) -> None:
        with self._lock:
            self._finished += n
            self._done.notify_all()

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    # ---- delivery ------------------------------------------------------------------------------------------

    def _deliver(self, batch: list[Any]) -> None:
        """Send with retries; bisect a splittable permanent failure to isolate the bad item(s)."""
        try:
            self._send_with_retry(batch)
        except PermanentError as exc:
            if exc.splittable and len(batch) > 1:
                mid = len(batch) // 2
                self._deliver(batch[:mid])
                self._deliver(batch[mid:])
                return
            logger.warning("%s exporter: %d item(s) rejected: %s", self._name, len(batch), exc)
            self._count("failed", len(batch))
            self._write_dead_letter(batch, str(exc))
        except _GiveUp as exc:
            self._count("failed", len(batch))
            now = time.monotonic()
            if now - self._last_giveup_warn >= _DROP_WARN_EVERY:  # a dead peer at shutdown: one line, not one per batch
                self._last_giveup_warn = now
                logger.warning("%s exporter: items not delivered (%s); %d failed so far", self._name, exc, self._counts["failed"])
        except Exception as exc:  # noqa: BLE001 - a sender bug must not kill the worker
            self._log_unexpected(exc, len(batch))
            self._count("failed", len(batch))
        else:
            self._count("sent", len(batch))

    def _send_with_retry(self, batch: list[Any]) -> None:
        attempt = 0
        while True:
            if self._deadline is not None and self._clock() >= self._deadline:
                raise _GiveUp("shutdown deadline passed")
            attempt += 1
            try:
                self._sender.send(batch)
                return
            except RetryableError as exc:
                if attempt >= self._max_attempts:
                    raise _GiveUp(f"gave up after {attempt} attempts: {exc}") from exc
                if not self._backoff(self._delay(attempt, exc.retry_after)):
                    raise _GiveUp(f"shutdown deadline passed while retrying: {exc}") from exc
                logger.info("%s exporter: retrying %d item(s) after: %s", self._name, len(batch), exc)
                self._count("retried", len(batch))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Honour the server's Retry-After (capped); otherwise exponential backoff with full jitter."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self._max_backoff)
        cap = min(self._max_backoff, self._initial_backoff * 2 ** (attempt - 1))
        return random.uniform(0.0, cap)

    def _backoff(self, delay: float) -> bool:
        """Wait ``delay``; False when the retry could only happen after the shutdown deadline."""
        until = self._clock() + delay
        if self._deadline is not None and until > self._deadline:
            return False
        self._sleep(delay)
        deadline = self._deadline  # shutdown may have set one while we waited
        return deadline is None or until <= deadline

    def _interruptible_wait(self, seconds: float) -> None:
        # Check-and-wait under the lock, so a shutdown that sets a deadline wakes us and cannot be missed.
        until = self._clock() + seconds
        with self._lock:
            while (left := until - self._clock()) > 0:
                if self._deadline is not None and until > self._deadline:
                    return
                self._pause.wait(left)

    def _log_unexpected(self, exc: Exception, n: int) -> None:
        if type(exc) in self._traced:
            logger.error("%s exporter: %d item(s) failed: %s: %s", self._name, n, type(exc).__name__, exc)
            return
        self._traced.add(type(exc))
        logger.error("%s exporter: %d item(s) failed with an unexpected error", self._name, n, exc_info=exc)

    def _write_dead_letter(self, items: list[Any], message: str) -> None:
        if self._dead_letter is None:
            return
        opts = orjson.OPT_NON_STR_KEYS
        lines = b"".join(
            orjson.dumps({"exporter": self._name, "error": message, "item": item}, default=str, option=opts)
            + b"\n"
            for item in items
        )
        try:
            with open(self._dead_letter, "ab") as fh:
                fh.write(lines)
        except OSError:
            logger.exception("%s exporter: cannot write the dead-letter file %s", self._name, self._dead_letter)
