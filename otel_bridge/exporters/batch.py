"""The one batching engine every exporter runs on (DESIGN decision 6), and its side of the delivery ledger.

Shaped like the OTel Python SDK's generic batch processor (one daemon worker, a wake-up condition, a shutdown
deadline) and the Collector's exporterhelper: *the exporter classifies, the engine decides*. A ``Sender`` turns
a failure into ``RetryableError`` or ``PermanentError``; this module never looks at HTTP status codes.

Nothing is "failed and forgotten" (issue 10): a batch is retried until ``max_elapsed`` has passed since its first
attempt, then dead-lettered; a permanent failure is bisected down to the bad item, which alone is dead-lettered
with the server's message. Items offered with a spool position (``offer_many(items, pos=...)``) are held in the
``Ledger`` until delivered or dead-lettered; only then may the spool delete the segment they came from. Items
still queued when the shutdown deadline passes stay held, so the spool keeps them for the next start.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

from otel_bridge.exporters.ledger import Ledger, open_dead_letter

__all__ = ["BatchExporter", "Ledger", "PermanentError", "RetryableError", "Sender"]

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
    """Internal: the shutdown deadline passed; the batch stays undelivered (and held in the ledger)."""


class _Exhausted(Exception):
    """Internal: ``max_elapsed`` / ``max_attempts`` ran out; the batch is dead-lettered."""


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
        max_queue_bytes: int | None = None,
        max_batch: int = 100,
        interval: float = 1.0,
        max_attempts: int | None = None,
        max_elapsed: float | None = 3600.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        dead_letter: str | os.PathLike[str] | None = None,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        start: bool = True,
    ) -> None:
        if max_queue < 1 or max_batch < 1 or (max_attempts is not None and max_attempts < 1):
            raise ValueError("max_queue, max_batch and max_attempts must be >= 1")
        self._sender = sender
        self._name = getattr(sender, "name", type(sender).__name__)
        self._max_queue, self._max_batch, self._interval = max_queue, max_batch, interval
        self._max_queue_bytes = max_queue_bytes  # None: items are counted only
        self._queue_bytes = 0  # ``item_size`` of what is queued, kept only when bounded
        self._max_attempts, self._max_elapsed = max_attempts, max_elapsed
        self._initial_backoff, self._max_backoff = initial_backoff, max_backoff
        self._dead_letter = open_dead_letter(dead_letter) if dead_letter else None
        self._ledger = ledger
        self._clock = clock
        self._sleep = sleep if sleep is not None else self._interruptible_wait
        # A list, not a deque: the worker takes a whole batch in one slice (10_000 rows for ClickHouse).
        self._queue: list[Any] = []
        self._positions: list[list] = []  # [pos, count] runs parallel to the queue (pos None: not spooled)
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
        self._counts = dict.fromkeys(("queued", "sent", "retried", "dropped", "failed", "abandoned"), 0)
        self._last_drop_warn = self._last_giveup_warn = -_DROP_WARN_EVERY
        self._traced: set[type] = set()  # exception types whose traceback was already logged
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    @property
    def name(self) -> str:
        return self._name

    @property
    def sender(self) -> Sender:
        return self._sender

    @property
    def dead_letter_path(self) -> Path | None:
        return self._dead_letter

    # ---- app side (hot path) -------------------------------------------------------------------------------

    def offer(self, item: Any) -> bool:
        """Queue one item; False (and counted as dropped) when full or shut down. Never blocks, never raises."""
        try:
            with self._lock:
                queue = self._queue
                n = len(queue)
                if n < self._max_queue and not self._stopping and self._bytes_room():
                    if not n:
                        self._oldest = self._clock()
                    queue.append(item)
                    if self._max_queue_bytes is not None:
                        self._queue_bytes += item_size(item)
                    self._add_run(None, 1)
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

    def offer_many(self, items: Iterable[Any], pos: int | None = None) -> int:
        """Queue items; returns how many were accepted.

        Without ``pos`` (in-process) what does not fit is dropped and counted. With a spool position the items
        were acknowledged already: the receiver checked ``has_room`` before, so they are always taken (the
        queue may pass ``max_queue`` by what was in flight) and held in the ledger until they are done.
        """
        try:
            items = items if isinstance(items, list) else list(items)
            with self._lock:
                queue = self._queue
                n = len(queue)
                if pos is not None and not self._shut:
                    take = items
                else:
                    room = 0 if self._stopping or not self._bytes_room() else max(0, self._max_queue - n)
                    take = items if len(items) <= room else items[:room]
                if take:
                    if not n:
                        self._oldest = self._clock()
                    queue.extend(take)
                    if self._max_queue_bytes is not None:
                        self._queue_bytes += sum(map(item_size, take))
                    self._add_run(pos, len(take))
                    if self._ledger is not None:
                        self._ledger.hold(pos, len(take))
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
            logger.exception(
                "%s exporter: could not queue %d item(s)", self._name, len(items) if isinstance(items, list) else -1
            )
            return 0

    def _add_run(self, pos: int | None, n: int) -> None:
        runs = self._positions
        if runs and runs[-1][0] == pos:
            runs[-1][1] += n
        else:
            runs.append([pos, n])

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more items would fit now (the OTLP server answers 503 before accepting otherwise): by
        count, and by bytes below ``max_queue_bytes`` (what ``n`` items weigh is known only once converted)."""
        return not self._stopping and len(self._queue) + n <= self._max_queue and self._bytes_room()

    def _bytes_room(self) -> bool:
        return self._max_queue_bytes is None or self._queue_bytes < self._max_queue_bytes

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queue_bytes(self) -> int:
        """``item_size`` of the queued items (0 when the queue is bounded by count only)."""
        return self._queue_bytes

    @property
    def max_queue(self) -> int:
        return self._max_queue

    def stats(self) -> dict[str, int]:
        """Counters in items (not batches): queued, sent, retried, dropped, failed (dead-lettered), abandoned
        (still undelivered at shutdown; spooled items among them are replayed at the next start)."""
        with self._lock:
            return dict(self._counts)

    def _warn_dropped(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_warn >= _DROP_WARN_EVERY:
            self._last_drop_warn = now
            logger.warning(
                "%s exporter: queue full (%d) or shut down, dropping items; %d dropped so far",
                self._name,
                self._max_queue,
                self._counts["dropped"],
            )

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (done by the constructor unless ``start=False``)."""
        with self._lock:
            if self._thread is not None or self._shut:
                return
            self._thread = threading.Thread(target=self._run, name=f"otel-bridge-{self._name}-exporter", daemon=True)
        self._thread.start()

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send everything offered before this call; True when all of it was delivered or dead-lettered."""
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
        """Flush what remains until the deadline, then close the sender. True only when nothing was left
        undelivered (what was left stays held in the ledger: the spool replays it next start). Idempotent."""
        with self._lock:
            if self._shut:
                return self._counts["abandoned"] == 0
            self._shut = self._stopping = True
            # The worker gives up a little before join() does, so it can still count what it gives up.
            margin = 0.0 if timeout is None else min(0.05, timeout / 10)
            self._deadline = None if timeout is None else self._clock() + timeout - margin
            self._work.notify_all()
            self._pause.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                self._abandon_queue()
        else:
            self._drain_inline()
        try:
            self._sender.close()
        except Exception:  # noqa: BLE001
            logger.exception("%s exporter: closing the sender failed", self._name)
        with self._lock:
            return self._counts["abandoned"] == 0

    def _abandon_queue(self) -> None:
        """Shutdown timed out with the worker still busy: what it never took is left (and stays held)."""
        with self._lock:
            left, self._queue, self._positions = self._queue, [], []
            self._queue_bytes = 0
            self._counts["abandoned"] += len(left)
            self._finished += len(left)
            self._done.notify_all()
        if left:
            logger.warning(
                "%s exporter: shutdown deadline; %d queued item(s) left for the next start", self._name, len(left)
            )

    def _worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _drain_inline(self) -> bool:
        """Deliver on the caller's thread when no worker runs (``start=False``, or after shutdown)."""
        while (taken := self._take())[0]:
            self._finish(*taken, self._deliver_all(taken[0]))
        return self._counts["abandoned"] == 0

    # ---- worker --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while (taken := self._next_batch()) is not None:
            batch, runs = taken
            try:
                done = self._deliver_all(batch)
            except Exception:  # noqa: BLE001 - defensive: nothing may kill the worker
                logger.exception("%s exporter: unexpected error delivering a batch", self._name)
                done = False
            self._finish(batch, runs, done)

    def _deliver_all(self, batch: list[Any]) -> bool:
        """True when every item was delivered or dead-lettered; False when the shutdown deadline cut it short."""
        try:
            self._deliver(batch)
        except _GiveUp as exc:
            now = time.monotonic()
            if now - self._last_giveup_warn >= _DROP_WARN_EVERY:
                self._last_giveup_warn = now
                logger.warning("%s exporter: %d item(s) left undelivered (%s)", self._name, len(batch), exc)
            return False
        return True

    def _finish(self, batch: list[Any], runs: list[list], done: bool) -> None:
        if done and self._ledger is not None:
            for pos, n in runs:
                self._ledger.release(pos, n)
        with self._lock:
            if not done:
                self._counts["abandoned"] += len(batch)
            self._finished += len(batch)
            self._done.notify_all()

    def _next_batch(self) -> tuple[list[Any], list[list]] | None:
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

    def _take(self) -> tuple[list[Any], list[list]]:
        with self._lock:
            return self._take_locked() if self._queue else ([], [])

    def _take_locked(self) -> tuple[list[Any], list[list]]:
        # One slice (or a swap) under the lock: cheap even for 10_000-row ClickHouse batches.
        queue = self._queue
        if len(queue) <= self._max_batch:
            self._queue, runs, self._positions = [], self._positions, []
            self._queue_bytes = 0
            return queue, runs
        batch = queue[: self._max_batch]
        del queue[: self._max_batch]
        if self._max_queue_bytes is not None:
            self._queue_bytes -= sum(map(item_size, batch))
        return batch, self._take_runs(len(batch))

    def _take_runs(self, n: int) -> list[list]:
        taken, runs = [], self._positions
        while n:
            pos, count = runs[0]
            if count <= n:
                taken.append(runs.pop(0))
                n -= count
            else:
                taken.append([pos, n])
                runs[0][1] = count - n
                n = 0
        return taken

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    # ---- delivery ------------------------------------------------------------------------------------------

    def _deliver(self, batch: list[Any]) -> None:
        """Send with retries; bisect a splittable permanent failure to isolate the bad item(s); dead-letter
        what is refused for good or still failing after ``max_elapsed``. Raises _GiveUp at the shutdown deadline."""
        try:
            self._send_with_retry(batch)
        except PermanentError as exc:
            if exc.splittable and len(batch) > 1:
                mid = len(batch) // 2
                self._deliver(batch[:mid])
                self._deliver(batch[mid:])
                return
            logger.warning("%s exporter: %d item(s) rejected: %s", self._name, len(batch), exc)
            self._dead(batch, str(exc))
        except _Exhausted as exc:
            logger.warning("%s exporter: %d item(s) dead-lettered: %s", self._name, len(batch), exc)
            self._dead(batch, str(exc))
        except _GiveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - a sender bug must not kill the worker
            self._log_unexpected(exc, len(batch))
            if len(batch) > 1:  # one unreadable item must not take its neighbours with it
                mid = len(batch) // 2
                self._deliver(batch[:mid])
                self._deliver(batch[mid:])
                return
            self._dead(batch, f"{type(exc).__name__}: {exc}")
        else:
            self._count("sent", len(batch))

    def _dead(self, batch: list[Any], message: str) -> None:
        self._count("failed", len(batch))
        self._write_dead_letter(batch, message)

    def _send_with_retry(self, batch: list[Any]) -> None:
        attempt, first = 0, self._clock()
        while True:
            if self._deadline is not None and self._clock() >= self._deadline:
                raise _GiveUp("shutdown deadline passed")
            attempt += 1
            try:
                self._sender.send(batch)
                return
            except RetryableError as exc:
                if self._max_attempts is not None and attempt >= self._max_attempts:
                    raise _Exhausted(f"gave up after {attempt} attempts: {exc}") from None
                delay = self._delay(attempt, exc.retry_after)
                if self._max_elapsed is not None and self._clock() + delay - first > self._max_elapsed:
                    raise _Exhausted(f"still failing after {self._clock() - first:.1f}s of retries: {exc}") from None
                if not self._backoff(delay):
                    raise _GiveUp(f"shutdown deadline passed while retrying: {exc}") from None
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
        at = time.time()
        lines = b"".join(
            orjson.dumps(
                {"exporter": self._name, "time": at, "error": message, "item": item}, default=_jsonable, option=opts
            )
            + b"\n"
            for item in items
        )
        try:
            with open(self._dead_letter, "ab") as fh:
                fh.write(lines)
        except OSError:
            logger.exception("%s exporter: cannot write the dead-letter file %s", self._name, self._dead_letter)


ITEM_OVERHEAD = 100  # bytes of a queued item besides its payload: the tuple, the bytes header, the list slot


def item_size(item: Any) -> int:
    """What a queued item weighs for ``max_queue_bytes``: an encoded row (``(table, line)`` as the ClickHouse
    conversion makes them, or bare bytes) its length plus the objects around it; anything else a flat 1 KB."""
    if type(item) is tuple and len(item) == 2 and type(item[1]) is bytes:  # noqa: E721 - the hot case, exactly
        return len(item[1]) + ITEM_OVERHEAD
    if isinstance(item, (bytes, bytearray)):
        return len(item) + ITEM_OVERHEAD
    return 1024


def _jsonable(value: Any) -> Any:
    """Dead letters are JSON: a ClickHouse row travels already encoded as a JSON line, kept as it is."""
    if isinstance(value, bytes):
        return orjson.Fragment(value)
    return str(value)
