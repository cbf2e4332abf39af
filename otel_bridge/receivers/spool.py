"""A write-ahead spool for ``serve``: an acknowledged OTLP request survives a crash (DESIGN decision 6).

Each accepted request body is appended to the current segment file *before* the client gets its answer; the
write lands in the OS page cache, so a killed process loses nothing (a power cut may lose the last seconds:
``fsync`` trades throughput for that). A segment closes after a few seconds or megabytes and is deleted once
everything in it has left the pipeline: first every trace that was in flight when it closed has been assembled,
then every exporter has finished (sent or given up on) everything it had been offered by then. At start the
segments a crash left behind are replayed; downstream ids are deterministic, so replaying twice is harmless
(ClickHouse and FlightDeck de-duplicate; Observatory may see an event again — at least once).

Record format: ``u32 length | u8 kind | body``, kind = (signal, encoding) as in ``KINDS``.
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

log = logging.getLogger(__name__)

KINDS = (("traces", "proto"), ("traces", "json"), ("logs", "proto"), ("logs", "json"))
_HEADER = struct.Struct("<IB")


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` already: the receiver answers with a retryable status."""


@dataclass
class _Segment:
    path: Path
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None
    targets: dict[str, int] | None = None  # exporter → items offered when the segment's traces were all out


class Spool:
    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 512 << 20, segment_bytes: int = 8 << 20,
                 segment_seconds: float = 2.0, fsync: bool = False) -> None:  # fmt: skip
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.segment_bytes, self.segment_seconds, self.fsync = max_bytes, segment_bytes, segment_seconds, fsync
        self._lock = threading.Lock()
        self._closed: list[_Segment] = []
        self._current: _Segment | None = None
        self._fd: int | None = None
        self._seq = max((int(p.stem.split("-")[1]) for p in self.dir.glob("seg-*.otlp")), default=0)
        self.counters = {"appended": 0, "refused": 0, "replayed": 0, "deleted": 0}

    # ------------------------------------------------------------------------------------------- write path

    def append(self, signal: str, fmt: str, body: bytes) -> None:
        """Persist one accepted request; raises SpoolFull when the spool is at its size limit."""
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

    def pending_bytes(self) -> int:
        return sum(s.size for s in self._closed) + (self._current.size if self._current else 0)

    def _due(self, seg: _Segment) -> bool:
        return seg.size >= self.segment_bytes or time.monotonic() - seg.opened >= self.segment_seconds

    def _rotate(self) -> None:
        self._close_current()
        self._seq += 1
        path = self.dir / f"seg-{self._seq:012d}.otlp"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._current = _Segment(path)

    def _close_current(self) -> None:
        if self._current is not None:
            os.close(self._fd)  # type: ignore[arg-type]
            self._current.closed = time.monotonic()
            self._closed.append(self._current)
            self._current, self._fd = None, None

    # ------------------------------------------------------------------------------------------- replay

    def leftovers(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.otlp"))

    def replay(self, submit: Callable[[str, str, bytes], None]) -> int:
        """Feed what a crash left behind to ``submit``; those segments are then deleted like any other."""
        n = 0
        for path in self.leftovers():
            for signal, fmt, body in read_segment(path):
                submit(signal, fmt, body)
                n += 1
            with self._lock:
                self._closed.append(_Segment(path, path.stat().st_size, closed=time.monotonic()))
        self.counters["replayed"] += n
        if n:
            log.warning("replayed %d request(s) a previous run had accepted but not finished exporting", n)
        return n

    # ------------------------------------------------------------------------------------------- deletion

    def collect(self, oldest_in_flight: Callable[[], float | None], offered: Callable[[], dict[str, int]],
                finished: Callable[[], dict[str, int]]) -> int:  # fmt: skip
        """Delete closed segments whose data has left the pipeline; called periodically by the owner."""
        with self._lock:
            if self._current is not None and self._due(self._current):
                self._close_current()
            closed = list(self._closed)
        deleted = 0
        for seg in closed:  # oldest first; a younger segment is never done before an older one
            if seg.targets is None:
                oldest = oldest_in_flight()
                if oldest is not None and oldest <= seg.closed:  # type: ignore[operator]
                    break
                seg.targets = offered()
            done = finished()
            if any(done.get(name, 0) < target for name, target in seg.targets.items()):
                break
            seg.path.unlink(missing_ok=True)
            with self._lock:
                self._closed.remove(seg)
            deleted += 1
        self.counters["deleted"] += deleted
        return deleted

    def close(self) -> None:
        """Graceful stop: the pipeline has flushed, so nothing spooled is still needed."""
        with self._lock:
            self._close_current()
            for seg in self._closed:
                seg.path.unlink(missing_ok=True)
            self._closed.clear()

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "pending_bytes": self.pending_bytes(), "segments": len(self._closed) + bool(self._current)}


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
