"""A write-ahead spool for ``serve``: an acknowledged OTLP request survives a crash (DESIGN decision 6).

Each accepted request body is appended to the current segment file *before* the client gets its answer; the
write lands in the OS page cache, so a killed process loses nothing (a power cut may lose the last seconds:
``fsync`` trades throughput for that). A segment closes after a few seconds or megabytes. Its number is the
*position* every item derived from it carries through the pipeline (the delivery ledger, ``exporters.ledger``):
run assembly holds the spans it buffers, every destination holds what it was offered until it delivered or
dead-lettered it. A closed segment is deleted once nothing at or before its position is held. At start the
segments a crash (or a shutdown whose deadline passed) left behind are replayed with their own positions;
downstream ids are deterministic, so replaying twice is harmless (ClickHouse and FlightDeck de-duplicate;
Observatory may see an event again — at least once).

Record format: ``u32 length | u8 kind | body``, kind = (signal, encoding) as in ``KINDS`` (the vendor-format
ingest routes are signals too).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_bridge.exporters.ledger import Ledger

log = logging.getLogger(__name__)

KINDS = (
    ("traces", "proto"), ("traces", "json"), ("logs", "proto"), ("logs", "json"),
    ("observatory", "json"), ("flightdeck", "json"),  # POST /api/report, POST /v1/events
)  # fmt: skip
_HEADER = struct.Struct("<IB")


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` already: the receiver answers with a retryable status."""


@dataclass
class _Segment:
    path: Path
    seq: int
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None


def _seq_of(path: Path) -> int:
    return int(path.stem.split("-")[1])


class Spool:
    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 512 << 20, segment_bytes: int = 8 << 20,
                 segment_seconds: float = 2.0, fsync: bool = False, ledger: Ledger | None = None) -> None:  # fmt: skip
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)  # accepted requests are other people's data
        self.ledger = ledger if ledger is not None else Ledger()
        self.max_bytes, self.segment_bytes, self.segment_seconds, self.fsync = (
            max_bytes,
            segment_bytes,
            segment_seconds,
            fsync,
        )
        self._lock = threading.Lock()
        self._closed: list[_Segment] = []
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._seq = max((_seq_of(p) for p in self.dir.glob("seg-*.otlp")), default=0)
        self.counters = {"appended": 0, "refused": 0, "replayed": 0, "deleted": 0}

    # ------------------------------------------------------------------------------------------- write path

    def append(self, signal: str, fmt: str, body: bytes) -> int:
        """Persist one accepted request and return its position, held once in the ledger: the caller releases
        that hold after handing the request to the pipeline (which holds what it derived by then), so the
        segment cannot be collected in between. Raises SpoolFull when the spool is at its size limit."""
        record = _HEADER.pack(len(body), KINDS.index((signal, fmt))) + body
        with self._lock:
            if self.pending_bytes() + len(record) > self.max_bytes:
                self.counters["refused"] += 1
                raise SpoolFull(f"spool is full ({self.max_bytes} bytes waiting for export)")
            if self._current is None or self._due(self._current):
                self._rotate()
            os.write(self._fd, record)  # type: ignore[arg-type]
            if self.fsync:
                os.fsync(self._fd)  # type: ignore[arg-type]
            self._current.size += len(record)  # type: ignore[union-attr]
            self.counters["appended"] += 1
            self.ledger.hold(self._current.seq)  # type: ignore[union-attr]
            return self._current.seq  # type: ignore[union-attr]

    def pending_bytes(self) -> int:
        return sum(s.size for s in self._closed) + (self._current.size if self._current else 0)

    def _due(self, seg: _Segment) -> bool:
        return seg.size >= self.segment_bytes or time.monotonic() - seg.opened >= self.segment_seconds

    def _rotate(self) -> None:
        self._close_current()
        self._seq += 1
        path = self.dir / f"seg-{self._seq:012d}.otlp"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._current = _Segment(path, self._seq)

    def _close_current(self) -> None:
        if self._current is not None:
            os.close(self._fd)  # type: ignore[arg-type]
            self._current.closed = time.monotonic()
            self._closed.append(self._current)
            self._current, self._fd = None, None

    # ------------------------------------------------------------------------------------------- replay

    def leftovers(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.otlp"))

    def replay(self, submit: Callable[[str, str, bytes, int], None]) -> int:
        """Feed what a crash left behind to ``submit(signal, fmt, body, pos)``; those segments are then collected
        like any other, once the ledger no longer holds their position."""
        n = 0
        for path in self.leftovers():
            seq = _seq_of(path)
            self.ledger.hold(seq)  # until every record of the segment was handed over
            try:
                for signal, fmt, body in read_segment(path):
                    try:
                        submit(signal, fmt, body, seq)
                    except Exception:  # noqa: BLE001 - one unreadable record must not stop the start
                        log.exception("%s: a replayed record could not be processed", path.name)
                    n += 1
                with self._lock:
                    self._closed.append(_Segment(path, seq, path.stat().st_size, closed=time.monotonic()))
            finally:
                self.ledger.release(seq)
        self.counters["replayed"] += n
        if n:
            log.warning("replayed %d request(s) a previous run had accepted but not finished exporting", n)
        return n

    def records(self, seq: int) -> Iterator[tuple[str, str, bytes]]:
        """The records of the segment at a position (a restarted worker's predecessor still held it)."""
        path = self.dir / f"seg-{seq:012d}.otlp"
        return read_segment(path) if path.exists() else iter(())

    # ------------------------------------------------------------------------------------------- deletion

    def collect(self, *, close_current: bool = False) -> int:
        """Delete the closed segments whose position the ledger no longer holds (oldest first; a younger segment
        is never deleted before an older one). Called periodically by the owner, and at shutdown."""
        with self._lock:
            if self._current is not None and (close_current or self._due(self._current)):
                self._close_current()
            oldest = self.ledger.oldest()
            done = [seg for seg in self._closed if oldest is None or seg.seq < oldest]
            for seg in done:
                seg.path.unlink(missing_ok=True)
                self._closed.remove(seg)
        self.counters["deleted"] += len(done)
        return len(done)

    def close(self) -> int:
        """Stop: delete what was delivered; segments still held stay on disk for the next start's replay."""
        self.collect(close_current=True)
        with self._lock:
            left = len(self._closed)
        if left:
            log.warning("spool: %d segment(s) with undelivered data kept for the next start", left)
        return left

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "pending_bytes": self.pending_bytes(),
            "segments": len(self._closed) + bool(self._current),
        }


def read_segment(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """Records of a segment; a torn last record (the crash hit mid-write) ends it."""
    data = path.read_bytes()
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, kind = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > len(data) or kind >= len(KINDS):
            log.warning("%s: torn record at byte %d ignored", path.name, pos)
            return
        signal, fmt = KINDS[kind]
        yield signal, fmt, data[pos + _HEADER.size : end]
        pos = end
