"""Giving memory back to the operating system (issue 12: the whole service within 1 GiB).

What stays resident in a process after the work that needed it is over, none of it held by us:

- **Freed heap.** A conversion burst allocates tens of MB of short-lived strings, dicts and encoded rows; once
  they are freed glibc keeps the pages for later (measured: a worker converting 10k spans went from 167 to
  246 MiB RSS and stayed there; ``malloc_trim(0)`` brought it to 116 MiB). ``start_housekeeping`` calls
  ``malloc_trim(0)`` from a daemon thread every few seconds (a trim giving back 130 MB took 28 ms). It lowers the
  memory a process keeps after a burst, not the peak of the burst itself.
- **Library pages touched once.** chDB's engine initialises every function and format it knows when the store
  opens, which faults in ~350 MiB of its shared library's read-only pages; afterwards a few tens of MB of them
  are used. ``page_out_library`` asks the kernel to reclaim those clean file pages now (``MADV_PAGEOUT``, Linux
  5.4+) instead of under memory pressure later; the pages that are needed again are read back on their next use.
  Only mappings without write permission are advised, so no page whose content the process changed is touched
  (and ``MADV_PAGEOUT`` never discards content in any case: it writes out or drops what it can re-read).

- **Per-thread heaps.** glibc gives threads their own malloc arenas, up to 8 per core, and each keeps what its
  threads freed. chDB's insert and merge threads each grew one; ``limit_arenas`` caps them at one per core (more
  cannot lower contention than there are cores to contend), which lowered the peak of the whole service with the
  stages in one process from 874–905 to 806–868 MiB on bench/otlp.py (three runs each, same sitting). It applies
  to the arenas made after it, so ``serve`` and its workers call it first. ``GLIBC_TUNABLES=glibc.malloc.arena_max=N``
  (or ``MALLOC_ARENA_MAX``) set by the operator wins.
- **A library never used.** clickhouse-connect imports pandas at the first insert, to see whether the rows are
  a DataFrame; chdb depends on pandas, so it is installed, and importing it costs ~70 MiB of RSS. ``serve``'s rows
  are lists and its queries return tuples, so ``without_pandas`` settles the question as clickhouse-connect
  settles it when pandas is absent. Only ``serve`` calls it: an app with the bridge installed in-process may use
  DataFrames itself.

All are best effort and silent where they do not apply (another libc, another OS, an older kernel).

The same thread runs the garbage collector. The service holds many medium-lived objects (spans awaiting their
run for seconds, queued rows) and makes almost no reference cycles (``tests/test_conversions.py`` holds the
conversion to that), so reference counting frees nearly everything; CPython's generational collector still
scanned each held object again in every generation it survived into (at the default thresholds a third of the
serving process's CPU, 8–15 % of a worker's even collecting young objects once a second). So what start-up built
is frozen (never scanned), automatic collection waits for a high allocation count (a backstop), and a full
collection runs from the housekeeping thread, spaced so that it takes at most ``COLLECT_SHARE`` of the thread's
time: a full collection visits every tracked object, ~1 µs each here, and a worker holding its share of run
assembly's bound has ~150k of them (nine per held span). Collected every 10 s that was 0.3 s of CPU each time,
~5 % of a busy worker (bench/otlp.py); spaced by its own cost it is 0.5 %. Cyclic garbage (a refused request's
traceback) lives ``COLLECT_MAX`` seconds at most.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

# Seconds between trims. A trim returns what was freed since the last one, and memory in use again soon is faulted
# back in: measured with bench/otlp.py, trimming every second lowered no process's peak, so trims are spaced out to
# cost nothing while still giving a burst's memory back to an idle service.
TRIM_EVERY = 5.0
COLLECT_MIN, COLLECT_MAX = 10.0, 60.0  # seconds between two full garbage collections
COLLECT_SHARE = 0.005  # of the time a full collection may take: one lasting 0.3 s is followed by 60 s without
GC_BACKSTOP = 1_000_000  # net allocations of tracked objects that trigger a young collection in between
_MADV_PAGEOUT = 21  # linux/mman.h
_M_ARENA_MAX = -8  # malloc.h

_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: not glibc
_starting = threading.Lock()
_started = False


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        _libc = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                libc.madvise.restype = ctypes.c_int
                libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _libc = libc
            except (OSError, AttributeError):  # musl has no malloc_trim: nothing to do there
                _libc = None
    return _libc  # type: ignore[return-value]


def trim() -> bool:
    """Return the heap's free pages to the OS now (glibc ``malloc_trim(0)``); False where it does not apply."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def limit_arenas() -> int:
    """At most one malloc arena per usable core from now on, unless the operator chose; returns the cap set
    (0: none set, where glibc is absent or the operator's setting applies). Arenas made before stay: importing
    the OpenTelemetry SDK runs resource detection on two threads, so a process may keep up to two more."""
    libc = _glibc()
    chosen = "arena_max" in os.environ.get("GLIBC_TUNABLES", "") or "MALLOC_ARENA_MAX" in os.environ
    if libc is None or chosen:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores if libc.mallopt(_M_ARENA_MAX, cores) == 1 else 0


def start_housekeeping() -> bool:
    """Once per long-running process of ``serve``, after its start-up: freeze what start-up built, raise the
    collector's threshold to a backstop, and from one daemon thread trim the heap every ``TRIM_EVERY`` seconds and
    collect garbage as often as ``collect_interval`` allows."""
    global _started
    with _starting:
        if _started:
            return False
        _started = True
    tune_collector()
    threading.Thread(target=_housekeeping, name="otel-bridge-memory", daemon=True).start()
    return True


def tune_collector() -> None:
    """The collector as ``serve``'s processes run it: what exists now frozen, automatic collection only past
    ``GC_BACKSTOP`` (bench/convert.py measures the conversion this way too)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_BACKSTOP, 10, 10)


def collect_interval(took: float) -> float:
    """Seconds until the next full collection after one that took ``took`` seconds of CPU."""
    return min(COLLECT_MAX, max(COLLECT_MIN, took / COLLECT_SHARE))


def _housekeeping() -> None:
    due = time.monotonic() + COLLECT_MIN
    while True:
        time.sleep(TRIM_EVERY)
        if time.monotonic() >= due:
            started = time.thread_time()  # this thread's CPU: it holds the GIL throughout, the others wait
            gc.collect()
            due = time.monotonic() + collect_interval(time.thread_time() - started)
        try:
            trim()
        except Exception:  # noqa: BLE001 - best effort: a failed trim only leaves memory where it was
            log.debug("malloc_trim failed", exc_info=True)


def without_pandas() -> None:
    """Keep clickhouse-connect from importing pandas for ``serve`` (see above)."""
    if "pandas" not in sys.modules:
        from clickhouse_connect.driver import options

        names = vars(options)  # what its lazy lookup reads first, as it leaves them when the import fails
        names.setdefault("pd", None)
        names.setdefault("pd_time_test", None)


def page_out_library(prefix: str) -> int:
    """Ask the kernel to reclaim the resident read-only pages of the shared libraries whose file name starts with
    ``prefix`` (``MADV_PAGEOUT``); returns the bytes of mappings advised (0 where it does not apply)."""
    libc = _glibc()
    if libc is None:
        return 0
    advised = 0
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            ranges = [r for r in map(_range, maps) if r is not None and r[3].startswith(prefix) and ".so" in r[3]]
    except OSError:
        return 0
    for start, end, perms, _ in ranges:
        if "w" in perms:  # data the loader or the program wrote: never advised
            continue
        if libc.madvise(start, end - start, _MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


def _range(line: str) -> tuple[int, int, str, str] | None:
    """``start-end perms offset dev inode path`` → (start, end, perms, file name); None for anonymous mappings."""
    fields = line.split(None, 5)
    if len(fields) < 6 or not fields[5].startswith("/"):
        return None
    start, end = fields[0].split("-")
    return int(start, 16), int(end, 16), fields[1], os.path.basename(fields[5].rstrip("\n"))
