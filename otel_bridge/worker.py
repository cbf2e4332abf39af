"""One worker process of ``serve`` under ``service.workers`` (issue 12): the stages, away from the serving process.

A worker gets each request's share of spans (``routing``: every span of a trace comes to one worker), decodes,
recognises, assembles runs and converts for every destination. Observatory and FlightDeck are delivered from here,
by the worker's own batching engines. ClickHouse rows go back to the serving process, which owns the chDB
directory, as ``JSONCompactEachRow`` lines the conversion already encoded (``RowShipper``).

The delivery ledger crosses the process boundary as counts: the serving process holds a spool position once per
request share it sent; the worker tells it which shares are done (``drained``) once nothing derived from them is
held here any more. Rows are shipped before their holds are released and both go through one ordered pipe, so the
serving process always holds a position in its own exporter before it hears the worker let go of it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter
from typing import Any

from otel_bridge import memory
from otel_bridge.exporters.ledger import Ledger

log = logging.getLogger(__name__)

REPORT_EVERY = 0.05  # seconds between the worker's row shipments and drained reports
STATS_EVERY = 0.5


class WorkerLedger(Ledger):
    """The ledger of a worker: holds per position like any, plus the request shares received at each position
    that the serving process has not yet been told are done."""

    def __init__(self) -> None:
        super().__init__()
        self._received: Counter[int] = Counter()

    def receive(self, pos: int) -> None:
        """A share arrived: held until handed to the pipeline, counted until reported drained."""
        with self._lock:
            self._held[pos] += 1
            self._received[pos] += 1

    def drained(self) -> dict[int, int]:
        """Shares whose position nothing here holds any more: done, each one (``{pos: shares}``); forgotten after."""
        with self._lock:
            done = {p: n for p, n in self._received.items() if p not in self._held}
            for p in done:
                del self._received[p]
            return done


class RowShipper:
    """The ClickHouse destination inside a worker: the conversion's encoded rows, shipped to the serving process
    in batches every ``REPORT_EVERY``. Shaped like a ``BatchExporter`` for the pipeline; what it holds in the
    worker's ledger is released only once the rows were written to the pipe."""

    name = "clickhouse"

    def __init__(self, send: Any, ledger: Ledger) -> None:
        self._send, self._ledger = send, ledger
        self._lock = threading.Lock()
        self._rows: dict[int | None, list] = {}
        self._counts = {"queued": 0, "sent": 0}

    def offer_many(self, items: list[Any], pos: int | None = None) -> int:
        with self._lock:
            self._rows.setdefault(pos, []).extend(items)
            self._ledger.hold(pos, len(items))
            self._counts["queued"] += len(items)
        return len(items)

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, {}
        for pos, items in rows.items():
            self._send(("rows", pos, items))
            self._ledger.release(pos, len(items))
            with self._lock:
                self._counts["sent"] += len(items)

    def has_room(self, n: int) -> bool:  # the serving process's exporter decides, before a request is accepted
        return True

    def force_flush(self, timeout: float | None = None) -> bool:
        self.flush()
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        self.flush()
        return True

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._rows.values())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class _Worker:
    def __init__(self, cfg: Any, index: int, conn: Any) -> None:
        from otel_bridge.pipeline import build

        self.index, self.conn = index, conn
        self._send_lock = threading.Lock()
        self.ledger = WorkerLedger()
        self.shipper = RowShipper(self.send, self.ledger)
        replace = {"clickhouse": self.shipper} if "clickhouse" in cfg.enabled_exporters() else {}
        self.pipeline = build(cfg, ledger=self.ledger, replace=replace)
        self._stop = threading.Event()
        self._free_sent: int | None = None

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def report(self) -> None:
        """Rows first, then what is drained — computed under the send lock, so no report overtakes the rows —
        then the room left, when it changed (receivers waiting for room hear of it within ``REPORT_EVERY``)."""
        self.shipper.flush()
        free = self.free()
        with self._send_lock:
            done = self.ledger.drained()
            if done:
                self.conn.send(("drained", done))
            if free != self._free_sent:
                self.conn.send(("room", free))
                self._free_sent = free

    def free(self) -> int:
        """Items the worker can still take: its own exporters' queue room, 0 when run assembly is near its bounds
        (the serving process then holds requests back)."""
        exporters = [e for name, e in self.pipeline.exporters.items() if name != "clickhouse"]
        free = min((e.max_queue - e.queue_depth for e in exporters), default=1 << 30)
        return free if self.pipeline.assembler.has_room() else 0

    def stats(self) -> None:
        self.send(("stats", self.pipeline.stats(), self.free()))

    def _reporter(self) -> None:
        ticks = 0
        while not self._stop.wait(REPORT_EVERY):
            try:
                self.report()
                ticks += 1
                if ticks * REPORT_EVERY >= STATS_EVERY:
                    ticks = 0
                    self.stats()
            except (OSError, EOFError):  # the serving process is gone: what we hold is in its spool
                os._exit(0)
            except Exception:
                log.exception("worker %d: report failed", self.index)

    def submit(self, request_id: int | None, signal_name: str, fmt: str, body: bytes, pos: int | None) -> None:
        from otel_bridge.receivers.otlp import Refused, decode, summary

        if pos is not None:
            self.ledger.receive(pos)
        try:
            decoded = decode(signal_name, body, fmt)
            if signal_name == "traces":
                refused = self.pipeline.submit_spans(decoded.items, pos)
            else:
                self.pipeline.submit_logs(decoded.items, pos)
                refused = []
            message = "; ".join(([decoded.error] if decoded.error else []) + summary(refused)) or None
            accepted, rejected = len(decoded.items) - len(refused), decoded.rejected + len(refused)
            reply = ("reply", request_id, accepted, rejected, message, None)
        except Refused as r:  # the share as a whole could not be decoded
            reply = ("reply", request_id, 0, 0, r.message, r.reason)
        except Exception:  # noqa: BLE001 - a pipeline bug: the client hears INTERNAL, the worker keeps running
            log.exception("worker %d: a request failed", self.index)
            reply = ("reply", request_id, 0, 0, "internal error", "internal")
        finally:
            self.ledger.release(pos)
        if request_id is not None:
            self.send(reply)

    def run(self) -> None:
        threading.Thread(target=self._reporter, name=f"otel-bridge-worker-{self.index}-report", daemon=True).start()
        self.send(("ready", os.getpid()))
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the serving process died: its spool replays what we held at its next start
            kind = message[0]
            if kind == "submit":
                self.submit(*message[1:])
            elif kind == "flush":
                ok = self.pipeline.force_flush(message[2])
                self.report()
                self.stats()  # a flush is a checkpoint: counters as of now
                self.send(("flushed", message[1], ok))
            elif kind == "shutdown":
                self._stop.set()
                ok = self.pipeline.shutdown(message[1])
                self.report()
                self.stats()
                self.send(("bye", ok))
                return


def worker_main(cfg: Any, index: int, conn: Any) -> None:
    """A spawned worker's entry point. Ctrl-C reaches the whole process group: the serving process alone decides
    when a worker stops (after the receivers, before ClickHouse), so the worker ignores SIGINT and SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    memory.limit_arenas()
    logging.basicConfig(
        level=cfg.service.telemetry.log_level.upper(), format=f"%(levelname)s worker-{index} %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    worker = _Worker(cfg, index, conn)
    memory.start_housekeeping()  # collector settings, and a conversion burst's freed heap back to the OS
    worker.run()
    conn.close()
