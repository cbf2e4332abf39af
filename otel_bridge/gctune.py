"""Garbage-collector settings for the long-running processes of ``serve`` (the serving process and its workers).

The service holds many medium-lived objects — spans awaiting their run for seconds, queued rows — and makes
almost no reference cycles (a test holds the conversion to that): reference counting frees nearly everything.
CPython's generational collector still scans each such object again in every generation it survives into: at
the default thresholds that was a third of the serving process's CPU, and collecting the young generation every
second still took 12 % of a worker's (collections of 30–390 ms that found nothing to free). So what start-up
built is frozen (never scanned), automatic collection waits for a high allocation count (a backstop), and a
full collection of everything else runs every ``PERIOD`` seconds from a daemon thread: cyclic garbage (a
refused request's traceback) lives that long at most.
"""

from __future__ import annotations

import gc
import threading

PERIOD = 10.0  # seconds between full collections
BACKSTOP = 1_000_000  # net allocations of tracked objects that trigger a young collection in between


def tune_gc(period: float = PERIOD) -> threading.Thread:
    gc.collect()
    gc.freeze()
    gc.set_threshold(BACKSTOP, 10, 10)
    thread = threading.Thread(target=_collect, args=(period,), name="otel-bridge-gc", daemon=True)
    thread.start()
    return thread


def _collect(period: float) -> None:
    tick = threading.Event()
    while not tick.wait(period):
        gc.collect()
