"""Trace → run assembly (DESIGN decision 4), like the collector's groupbytrace processor.

A run is the outermost agent (or workflow) span of a trace with its descendants, or — when a trace has no agent
span — the trace's local root, if LLM calls happened under it. Children usually end before their root, but OTLP
batches from a collector may bring them later, so a trace is held until it has been quiet for ``wait`` after its
local root arrived (``max_wait`` while the root has not been seen). In-process the processor also tells the
assembler which spans are still open, so a trace is never cut while its root runs.

Memory is bounded by ``max_traces`` and by ``max_bytes`` (what the held spans take in memory, estimated from their
size as received, message text included — a few traces of long conversations weigh more than thousands of small
ones): past either the oldest trace is assembled early and counted; ``has_room`` tells receivers to push back
before that. A span arriving for a
run already emitted is counted as late and dropped, never silently merged into another run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from otel_bridge.agentspan import AgentSpan
from otel_bridge.billing import bill_once
from otel_bridge.spans import release_parse

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelUsage:
    provider: str | None
    model: str
    calls: int = 0
    input_tokens: int = 0  # inclusive of cached input, like AgentSpan
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True, eq=False)
class Run:
    root: AgentSpan
    spans: list[AgentSpan]  # the root and every descendant received in time
    early: bool = False  # assembled before its wait ran out (memory cap or shutdown)
    models: list[ModelUsage] = field(init=False)
    tools: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        usage: dict[tuple[str | None, str], ModelUsage] = {}
        tools: dict[str, int] = defaultdict(int)
        for a in self.spans:
            # Only LLM spans carry billable usage; an agent span's own token attributes repeat its children's.
            if a.kind == "llm" and a.model:
                u = usage.get((a.provider, a.model))
                if u is None:
                    u = usage[(a.provider, a.model)] = ModelUsage(a.provider, a.model)
                u.calls += 1
                u.input_tokens += a.input_tokens or 0
                u.cached_input_tokens += a.cached_input_tokens or 0
                u.cache_write_tokens += a.cache_write_tokens or 0
                u.output_tokens += a.output_tokens or 0
                u.reasoning_tokens += a.reasoning_tokens or 0
            elif a.kind == "tool" and a.tool_name:
                tools[a.tool_name] += 1
        self.models = sorted(usage.values(), key=lambda u: -u.total_tokens)
        self.tools = dict(tools)

    @property
    def run_id(self) -> str:
        return self.root.run_id

    @property
    def trace_id(self) -> str:
        return self.root.trace_id

    @property
    def dominant_model(self) -> ModelUsage | None:
        """The model with the most tokens: FlightDeck's RunEvent has room for one."""
        return self.models[0] if self.models else None

    @property
    def latency_ms(self) -> float:
        return self.root.latency_ms

    @property
    def success(self) -> bool:
        return not self.root.error

    @property
    def error_type(self) -> str | None:
        if not self.root.error:
            return None
        return self.root.error_type or next((a.error_type for a in self.spans if a.error_type), None) or "error"

    def total(self, name: str) -> int:
        return sum(getattr(u, name) for u in self.models)


@dataclass(slots=True)
class _Trace:
    first_seen: float
    last_seen: float
    spans: dict[str, AgentSpan] = field(default_factory=dict)
    open_spans: int = 0
    root_seen: bool = False
    size: int = 0  # bytes of its spans (``span_size``)


# What a held span takes in memory: a fixed part for its objects (BridgeSpan, AgentSpan, what recognition read) and
# its encoded bytes, kept instead of the parse (``spans.release_parse``). Measured on the fixtures (resident memory
# after holding 15k spans of one kind): 2.6–2.8 KB for spans of ~0.4 KB encoded, 4.0 KB for 1.5 KB, 4.9–5.4 KB for
# 2.0–2.3 KB, 9.1 KB for 6.6 KB. Holding the parse cost ~4 KB more per span (9.4 KB for 2.3 KB encoded).
SPAN_OBJECTS = 3072
PER_ENCODED_BYTE = 1
ROOM = 0.8  # share of max_traces / max_bytes past which receivers push back
EMIT_BATCH = 64  # traces converted together: enough for the conversion's steps to run warm, few rows held at once


def span_size(a: AgentSpan) -> int:
    """Bytes a held span is estimated to take in memory: from its encoded size when received over OTLP protobuf,
    else from its attribute text (in-process spans hold their values as Python objects)."""
    s = a.span
    if s.size:
        return SPAN_OBJECTS + PER_ENCODED_BYTE * s.size
    return SPAN_OBJECTS + sum(len(v) for v in s.attributes.values() if isinstance(v, (str, bytes)))


class RunAssembler:
    """Groups AgentSpans by trace and emits ``Run``s; thread-safe; ``poll`` is driven by the owner's clock."""

    def __init__(
        self,
        emit: Callable[[list[AgentSpan], list[Run]], None],
        *,
        emit_many: Callable[[list[tuple[list[AgentSpan], list[Run]]]], None] | None = None,
        on_late: Callable[[AgentSpan], None] | None = None,
        wait: float = 5.0,
        max_wait: float = 30.0,
        max_traces: int = 10_000,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit, self._emit_many, self._on_late = emit, emit_many, on_late
        self.wait, self.max_wait, self.max_traces, self.max_bytes = wait, max_wait, max_traces, max_bytes
        self._held = 0  # bytes of the spans of the traces waiting in ``_traces``
        self._converting, self._converting_bytes = 0, 0  # traces taken out and not yet through ``emit``, their bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._traces: OrderedDict[str, _Trace] = OrderedDict()
        self._emitted: OrderedDict[str, set[str]] = OrderedDict()  # trace → span ids already in emitted runs
        self.counters = {"runs": 0, "early": 0, "late_spans": 0, "spans_without_run": 0, "cut_for_bytes": 0}

    @property
    def in_flight(self) -> int:
        """Traces held: waiting for their runs, or taken out and still being converted."""
        return len(self._traces) + self._converting

    @property
    def held_bytes(self) -> int:
        """Estimated memory of the spans held (``span_size``), those of traces still being converted included: a
        poll takes every trace that is due at once, and they stay in memory until their conversion is over."""
        return self._held + self._converting_bytes

    def has_room(self) -> bool:
        """Below ``ROOM`` of both bounds: past it receivers answer "retry later", so a backlog (conversion slower
        than intake) is held back by the clients instead of being cut into early runs or filling memory."""
        return self.in_flight < self.max_traces * ROOM and (
            self.max_bytes is None or self.held_bytes < self.max_bytes * ROOM
        )

    def oldest_first_seen(self) -> float | None:
        """When the oldest trace still held arrived (traces are kept in arrival order); None when none is held."""
        with self._lock:
            return next(iter(self._traces.values())).first_seen if self._traces else None

    def started(self, span: AgentSpan) -> None:
        """In-process: a span of this trace is open, so do not assemble the trace yet."""
        with self._lock:
            t = self._trace(span.trace_id)
            t.open_spans += 1

    def add(self, spans: Iterable[AgentSpan], *, ended_open: bool = False) -> None:
        """Buffer finished spans. ``ended_open`` marks spans previously announced with ``started``."""
        overflow: list[_Trace] = []
        late: list[AgentSpan] = []
        with self._lock:
            now = self._clock()
            for a in spans:
                done = self._emitted.get(a.trace_id)
                if done is not None and (a.span_id in done or a.parent_span_id in done):
                    self.counters["late_spans"] += 1
                    done.add(a.span_id)
                    late.append(a)
                    continue
                release_parse(a.span)  # held as its bytes: parsed again when its run is converted
                t = self._trace(a.trace_id)
                old = t.spans.get(a.span_id)
                size = span_size(a) - (span_size(old) if old is not None else 0)
                t.spans[a.span_id] = a
                t.size += size
                self._held += size
                t.last_seen = now
                if ended_open:
                    t.open_spans = max(0, t.open_spans - 1)
                if a.span.local_root:
                    t.root_seen = True
            while len(self._traces) > self.max_traces:
                overflow.append(self._pop_oldest())
            while self.max_bytes is not None and self._held > self.max_bytes and self._traces:
                overflow.append(self._pop_oldest())
                self.counters["cut_for_bytes"] += 1
        for a in late:
            self._call(self._on_late, a)
        self._assemble_all(overflow, early=True)

    def poll(self) -> int:
        """Assemble every trace whose wait ran out; returns the number of runs emitted."""
        due: list[_Trace] = []
        with self._lock:
            now = self._clock()
            for trace_id in list(self._traces):
                t = self._traces[trace_id]
                if t.open_spans == 0 and now - t.last_seen >= (self.wait if t.root_seen else self.max_wait):
                    due.append(self._pop(trace_id))
        return self._assemble_all(due, early=False)

    def flush(self, *, include_open: bool = True) -> int:
        """Assemble now: everything at shutdown; on force_flush only traces with no span still open."""
        with self._lock:
            due = [self._pop(tid) for tid, t in list(self._traces.items()) if include_open or t.open_spans == 0]
        return self._assemble_all(due, early=True)

    # --------------------------------------------------------------------------------------------- internals

    def _trace(self, trace_id: str) -> _Trace:
        t = self._traces.get(trace_id)
        if t is None:
            now = self._clock()
            t = self._traces[trace_id] = _Trace(now, now)
        return t

    def _pop(self, trace_id: str) -> _Trace:
        t = self._traces.pop(trace_id)
        self._held -= t.size
        self._converting += 1
        self._converting_bytes += t.size
        t.spans = dict(t.spans)
        return t

    def _pop_oldest(self) -> _Trace:
        trace_id = next(iter(self._traces))
        return self._pop(trace_id)

    def _assemble_all(self, traces: list[_Trace], *, early: bool) -> int:
        """Hand the finished traces and their runs to the consumer (spans first: runs refer to them): to
        ``emit_many`` up to ``EMIT_BATCH`` traces at a time when given (converted together, decision 20), else to
        ``emit`` one by one."""
        emitted, step = 0, EMIT_BATCH if self._emit_many is not None else 1
        try:
            for start in range(0, len(traces), step):
                batch = []
                for t in traces[start : start + step]:
                    spans = sorted(t.spans.values(), key=lambda a: a.span.start_ns)
                    runs = assemble(t.spans, early=early)
                    for run in runs:
                        self._remember(run)
                    if not runs:
                        self.counters["spans_without_run"] += len(spans)
                    self.counters["runs"] += len(runs)
                    self.counters["early"] += len(runs) if early else 0
                    emitted += len(runs)
                    batch.append((spans, runs))
                if self._emit_many is not None:
                    self._call(self._emit_many, batch)
                else:
                    self._call(self._emit, *batch[0])
                for i in range(start, start + len(batch)):
                    t, traces[i] = traces[i], None  # type: ignore[call-overload] - converted: its spans may go
                    self._converted(t)
        finally:  # an assembly bug: what was not converted is no longer held either
            for t in traces:
                if t is not None:
                    self._converted(t)
        return emitted

    def _converted(self, t: _Trace) -> None:
        with self._lock:
            self._converting -= 1
            self._converting_bytes -= t.size

    @staticmethod
    def _call(consumer: Callable | None, *args: object) -> None:
        if consumer is None:
            return
        try:
            consumer(*args)
        except Exception:  # a consumer bug must not stop assembly of the other traces
            log.exception("trace consumer failed")

    def _remember(self, run: Run) -> None:
        with self._lock:
            ids = self._emitted.setdefault(run.trace_id, set())
            ids.update(a.span_id for a in run.spans)
            self._emitted.move_to_end(run.trace_id)
            while len(self._emitted) > self.max_traces:
                self._emitted.popitem(last=False)


def assemble(spans: dict[str, AgentSpan], *, early: bool = False) -> list[Run]:
    """Split one trace's spans into runs: outermost run-root spans, else LLM-bearing local roots.

    The trace is complete here, so this is where a model call wrapped by a framework's own LLM span is resolved
    to one billed span (``semconv.bill_once``) before anything counts usage.
    """
    bill_once(spans.values())
    parent_of = {sid: a.parent_span_id for sid, a in spans.items()}

    def top(sid: str) -> str:
        """The highest buffered ancestor of a span (itself if its parent is not here)."""
        seen = 0
        while parent_of.get(sid) in spans and seen < 1024:
            sid = parent_of[sid]
            seen += 1
        return sid

    def outermost_root(sid: str) -> str | None:
        found, seen = None, 0
        cur: str | None = sid
        while cur in spans and seen < 1024:
            if spans[cur].is_run_root_kind:
                found = cur
            cur, seen = parent_of.get(cur), seen + 1
        return found

    members: dict[str, list[AgentSpan]] = defaultdict(list)
    orphans: list[AgentSpan] = []
    for sid, a in spans.items():
        root = outermost_root(sid)
        (members[root].append(a) if root is not None else orphans.append(a))
    if not members:  # no agent span: local roots with LLM descendants
        by_top: dict[str, list[AgentSpan]] = defaultdict(list)
        for a in orphans:
            by_top[top(a.span_id)].append(a)
        members = {r: m for r, m in by_top.items() if any(x.kind == "llm" for x in m)}
        orphans = []
    elif len(members) == 1:  # fragments cut off by a missing intermediate span still belong to the only run
        only = next(iter(members))
        members[only].extend(a for a in orphans if top(a.span_id) != top(only))
    return [Run(spans[root], ms, early=early) for root, ms in members.items() if root in spans]
