"""The delivery ledger (issue 10): which spool positions still have items on their way to some destination.

A spool segment may be deleted only when every configured destination has delivered or dead-lettered every item
derived from it. Positions are segment numbers, which only grow, and segments are deleted oldest first — so an
item derived from several segments (a run whose spans arrived in different requests) holds the oldest of them,
which keeps all younger ones too.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path


class Ledger:
    """Outstanding items per spool position (a segment number); thread-safe.

    Every destination holds what it was offered until it delivered or dead-lettered it; run assembly holds the
    spans it buffers. The spool deletes a segment only while nothing at or before its position is held.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[int] = Counter()

    def hold(self, pos: int | None, n: int = 1) -> None:
        if pos is not None and n > 0:
            with self._lock:
                self._held[pos] += n

    def release(self, pos: int | None, n: int = 1) -> None:
        if pos is not None and n > 0:
            with self._lock:
                left = self._held[pos] - n
                if left > 0:
                    self._held[pos] = left
                else:
                    del self._held[pos]

    def oldest(self) -> int | None:
        """The lowest position still held (None: nothing is)."""
        with self._lock:
            return min(self._held) if self._held else None

    def held(self) -> dict[int, int]:
        with self._lock:
            return dict(self._held)


def open_dead_letter(path: str | os.PathLike[str]) -> Path:
    """The dead-letter file's directory 0700 and the file 0600: what lands there is other people's data."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if p.parent.name == "dead-letters":  # our own directory (a configured path may sit anywhere)
        os.chmod(p.parent, 0o700)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    return p
