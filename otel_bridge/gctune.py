"""Garbage-collector settings for the long-running processes of ``serve`` (the serving process and its workers).

The service holds many long-lived small objects (spans awaiting their run, queued rows) and makes few reference
cycles. CPython collects young objects every 700 allocations by default, which spent a third of the serving
process's CPU re-scanning held spans (bench/otlp.py); even at every 50,000 allocations a worker spent 15 % of its
conversion in collections (1 s per 30,000 spans, mostly re-scanning spans still held for their run). So young
objects are collected on a clock instead — once a second, the middle generation every 10 s, everything every
100 s — whatever the allocation rate; a high allocation threshold stays as a backstop. Garbage caught in a cycle
(a refused request's traceback) then lives a second or so, not hours (issue 10's gzip bombs).
"""

from __future__ import annotations

import gc
import threading

PERIOD = 1.0  # seconds between collections of the youngest generation
BACKSTOP = 1_000_000  # net allocations that trigger a collection between two ticks


def tune_gc(period: float = PERIOD) -> threading.Thread:
    """Freeze what start-up built (never scanned again) and collect on a clock from a daemon thread."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(BACKSTOP, 10, 10)
    thread = threading.Thread(target=_collect, args=(period,), name="otel-bridge-gc", daemon=True)
    thread.start()
    return thread


def _collect(period: float) -> None:
    tick = threading.Event()
    ticks = 0
    while not tick.wait(period):
        ticks += 1
        gc.collect(2 if ticks % 100 == 0 else 1 if ticks % 10 == 0 else 0)
