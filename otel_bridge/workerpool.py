"""The serving process's side of ``service.workers`` (issue 12): worker processes that run the stages on every
core, while this process receives, spools, routes by trace id and owns ClickHouse.

Per request: the envelope is split (``routing``), checked for room, written ahead to the spool, and each share is
sent to its worker holding the request's spool position once; the client is answered from the workers' replies
(their per-span refusals make the OTLP ``partial_success``). A worker ships its ClickHouse rows back as encoded
lines, which this process's ClickHouse exporter inserts raw, and reports which shares it has drained; only then is
the share's hold released, so the spool keeps every segment some worker may still need.

A worker that dies is restarted: the replies it owed fail as UNAVAILABLE (the client retries), and the share of
every spool segment it still held is sent again to its successor (downstream ids are deterministic, so what the
dead worker had already delivered is de-duplicated or, for Observatory, sent at least once).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson

from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.ledger import Ledger
from otel_bridge.processors.redact import Redactor
from otel_bridge.receivers.otlp import Refused, decode, wait_for_room
from otel_bridge.receivers.spool import Spool, SpoolFull
from otel_bridge.routing import split
from otel_bridge.server import ingest
from otel_bridge.server.metrics import process_usage
from otel_bridge.worker import worker_main

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 60.0  # seconds a receiver waits for a worker's answer before the client is told to retry
START_TIMEOUT = 120.0  # a spawned worker imports the package and builds its pipeline
READY_WAIT = 10.0  # a request waits this long for a worker being replaced, then the client retries
_SUMMED = ("pipeline", "runs", "unknown_operations")


def worker_count(configured: int) -> int:
    """``service.workers``: 0 means one per core."""
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


def per_worker(cfg: Any, workers: int) -> Any:
    """The config each worker runs: the service-wide bounds on what is held in memory (run assembly's traces and
    bytes, the Observatory and FlightDeck queues) shared out, so N workers hold what one process would."""
    runs = cfg.processors.runs
    update_runs = {"max_traces": max(1, -(-runs.max_traces // workers)), "max_bytes": max(1, runs.max_bytes // workers)}
    exporters = {}
    for name in ("observatory", "flightdeck"):
        ex = getattr(cfg.exporters, name)
        queue = max(ex.batch.max_batch, -(-ex.batch.max_queue // workers))
        exporters[name] = ex.model_copy(update={"batch": ex.batch.model_copy(update={"max_queue": queue})})
    return cfg.model_copy(
        update={
            "processors": cfg.processors.model_copy(update={"runs": runs.model_copy(update=update_runs)}),
            "exporters": cfg.exporters.model_copy(update=exporters),
        }
    )


class _Reply:
    def __init__(self, count: int) -> None:
        self.count = count
        self._done = threading.Event()
        self.result: tuple[int, int, str | None] | Refused = Refused("unavailable", "no answer from the worker")

    def set(self, result: tuple[int, int, str | None] | Refused) -> None:
        self.result = result
        self._done.set()

    def wait(self, timeout: float) -> tuple[int, int, str | None] | Refused:
        if not self._done.wait(timeout):
            return Refused("unavailable", f"no answer from a worker within {timeout:g}s, retry later")
        return self.result


class _Handle:
    """One worker process, as the serving process sees it: its pipe, the replies it owes, the shares it holds."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool, self.index = pool, index
        # One sender at a time (held while the pipe is full, and while the worker is being replaced). The reader
        # thread never takes it: a reader waiting on a blocked sender while the worker waits for the reader to
        # take its reply would deadlock all three.
        self.lock = threading.Lock()
        self._counts = threading.Lock()  # ``holding``: held only to count, never across I/O
        self.ready = threading.Event()
        self.process: Any = None
        self.conn: Any = None
        self.pid: int | None = None
        self.pending: dict[int, _Reply] = {}
        self.holding: Counter[int] = Counter()  # spool position → shares sent, not yet reported drained
        self.stats: dict[str, Any] = {}
        self.free = 1 << 30
        self.flushed: dict[int, threading.Event] = {}
        self.bye = threading.Event()
        self._ids = itertools.count(1)

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # threads run already: fork would copy their locks mid-use
        here, there = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main, args=(self.pool.cfg, self.index, there), name=f"otel-bridge-worker-{self.index}"
        )
        self.process.daemon = True
        self.process.start()
        there.close()
        self.conn, self.bye = here, threading.Event()
        threading.Thread(
            target=self._read, args=(here,), name=f"otel-bridge-worker-{self.index}-in", daemon=True
        ).start()

    # ---- to the worker ------------------------------------------------------------------------------------

    def submit(self, signal: str, fmt: str, body: bytes, pos: int | None, count: int, reply: bool = True) -> _Reply:
        """Send one share; the position is held for it until the worker reports it drained."""
        answer = _Reply(count)
        if not self.ready.wait(READY_WAIT if reply else START_TIMEOUT):
            answer.set(Refused("unavailable", f"worker {self.index} is not running, retry later"))
            return answer
        with self.lock:
            request_id = next(self._ids) if reply else None
            if request_id is not None:
                self.pending[request_id] = answer
            if pos is not None:
                with self._counts:
                    self.holding[pos] += 1
                self.pool.ledger.hold(pos)
            try:
                self.conn.send(("submit", request_id, signal, fmt, body, pos))
            except (OSError, ValueError):  # it just died: the client retries (the restart replays what it held)
                self.pending.pop(request_id, None)
                if pos is not None:
                    self._release(pos, 1)
                answer.set(Refused("unavailable", f"worker {self.index} restarted, retry"))
        return answer

    def command(self, message: tuple) -> bool:
        with self.lock:
            try:
                self.conn.send(message)
                return True
            except (OSError, ValueError):
                return False

    # ---- from the worker ----------------------------------------------------------------------------------

    def _read(self, conn: Any) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(message)
            except Exception:
                log.exception("worker %d: a message could not be handled", self.index)
        conn.close()
        if not self.pool.stopping:
            self.pool.restart(self)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "reply":
            _, request_id, accepted, rejected, text, refused = message
            answer = self.pending.pop(request_id, None)
            if answer is not None:  # refused: the share as a whole ("invalid") or the worker ("internal") failed
                answer.set(Refused(refused, text, answer.count) if refused else (accepted, rejected, text))
        elif kind == "rows":
            self.pool.clickhouse_offer(message[2], message[1])
        elif kind == "drained":
            for pos, shares in message[1].items():
                self._release(pos, shares)
        elif kind == "room":
            self.free = message[1]
        elif kind == "stats":
            self.stats, self.free = message[1], message[2]
        elif kind == "ready":
            self.pid = message[1]
            self.ready.set()
        elif kind == "flushed":
            event = self.flushed.pop(message[1], None)
            if event is not None:
                event.set()
        elif kind == "bye":
            self.bye.set()

    def _release(self, pos: int, shares: int) -> None:
        with self._counts:
            shares = min(shares, self.holding[pos])
            left = self.holding[pos] - shares
            if left > 0:
                self.holding[pos] = left
            else:
                del self.holding[pos]
        if shares:
            self.pool.ledger.release(pos, shares)

    def take_holding(self) -> dict[int, int]:
        """What a dead worker held: handed to its successor."""
        with self._counts:
            held, self.holding = dict(self.holding), Counter()
        return held


class WorkerPool:
    """What ``serve``'s receivers hand requests to when ``service.workers`` > 1 (``route``), and what its vendor
    ingest, stats and shutdown talk to; it holds the ClickHouse exporter and the spool's ledger."""

    def __init__(self, cfg: Any, workers: int, clickhouse: BatchExporter | None, spool: Spool | None) -> None:
        self.cfg, self.spool = per_worker(cfg, workers), spool
        self.ledger = spool.ledger if spool is not None else Ledger()
        self.exporters: dict[str, BatchExporter] = {"clickhouse": clickhouse} if clickhouse is not None else {}
        redact = "redact" in cfg.service.pipelines.traces.processors
        pr = cfg.processors.redact
        self.redactor = Redactor(secrets=redact and pr.secrets, pii=redact and pr.pii)
        self.stopping = False
        self.restarts = 0
        self._flushes = itertools.count(1)
        self.workers = [_Handle(self, i) for i in range(workers)]
        for w in self.workers:
            w.start()
        for w in self.workers:
            if not w.ready.wait(START_TIMEOUT):
                raise RuntimeError(f"worker {w.index} did not start within {START_TIMEOUT:g}s")

    # ---- receivers ----------------------------------------------------------------------------------------

    def route(self, signal: str, fmt: str, body: bytes) -> tuple[int, int, str | None]:
        """Split, check room, spool, send each worker its share, answer from their replies (``receive``'s
        contract: raises ``Refused``)."""
        try:
            shares = split(signal, fmt, body, len(self.workers))
        except Exception:  # noqa: BLE001 - not an OTLP envelope: the decoder says why, in its own words
            decode(signal, body, fmt)
            raise Refused("invalid", f"body could not be decoded as OTLP {fmt}") from None
        total = shares.count
        if not total:
            return 0, 0, None
        if self.stopping or not wait_for_room(self.has_room, total):
            raise Refused("unavailable", "pipeline is full, retry later", received=total)
        pos = None
        if self.spool is not None:
            try:
                pos = self.spool.append(signal, fmt, body)
            except SpoolFull as exc:
                raise Refused("unavailable", str(exc), received=total) from None
        try:
            answers = [
                self.workers[w].submit(signal, fmt, part, pos, shares.counts[w])
                for w, part in enumerate(shares.parts)
                if part is not None
            ]
        finally:
            if pos is not None:
                self.ledger.release(pos)  # the spool's own hold: each share holds the position now
        return _combine([a.wait(REPLY_TIMEOUT) for a in answers], total)

    def has_room(self, n: int) -> bool:
        if self.stopping:
            return False
        return all(e.has_room(n) for e in self.exporters.values()) and all(w.free >= n for w in self.workers)

    def clickhouse_offer(self, rows: list[Any], pos: int | None) -> None:
        exporter = self.exporters.get("clickhouse")
        if exporter is not None:
            exporter.offer_many(rows, pos)

    def submit_rows(self, rows: list[tuple[str, Any]], pos: int | None = None) -> None:
        """Vendor-format ingest: rows for ClickHouse only, handled here (no stage runs on them)."""
        self.clickhouse_offer(rows, pos)

    # ---- spool --------------------------------------------------------------------------------------------

    def replay(self) -> int:
        return self.spool.replay(self._replay_record) if self.spool is not None else 0

    def _replay_record(self, signal: str, fmt: str, body: bytes, pos: int, only: _Handle | None = None) -> None:
        if signal in ingest.CONVERTERS:
            if only is None:
                self.submit_rows(ingest.rows_of(signal, orjson.loads(body).get("events"), self.redactor), pos)
            return
        shares = split(signal, fmt, body, len(self.workers))
        for w, part in enumerate(shares.parts):
            if part is not None and (only is None or only.index == w):
                self.workers[w].submit(signal, fmt, part, pos, shares.counts[w], reply=False)

    def collect(self) -> int:
        return self.spool.collect() if self.spool is not None else 0

    # ---- worker lifecycle ---------------------------------------------------------------------------------

    def restart(self, handle: _Handle) -> None:
        """A worker died: fail what it owed, start its successor, send it the shares its predecessor held."""
        with handle.lock:
            handle.ready.clear()
            owed, handle.pending = handle.pending, {}
            held = handle.take_holding()
        for answer in owed.values():
            answer.set(Refused("unavailable", f"worker {handle.index} restarted, retry"))
        code = handle.process.exitcode if handle.process is not None else None
        log.warning("worker %d (pid %s) exited with %s: restarting it and replaying %d spool segment(s)",
                    handle.index, handle.pid, code, len(held))  # fmt: skip
        self.restarts += 1
        time.sleep(min(5.0, 0.2 * self.restarts))  # a worker that keeps dying must not spin the CPU
        handle.start()
        if not handle.ready.wait(START_TIMEOUT):
            log.error("worker %d did not restart within %gs", handle.index, START_TIMEOUT)
            return
        for pos in sorted(held):
            for signal, fmt, body in self.spool.records(pos) if self.spool is not None else ():
                try:
                    self._replay_record(signal, fmt, body, pos, only=handle)
                except Exception:  # noqa: BLE001 - one unreadable record must not stop the others
                    log.exception("worker %d: a spooled record could not be replayed", handle.index)
        for pos, shares in held.items():  # the successor holds them now
            self.ledger.release(pos, shares)

    def force_flush(self, timeout: float | None = None) -> bool:
        """Every worker assembles what it holds (complete traces), converts, ships; then ClickHouse flushes."""
        deadline = time.monotonic() + (timeout if timeout is not None else 30.0)
        events = []
        for w in self.workers:
            event, key = threading.Event(), next(self._flushes)
            w.flushed[key] = event
            if w.command(("flush", key, max(0.1, deadline - time.monotonic()))):
                events.append(event)
        ok = all(e.wait(max(0.1, deadline - time.monotonic())) for e in events)
        return ok and all(e.force_flush(max(0.1, deadline - time.monotonic())) for e in self.exporters.values())

    def shutdown(self, timeout: float | None = None) -> bool:
        """Workers first (each flushes run assembly and delivers to Observatory/FlightDeck, ships its last rows),
        then the ClickHouse exporter; what misses the deadline stays held, so the spool keeps it."""
        self.stopping = True
        deadline = time.monotonic() + (timeout if timeout is not None else 30.0)
        for w in self.workers:
            w.command(("shutdown", max(0.5, deadline - time.monotonic() - 1.0)))
        ok = True
        for w in self.workers:
            ok = w.bye.wait(max(0.1, deadline - time.monotonic())) and ok
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                ok = False
        left = max(0.05, deadline - time.monotonic())
        return all([e.shutdown(left) for e in self.exporters.values()]) and ok

    # ---- counters -----------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The workers' counters summed, ClickHouse's from this process, and the pool's own."""
        out: dict[str, Any] = {key: {} for key in _SUMMED}
        exporters: dict[str, dict[str, int]] = {}
        for w in self.workers:
            for key in _SUMMED:
                _add(out[key], w.stats.get(key, {}))
            for name, counts in w.stats.get("exporters", {}).items():
                if name not in self.exporters:
                    _add(exporters.setdefault(name, {}), counts)
        for name, e in self.exporters.items():
            exporters[name] = {**e.stats(), "queue_depth": e.queue_depth}
        out["exporters"] = exporters
        out["workers"] = {"workers": len(self.workers), "restarts": self.restarts,
                          "alive": sum(w.ready.is_set() for w in self.workers)}  # fmt: skip
        return out

    def processes(self) -> dict[str, dict[str, Any]]:
        return {f"worker-{w.index}": process_usage(w.pid) for w in self.workers if w.pid is not None}


def _add(into: dict[str, Any], counts: Mapping[str, Any]) -> None:
    for k, v in counts.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v


def _combine(results: list[tuple[int, int, str | None] | Refused], total: int) -> tuple[int, int, str | None]:
    """One answer from the workers' replies: any share that could not be handed over makes the client retry (the
    spool has the request, so the shares that were taken are only sent twice, never lost)."""
    counted: list[tuple[int, int, str | None]] = []
    for r in results:
        if isinstance(r, Refused):
            if r.reason != "invalid" or len(results) == 1:  # retry, or the request as a whole was unreadable
                r.received = total
                raise r
            counted.append((0, r.received, r.message))
        else:
            counted.append(r)
    messages = [m for _, _, m in counted if m]
    return sum(a for a, _, _ in counted), sum(r for _, r, _ in counted), "; ".join(messages) or None
