"""The one place that knows receivers' output, processors and exporters, and wires them (DESIGN: dependency direction).

Flow: finished spans → ``AgentSpan`` → run assembly (held per trace until it is complete, like the collector's
groupbytrace) → for each finished trace: context handed down, GenAI log events attached, the configured processors,
then each enabled destination's own converter (``exporters/<name>.py``: Observatory events, ClickHouse
span/run/event rows, FlightDeck RunEvents), each offered to its exporter's batching engine. ``build`` is the one
wiring, for serve and (through ``build_inprocess``) for ``install()`` and the SDK entry points.
In-process ``_start`` events skip the hold so a running agent shows as started at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from otel_bridge import admission
from otel_bridge.agentspan import AgentSpan, Context
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.ledger import Ledger
from otel_bridge.processors import stages
from otel_bridge.processors.flightdeck import FlightDeckMapping, release_of
from otel_bridge.processors.observatory import ObservatoryConverter
from otel_bridge.processors.redact import Redactor
from otel_bridge.processors.runs import Run, RunAssembler
from otel_bridge.semconv import inherit_context, recognise, unknown_operations
from otel_bridge.spans import BridgeLog, BridgeSpan

log = logging.getLogger(__name__)


@dataclass
class PipelineOptions:
    wait: float = 5.0  # quiet time after a trace's root before its runs are assembled
    max_wait: float = 30.0  # ... while the root has not been seen
    max_traces: int = 10_000
    max_bytes: int | None = None  # of the spans run assembly holds (``processors.runs.max_bytes``)
    text_limit: int = 4096
    app_id: str | None = None
    flightdeck: FlightDeckMapping = field(default_factory=FlightDeckMapping)
    max_pending_logs: int = 50_000
    redact_secrets: bool = True
    redact_pii: bool = False
    ttl_days: int | None = None  # ClickHouse's row TTL: a span it would drop at once is refused, not "stored"


class Pipeline:
    """Thread-safe entry points: ``submit_spans``, ``submit_started``, ``submit_logs``, ``track_event``,
    ``submit_rows`` (vendor-format ingest).

    Stages, in order: recognise → admission (out-of-range values refused per span) → run assembly → the
    configured processors (``redact``) → each enabled exporter's conversion → its batching engine. With a
    ``ledger`` (serve's spool) every span carries the spool position it came from until everything derived
    from it was offered to the exporters, which hold it until delivered or dead-lettered.
    """

    def __init__(
        self,
        exporters: Mapping[str, BatchExporter],
        options: PipelineOptions | None = None,
        *,
        ledger: Ledger | None = None,
    ) -> None:
        self.options = options or PipelineOptions()
        self.exporters = dict(exporters)
        self.ledger = ledger
        # Each destination that is on converts for itself (``exporters/<name>.py``); nothing for one that is off.
        self.converters = {name: c for name in self.exporters if (c := _conversion(name, self.options)) is not None}
        self._custom = ObservatoryConverter(self.options.app_id)  # track_event's record (stateless use only)
        self.assembler = RunAssembler(
            self._trace_done,
            emit_many=self._traces_done,
            on_late=self._late_span,
            wait=self.options.wait,
            max_wait=self.options.max_wait,
            max_traces=self.options.max_traces,
            max_bytes=self.options.max_bytes,
        )
        self.redactor = Redactor(secrets=self.options.redact_secrets, pii=self.options.redact_pii)
        self._lock = threading.Lock()  # converters keep state (Observatory's parents): one batch at a time
        self._held_lock = threading.Lock()  # spool positions of buffered spans and logs (never held long)
        self._span_pos: dict[tuple[str, str], int] = {}
        self._pending_logs: OrderedDict[tuple[str | None, str | None], list[tuple[BridgeLog, int | None, float]]] = (
            OrderedDict()
        )
        self._started: OrderedDict[str, Context] = OrderedDict()  # spans whose _start went out → context handed down
        self.counters = {"spans": 0, "started": 0, "logs": 0, "runs_without_release": 0, "late_spans": 0,
                         "refused_spans": 0, "conversion_errors": 0}  # fmt: skip
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="otel-bridge-runs", daemon=True)
        self._ticker.start()

    # ------------------------------------------------------------------------------------------- entry points

    def submit_spans(self, spans: Iterable[BridgeSpan], pos: int | None = None) -> list[str]:
        """Recognise and buffer spans; returns one message per span refused (OTLP ``partial_success``)."""
        agents, refused = [], []
        for s in spans:
            a = recognise(s)
            problem = admission.check(a, self.options.ttl_days)
            if problem is not None:
                refused.append(f"span {s.span_id}: {problem}")
            else:
                agents.append(a)
        self.counters["spans"] += len(agents)
        self.counters["refused_spans"] += len(refused)
        if pos is not None and self.ledger is not None:
            self._hold_spans(agents, pos)
        self.assembler.add(agents)
        return refused

    def submit_ended(self, span: BridgeSpan) -> None:
        """In-process: a span has ended (``submit_started`` saw it start)."""
        self.counters["spans"] += 1
        self.assembler.add([recognise(span)], ended_open=span.span_id in self._started)

    def submit_started(self, span: BridgeSpan) -> None:
        """In-process: live status for what runs long — agents, workflows, chains and a trace's local root (which
        also holds the trace open for run assembly). LLM and tool spans are short: their ``_start`` goes out with
        their ``_end``, which halves the work on the app's busiest spans."""
        if not (span.local_root or _may_run_long(span.attributes)):
            return
        a = recognise(span)
        stages.redact_span(a, self.redactor)
        self.assembler.started(a)
        self.counters["started"] += 1
        with self._lock:
            parent = self._started.get(a.parent_span_id) if a.parent_span_id else None
            a.inherit(parent)
            items = {name: c.started(a) for name, c in self.converters.items()}
            self._started[a.span_id] = a.context() if a.kind in ("agent", "chain") else (parent or Context())
            if len(self._started) > self.options.max_traces * 10:
                self._started.popitem(last=False)
        for name, converted in items.items():
            self._offer(name, converted)

    def submit_logs(self, logs: Iterable[BridgeLog], pos: int | None = None) -> None:
        now = time.monotonic()
        held = pos is not None and self.ledger is not None
        with self._held_lock:
            for record in logs:
                self.counters["logs"] += 1
                self._pending_logs.setdefault((record.trace_id, record.span_id), []).append(
                    (record, pos if held else None, now)
                )
                if held:
                    self.ledger.hold(pos)  # type: ignore[union-attr]
            while len(self._pending_logs) > self.options.max_pending_logs:
                self._release_logs(self._pending_logs.popitem(last=False)[1])

    def track_event(
        self, name: str, fields: Mapping[str, Any], span: BridgeSpan | None, time_ns: int
    ) -> dict[str, Any]:
        """Custom events need no converter state: built on the caller's thread without the conversion lock."""
        a = recognise(span) if span is not None else None
        if a is not None:
            stages.redact_span(a, self.redactor)
        event = self._custom.custom_event(name, stages.redact_value(dict(fields), self.redactor), a, time_ns)
        for dest, converter in self.converters.items():
            self._offer(dest, converter.custom(event))
        return event

    def submit_rows(self, rows: list[tuple[str, Any]], pos: int | None = None) -> None:
        """Vendor-format ingest: rows already in the store's shape, after the spool (and redaction upstream)."""
        self._offer("clickhouse", rows, pos)

    # ------------------------------------------------------------------------------------------- lifecycle

    def has_room(self, n: int) -> bool:
        """Backpressure for receivers, checked before a request is acknowledged: run assembly is below its
        bounds and every exporter's queue, in its own units (events, rows), has room. What was acknowledged is
        never dropped after (``offer_many`` with a position always takes it), so a queue may pass its bound by
        what was in flight."""
        return self.assembler.has_room() and all(e.has_room(n) for e in self.exporters.values())

    def force_flush(self, timeout: float | None = None) -> bool:
        self.assembler.flush(include_open=False)
        return all([e.force_flush(timeout) for e in self.exporters.values()])

    def shutdown(self, timeout: float | None = None) -> bool:
        """Receivers first (the caller), then processors, then exporters — like the collector. False when some
        exporter could not deliver everything in time (the spool keeps it for the next start)."""
        self._stop.set()
        self._ticker.join(timeout=2)
        self.assembler.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for e in self.exporters.values():  # one shared deadline, not one per exporter
            left = None if deadline is None else max(0.05, deadline - time.monotonic())
            results.append(e.shutdown(left))
        return all(results)

    def stats(self) -> dict[str, Any]:
        return {
            "pipeline": {**self.counters, "redacted": self.redactor.redacted},
            "runs": {
                **self.assembler.counters,
                "in_flight": self.assembler.in_flight,
                "held_bytes": self.assembler.held_bytes,
            },
            "unknown_operations": unknown_operations(),
            "exporters": {name: {**e.stats(), "queue_depth": e.queue_depth} for name, e in self.exporters.items()},
        }

    # ------------------------------------------------------------------------------------------- internals

    def _tick(self) -> None:
        """Assemble what is due every ``period``, counted from the start of the last pass: a pass that converted a
        backlog for longer than that is followed at once by the next, not by a pause while clients wait for room."""
        period = max(0.05, min(0.5, self.options.wait / 4))
        pause = period
        while not self._stop.wait(pause):
            started = time.monotonic()
            try:
                self.assembler.poll()
                self._expire_logs()
            except Exception:
                log.exception("run assembly failed")
            pause = max(0.0, period - (time.monotonic() - started))

    def _offer(self, exporter: str, items: list[Any], pos: int | None = None) -> None:
        target = self.exporters.get(exporter)
        if target is not None and items:
            target.offer_many(items, pos)

    def _hold_spans(self, agents: list[AgentSpan], pos: int) -> None:
        ledger = self.ledger
        moved: list[int] = []
        with self._held_lock:
            span_pos = self._span_pos
            held = 0
            for a in agents:
                key = (a.trace_id, a.span_id)
                old = span_pos.get(key)
                if old is None or pos < old:  # a span sent twice keeps one hold, on its oldest position
                    span_pos[key] = pos
                    held += 1
                    if old is not None:
                        moved.append(old)
            ledger.hold(pos, held)  # type: ignore[union-attr]  # once per request, not per span (one lock)
            for old in moved:
                ledger.release(old)  # type: ignore[union-attr]

    def _take_positions(self, spans: list[AgentSpan]) -> list[int]:
        if self.ledger is None:
            return []
        with self._held_lock:
            return [p for a in spans if (p := self._span_pos.pop((a.trace_id, a.span_id), None)) is not None]

    def _release_logs(self, entries: list[tuple[BridgeLog, int | None, float]]) -> None:
        for _, pos, _ in entries:
            if pos is not None:
                self.ledger.release(pos)  # type: ignore[union-attr]

    def _expire_logs(self) -> None:
        """Log records whose span never came: given up after the longest a trace is held."""
        cutoff = time.monotonic() - 2 * (self.options.max_wait + self.options.wait)
        with self._held_lock:
            while self._pending_logs:
                key, entries = next(iter(self._pending_logs.items()))
                if entries[-1][2] > cutoff:
                    break
                del self._pending_logs[key]
                self._release_logs(entries)

    def _late_span(self, a: AgentSpan) -> None:
        """A span for a run already emitted: exported on its own, never merged into that run."""
        self.counters["late_spans"] += 1
        self._trace_done([a], [])

    def _trace_done(self, spans: list[AgentSpan], runs: list[Run]) -> None:
        self._traces_done([(spans, runs)])

    def _traces_done(self, batch: list[tuple[list[AgentSpan], list[Run]]]) -> None:
        """Finished traces: everything derived from each is offered holding the oldest position it came from;
        only then are the spans' own holds released."""
        held: list[tuple[list[int], list[tuple[BridgeLog, int | None, float]]]] = []
        ready: list[_Prepared] = []
        try:
            for spans, runs in batch:
                positions: list[int] = self._take_positions(spans)
                attached: list[tuple[BridgeLog, int | None, float]] = []
                held.append((positions, attached))
                try:
                    ready.append(self._prepare(spans, runs, positions, attached))
                except Exception as exc:  # noqa: BLE001 - a processor bug: counted, logged, the spool holds the data
                    self._failed(spans, exc)
            self._convert(ready)
        finally:
            if self.ledger is not None:
                for positions, attached in held:
                    for p in positions:
                        self.ledger.release(p)
                    self._release_logs(attached)

    def _prepare(self, spans: list[AgentSpan], runs: list[Run], positions: list[int],
                 attached: list[tuple[BridgeLog, int | None, float]]) -> _Prepared:  # fmt: skip
        """A trace's logs attached, the configured processors run and context handed down: the plain data every
        destination converts, and the oldest spool position it came from."""
        with self._held_lock:
            logs = [(a, self._pending_logs.pop((a.trace_id, a.span_id), None)) for a in spans]
        for a, entries in logs:
            if entries:
                a.attach_logs([record for record, _, _ in entries])
                attached.extend(entries)
        pos = min(positions + [p for _, p, _ in attached if p is not None], default=None)
        for a in spans:
            stages.redact_span(a, self.redactor)
        with self._lock:
            inherit_context(spans)
            started = frozenset(a.span_id for a in spans if self._started.pop(a.span_id, None) is not None)
        return _Prepared(spans, runs, started, pos)

    def _convert(self, ready: list[_Prepared]) -> None:
        """Each enabled destination's own conversion of the same plain data, the traces together (ClickHouse's
        makes its rows a step at a time over all of them, decision 20). After a failure they are converted again
        one by one, so a trace whose conversion fails costs only itself (converting again is safe: nothing was
        offered yet, and what a converter remembers — Observatory's parents — it learns again the same)."""
        if not ready:
            return
        try:
            with self._lock:
                items = {name: _convert_all(c, ready) for name, c in self.converters.items()}
        except Exception as exc:  # noqa: BLE001 - a conversion bug: counted, logged, the spool holds the data
            if len(ready) == 1:
                self._failed(ready[0].spans, exc)
            else:
                for one in ready:
                    self._convert([one])
            return
        count_releases = "flightdeck" in self.converters or "clickhouse" in self.converters
        for i, trace in enumerate(ready):
            if count_releases:
                self.counters["runs_without_release"] += sum(
                    1 for r in trace.runs if release_of(r, self.options.flightdeck) is None
                )
            for name, converted in items.items():
                self._offer(name, converted[i], trace.pos)

    def _failed(self, spans: list[AgentSpan], exc: Exception) -> None:
        self.counters["conversion_errors"] += 1
        log.error("converting a trace of %d span(s) failed: %s", len(spans), exc, exc_info=exc)


class _Prepared(NamedTuple):
    spans: list[AgentSpan]
    runs: list[Run]
    started: frozenset[str]
    pos: int | None


def _convert_all(converter: Any, ready: list[_Prepared]) -> list[list[Any]]:
    """A destination's items for each trace: in one call when its conversion takes a batch (``traces``)."""
    if hasattr(converter, "traces"):
        return converter.traces([(t.spans, t.runs, t.started) for t in ready])
    return [converter.trace(t.spans, t.runs, t.started) for t in ready]


def _conversion(name: str, options: PipelineOptions) -> Any:
    """The converter a destination owns next to its exporter, imported only when that destination is on (an
    in-process install without ClickHouse never loads clickhouse-connect); None for a name with none."""
    if name == "observatory":
        from otel_bridge.exporters.observatory import ObservatoryConversion

        return ObservatoryConversion(options.app_id)
    if name == "flightdeck":
        from otel_bridge.exporters.flightdeck import FlightDeckConversion

        return FlightDeckConversion(options.flightdeck)
    if name == "clickhouse":
        from otel_bridge.exporters.clickhouse import ClickHouseConversion

        return ClickHouseConversion(options.app_id, options.flightdeck, options.text_limit)
    return None


_LONG_RUNNING = {
    "gen_ai.operation.name": frozenset({"invoke_agent", "create_agent", "invoke_workflow"}),
    "openinference.span.kind": frozenset({"AGENT", "CHAIN"}),
    "traceloop.span.kind": frozenset({"agent", "workflow", "task"}),
}


def _may_run_long(attrs: Mapping[str, Any]) -> bool:
    return any(attrs.get(key) in values for key, values in _LONG_RUNNING.items())


def inprocess_config(
    *,
    observatory_url: str | None = None,
    observatory_api_key: str | None = None,
    flightdeck_url: str | bool | None = None,
    flightdeck_token: str | None = None,
    clickhouse: Any = None,
    dead_letter: str | None = None,
    data_dir: str | None = None,
    only: tuple[str, ...] = ("observatory", "flightdeck", "clickhouse"),
) -> Any:
    """The packaged config (``${env:...}`` expanded, as serve reads it) with ``install()``'s keyword overrides.

    Observatory is on when a URL is given or ``FLOWX_OBSERVATORY_API_URL`` is set; FlightDeck when a URL (or True:
    its default URL) is given or ``FLIGHTDECK_BASE_URL`` is set; ClickHouse only when a ``StoreConfig`` (or
    ``Store``) is given; each only if in ``only``. In-process runs are assembled sooner (0.5 s quiet, 5 s at most)
    than serve's, which waits for spans from other processes. There is no spool in-process, so dead letters are
    written only where asked: ``dead_letter`` (one file for every destination) or under ``data_dir``.
    """
    from pydantic import SecretStr

    from otel_bridge.config import load_config
    from otel_bridge.exporters.flightdeck import DEFAULT_BASE_URL

    cfg = load_config(data_dir=data_dir)
    ex, pr = cfg.exporters, cfg.processors
    obs = {"url": observatory_url or ex.observatory.url}
    if observatory_api_key is not None:
        obs["api_key"] = SecretStr(observatory_api_key)
    fd_url = (
        flightdeck_url
        if isinstance(flightdeck_url, str)
        else ex.flightdeck.url or (DEFAULT_BASE_URL if flightdeck_url else "")
    )
    fd = {"url": fd_url}
    if flightdeck_token is not None:
        fd["token"] = SecretStr(flightdeck_token)
    if dead_letter:
        obs["dead_letter"] = fd["dead_letter"] = dead_letter
    on = [
        n for n in cfg.service.pipelines.traces.exporters if n in only and (n != "clickhouse" or clickhouse is not None)
    ]
    return _updated(
        cfg,
        exporters=_updated(
            ex,
            observatory=_updated(ex.observatory, **obs),
            flightdeck=_updated(ex.flightdeck, **fd),
            clickhouse=_store_settings(ex.clickhouse, clickhouse, dead_letter),
        ),
        processors=_updated(pr, runs=_updated(pr.runs, wait=0.5, max_wait=5.0)),
        service=_updated(
            cfg.service,
            pipelines=_updated(cfg.service.pipelines, traces=_updated(cfg.service.pipelines.traces, exporters=on)),
        ),
    )


def build_inprocess(*, options: PipelineOptions | None = None, **overrides: Any) -> Pipeline:
    """``install()`` and the SDK entry points: ``build`` of ``inprocess_config(**overrides)`` — the one wiring.
    ``options`` replaces the settings the config gives (tests shorten run assembly's wait with it)."""
    data_dir, clickhouse = overrides.get("data_dir"), overrides.get("clickhouse")
    return build(inprocess_config(**overrides), clickhouse, options=options, default_dead_letters=data_dir is not None)


def _updated(model: Any, **update: Any) -> Any:
    return model.model_copy(update=update)


def _store_settings(ch: Any, store: Any, dead_letter: str | None) -> Any:
    """``exporters.clickhouse`` taking the text limit and TTL of the store ``install(clickhouse=...)`` was given."""
    settings = getattr(store, "config", store)
    update: dict[str, Any] = {"dead_letter": dead_letter} if dead_letter else {}
    if settings is not None:
        update.update(text_limit=settings.text_limit, ttl=settings.ttl_days * 86400.0)
    return _updated(ch, **update)


def flightdeck_mapping(fd: Any) -> FlightDeckMapping:
    """``processors.flightdeck`` of a ``BridgeConfig`` (empty strings mean "not set")."""
    return FlightDeckMapping(
        workspace_id=fd.workspace_id,
        agent_id=fd.agent_id or None,
        release_id=fd.release_id or None,
        release_map=dict(fd.release_map),
        tenant_id=fd.tenant_id,
        task_id=fd.task_id or None,
        environment=fd.environment,
        emit_run_start=fd.emit_run_start,
    )


def store_config(cfg: Any) -> Any:
    """``exporters.clickhouse`` of a ``BridgeConfig`` as the store's connection settings."""
    from otel_bridge.analytics.store import StoreConfig
    from otel_bridge.tls import clickhouse_options

    ch = cfg.exporters.clickhouse
    return StoreConfig(
        data_dir=ch.data_dir,
        host=ch.host or None,
        port=ch.port if ch.host else None,
        username=ch.username,
        password=ch.password_value,
        database=ch.database,
        secure=ch.secure,
        cluster=ch.cluster or None,
        create_schema=ch.create_schema,
        ttl_days=ch.ttl_days,
        text_ttl_days=ch.text_ttl_days,
        text_limit=ch.text_limit,
        tls=clickhouse_options(ch.tls, "exporters.clickhouse.tls", password=bool(ch.password_value)) if ch.host else {},
    )


def dead_letter_path(cfg: Any, name: str, default: bool = True) -> str | None:
    """``exporters.<name>.dead_letter``, or by default one JSONL per destination under the data dir (None: no
    default, the in-process path without a data dir)."""
    configured = getattr(getattr(cfg.exporters, name), "dead_letter", "") or ""
    if configured or not default:
        return configured or None
    from pathlib import Path

    return str(Path(cfg.exporters.clickhouse.data_dir).expanduser() / "dead-letters" / f"{name}.jsonl")


def sender_for(cfg: Any, name: str, store: Any = None) -> Any:
    """The sender of one configured destination (also used by ``otel-bridge dead-letters retry``)."""
    ex = cfg.exporters
    if name == "clickhouse":
        from otel_bridge.analytics.store import Store, StoreConfig
        from otel_bridge.exporters.clickhouse import ClickHouseSender

        if isinstance(store, StoreConfig):  # in-process: settings given, the exporter opens and closes the store
            return ClickHouseSender(Store.open(store), owns_store=True)
        if store is not None:
            return ClickHouseSender(store)
        return ClickHouseSender(Store.open(store_config(cfg)), owns_store=True)
    from otel_bridge.tls import client_context

    if name == "observatory":
        from otel_bridge.exporters.observatory import ObservatorySender

        verify = client_context(ex.observatory.tls, "exporters.observatory.tls")
        return ObservatorySender(ex.observatory.url, ex.observatory.api_key_value or None, verify=verify)
    from otel_bridge.exporters.flightdeck import FlightDeckSender

    verify = client_context(ex.flightdeck.tls, "exporters.flightdeck.tls")
    return FlightDeckSender(ex.flightdeck.url, ex.flightdeck.token_value or None, verify=verify)


def exporter_for(cfg: Any, name: str, store: Any = None, *, ledger: Ledger | None = None,
                 default_dead_letters: bool = True) -> BatchExporter:  # fmt: skip
    """One configured destination's batching engine and sender (``serve``'s worker pool builds ClickHouse's)."""
    batch = getattr(cfg.exporters, name).batch
    return BatchExporter(
        sender_for(cfg, name, store),
        max_batch=batch.max_batch,
        interval=batch.interval,
        max_queue=batch.max_queue,
        max_queue_bytes=getattr(batch, "max_queue_bytes", None),  # ClickHouse's rows are bounded by bytes too
        max_elapsed=batch.max_elapsed,
        initial_backoff=batch.initial_backoff,
        max_backoff=batch.max_backoff,
        dead_letter=dead_letter_path(cfg, name, default_dead_letters),
        ledger=ledger,
    )


def build(
    cfg: Any,
    store: Any = None,
    *,
    ledger: Ledger | None = None,
    options: PipelineOptions | None = None,
    default_dead_letters: bool = True,
    replace: Mapping[str, Any] | None = None,
) -> Pipeline:
    """The traces pipeline of a ``BridgeConfig`` — serve, its workers, ``install()`` and the SDK entry points all
    come here: its enabled exporters, its processors' settings, in the order ``service.pipelines.traces.processors``
    lists them. ``store`` is the ClickHouse store the serving process already opened (the API queries share it), or
    the ``StoreConfig`` given to ``install()``; ``ledger`` the spool's delivery ledger (serve); ``options``
    replaces the processors' settings; ``default_dead_letters=False`` writes dead letters only where configured;
    ``replace`` gives ready exporters by name (a worker ships ClickHouse rows to the process owning the store)."""
    traces = cfg.service.pipelines.traces
    ex, pr = cfg.exporters, cfg.processors
    replace = replace or {}
    exporters: dict[str, BatchExporter] = {
        name: replace[name]
        if name in replace
        else exporter_for(cfg, name, store, ledger=ledger, default_dead_letters=default_dead_letters)
        for name in cfg.enabled_exporters()
    }
    redact = "redact" in traces.processors
    options = options or PipelineOptions(
        wait=pr.runs.wait,
        max_wait=pr.runs.max_wait,
        max_traces=pr.runs.max_traces,
        max_bytes=pr.runs.max_bytes,
        text_limit=ex.clickhouse.text_limit,
        app_id=pr.observatory.app_id or None,
        flightdeck=flightdeck_mapping(pr.flightdeck),
        redact_secrets=redact and pr.redact.secrets,
        redact_pii=redact and pr.redact.pii,
        ttl_days=ex.clickhouse.ttl_days if "clickhouse" in exporters else None,
    )
    return Pipeline(exporters, options, ledger=ledger)


pipeline_from_config = build  # the name serve used before ``build``
