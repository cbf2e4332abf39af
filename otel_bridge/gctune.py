"""Garbage-collector settings for the long-running processes of ``serve`` (the serving process and its workers)."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """The service holds many long-lived small objects (spans awaiting their run, queued rows) and makes few
    reference cycles; CPython's default gen-0 threshold (700) then spends a third of the CPU re-scanning them
    (measured with bench/otlp.py; in a worker process 13 % of its conversion time). Freeze what start-up built
    and collect young objects far less often."""
    gc.collect()
    gc.freeze()
    # Older generations still get collected (every ~25M allocations at most): rejected request bodies caught in
    # a cycle must not live for hours (issue 10: +16 MB RSS per gzip bomb with (50_000, 50, 100)).
    gc.set_threshold(50_000, 10, 10)
