"""The one place that knows receivers' output, processors and exporters, and wires them (DESIGN: dependency direction).

Flow: finished spans → ``AgentSpan`` → run assembly (held per trace until it is complete, like the collector's
groupbytrace) → for each finished trace: context handed down, GenAI log events attached, then Observatory events,
ClickHouse span/run/event rows and FlightDeck RunEvents, each offered to its exporter's batching engine.
In-process ``_start`` events skip the hold so a running agent shows as started at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.processors.flightdeck import FlightDeckMapping, release_of, run_events
from otel_bridge.processors.observatory import CUSTOM_EVENTS, ObservatoryConverter
from otel_bridge.processors.redact import Redactor
from otel_bridge.processors.runs import Run, RunAssembler
from otel_bridge.agentspan import AgentSpan, Context
from otel_bridge.semconv import inherit_context, recognise
from otel_bridge.spans import BridgeLog, BridgeSpan

log = logging.getLogger(__name__)


@dataclass
class PipelineOptions:
    wait: float = 5.0  # quiet time after a trace's root before its runs are assembled
    max_wait: float = 30.0  # ... while the root has not been seen
    max_traces: int = 10_000
    text_limit: int = 4096
    app_id: str | None = None
    flightdeck: FlightDeckMapping = field(default_factory=FlightDeckMapping)
    max_pending_logs: int = 50_000
    redact_secrets: bool = True
    redact_pii: bool = False


class Pipeline:
    """Thread-safe entry points: ``submit_spans``, ``submit_started``, ``submit_logs``, ``track_event``."""

    def __init__(self, exporters: Mapping[str, BatchExporter], options: PipelineOptions | None = None) -> None:
        self.options = options or PipelineOptions()
        self.exporters = dict(exporters)
        self.observatory = ObservatoryConverter(self.options.app_id)
        self.assembler = RunAssembler(
            self._trace_done,
            on_late=self._late_span,
            wait=self.options.wait,
            max_wait=self.options.max_wait,
            max_traces=self.options.max_traces,
        )
        self.redactor = Redactor(secrets=self.options.redact_secrets, pii=self.options.redact_pii)
        self._lock = threading.Lock()  # converters keep state (chat de-dup, parents): one trace at a time
        self._pending_logs: OrderedDict[tuple[str | None, str | None], list[BridgeLog]] = OrderedDict()
        self._started: OrderedDict[str, Context] = OrderedDict()  # spans whose _start went out → context handed down
        self.counters = {"spans": 0, "started": 0, "logs": 0, "runs_without_release": 0, "late_spans": 0}
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="otel-bridge-runs", daemon=True)
        self._ticker.start()

    # ------------------------------------------------------------------------------------------- entry points

    def submit_spans(self, spans: Iterable[BridgeSpan]) -> int:
        agents = [recognise(s) for s in spans]
        self.counters["spans"] += len(agents)
        self.assembler.add(agents)
        return len(agents)

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
        a.redactor = self.redactor or None
        self.assembler.started(a)
        self.counters["started"] += 1
        with self._lock:
            parent = self._started.get(a.parent_span_id) if a.parent_span_id else None
            a.inherit(parent)
            self.observatory.note_span(a)
            event = self.observatory.start_event(a)
            self._started[a.span_id] = a.context() if a.kind in ("agent", "chain") else (parent or Context())
            if len(self._started) > self.options.max_traces * 10:
                self._started.popitem(last=False)
        if event is not None:
            self._offer("observatory", [event])
            if "clickhouse" in self.exporters:
                self._offer("clickhouse", [("spans", self._span_row(a, status="started"))])

    def submit_logs(self, logs: Iterable[BridgeLog]) -> None:
        with self._lock:
            for record in logs:
                self.counters["logs"] += 1
                self._pending_logs.setdefault((record.trace_id, record.span_id), []).append(record)
            while len(self._pending_logs) > self.options.max_pending_logs:
                self._pending_logs.popitem(last=False)

    def track_event(self, name: str, fields: Mapping[str, Any], span: BridgeSpan | None, time_ns: int) -> dict[str, Any]:
        a = recognise(span) if span is not None else None
        fields = {k: self.redactor(v) if k in ("content", "comment") and isinstance(v, str) else v for k, v in fields.items()}
        with self._lock:
            event = self.observatory.custom_event(name, fields, a, time_ns)
        self._offer("observatory", [event])
        if "clickhouse" in self.exporters:
            self._offer("clickhouse", [("events", self._event_row(event))])
        return event

    # ------------------------------------------------------------------------------------------- lifecycle

    def has_room(self, n: int) -> bool:
        """Backpressure for receivers: every exporter can take ``n`` more items."""
        return all(e.has_room(n) for e in self.exporters.values())

    def force_flush(self, timeout: float | None = None) -> bool:
        self.assembler.flush(include_open=False)
        return all([e.force_flush(timeout) for e in self.exporters.values()])

    def shutdown(self, timeout: float | None = None) -> bool:
        """Receivers first (the caller), then processors, then exporters — like the collector."""
        self._stop.set()
        self._ticker.join(timeout=2)
        self.assembler.flush()
        return all([e.shutdown(timeout) for e in self.exporters.values()])

    def stats(self) -> dict[str, Any]:
        return {
            "pipeline": {**self.counters, "redacted": self.redactor.redacted},
            "runs": {**self.assembler.counters, "in_flight": self.assembler.in_flight},
            "exporters": {name: {**e.stats(), "queue_depth": e.queue_depth} for name, e in self.exporters.items()},
        }

    # ------------------------------------------------------------------------------------------- internals

    def _tick(self) -> None:
        period = max(0.05, min(0.5, self.options.wait / 4))
        while not self._stop.wait(period):
            try:
                self.assembler.poll()
            except Exception:
                log.exception("run assembly failed")

    def _offer(self, exporter: str, items: list[Any]) -> None:
        target = self.exporters.get(exporter)
        if target is not None and items:
            target.offer_many(items)

    def _late_span(self, a: AgentSpan) -> None:
        """A span for a run already emitted: exported on its own, never merged into that run."""
        self.counters["late_spans"] += 1
        self._trace_done([a], [])

    def _trace_done(self, spans: list[AgentSpan], runs: list[Run]) -> None:
        with self._lock:
            for a in spans:
                a.redactor = self.redactor or None
                logs = self._pending_logs.pop((a.trace_id, a.span_id), None)
                if logs:
                    a.attach_logs(logs)
            inherit_context(spans)
            release = {}
            for r in runs:
                named = release_of(r, self.options.flightdeck)
                release.update((a.span_id, named) for a in r.spans)
            to_clickhouse, to_observatory = "clickhouse" in self.exporters, "observatory" in self.exporters
            events, rows = [], []
            if to_observatory:
                for a in spans:  # start order: parents are known before their children ask for them
                    self.observatory.note_span(a)
            for a in sorted(spans, key=lambda a: a.span.end_ns):  # events go out in the order things ended
                started = self._started.pop(a.span_id, None) is not None
                # ClickHouse keeps only the custom events (chat, feedback, saved) of the Observatory conversion.
                converted = self.observatory.convert(a, started=started) if to_observatory else self.observatory.custom_events(a)
                events.extend(converted)
                if to_clickhouse and a.kind != "other":
                    rows.append(("spans", self._span_row(a, release_id=release.get(a.span_id))))
                if to_clickhouse:  # custom events count whatever span carried them (a chat message's own span)
                    rows.extend(("events", self._event_row(e)) for e in converted if e["name"] in CUSTOM_EVENTS)
        fd_events = []
        for run in runs if ("flightdeck" in self.exporters or to_clickhouse) else ():
            converted = run_events(run, self.options.flightdeck)
            if not converted:
                self.counters["runs_without_release"] += 1
            fd_events.extend(converted)
            if to_clickhouse:
                rows.append(("runs", self._run_row(run, converted[-1] if converted else {})))
        self._offer("observatory", events)
        self._offer("clickhouse", rows)
        self._offer("flightdeck", fd_events)

    def _span_row(self, a: AgentSpan, **kwargs: Any) -> tuple:
        return _clickhouse().span_row(a, text_limit=self.options.text_limit, **kwargs)

    def _run_row(self, run: Run, head: Mapping[str, Any]) -> tuple:
        """The runs row reuses what the FlightDeck mapping decided (release, tenant, task, environment)."""
        return _clickhouse().run_row(
            run,
            release_id=head.get("release_id") or release_of(run, self.options.flightdeck),
            tenant_id=head.get("tenant_id"),
            task_id=head.get("task_id"),
            environment=head.get("environment") or run.root.environment,
        )

    @staticmethod
    def _event_row(event: dict[str, Any]) -> tuple:
        return _clickhouse().event_row(event)


def _clickhouse() -> Any:
    """Imported on first use: an in-process install without ClickHouse never loads clickhouse-connect."""
    from otel_bridge.exporters import clickhouse

    return clickhouse


_LONG_RUNNING = {
    "gen_ai.operation.name": frozenset({"invoke_agent", "create_agent", "invoke_workflow"}),
    "openinference.span.kind": frozenset({"AGENT", "CHAIN"}),
    "traceloop.span.kind": frozenset({"agent", "workflow", "task"}),
}


def _may_run_long(attrs: Mapping[str, Any]) -> bool:
    return any(attrs.get(key) in values for key, values in _LONG_RUNNING.items())


def build_pipeline(
    *,
    observatory_url: str | None = None,
    observatory_api_key: str | None = None,
    flightdeck_url: str | bool | None = None,
    flightdeck_token: str | None = None,
    clickhouse: Any = None,
    options: PipelineOptions | None = None,
    dead_letter: str | None = None,
    only: tuple[str, ...] = ("observatory", "flightdeck", "clickhouse"),
) -> Pipeline:
    """A pipeline from plain arguments and the vendors' environment variables (the in-process path).

    Observatory is on when a URL is given or ``FLOWX_OBSERVATORY_API_URL`` is set; FlightDeck when a URL (or True)
    is given or ``FLIGHTDECK_BASE_URL`` is set; ClickHouse when a ``StoreConfig`` is given; each only if in ``only``.
    """
    import os

    exporters: dict[str, BatchExporter] = {}
    if "observatory" in only and (observatory_url or os.environ.get("FLOWX_OBSERVATORY_API_URL")):
        from otel_bridge.exporters.observatory import ObservatorySender

        exporters["observatory"] = BatchExporter(ObservatorySender(observatory_url, observatory_api_key), dead_letter=dead_letter)
    if "flightdeck" in only and (flightdeck_url or os.environ.get("FLIGHTDECK_BASE_URL")):
        from otel_bridge.exporters.flightdeck import FlightDeckSender

        url = flightdeck_url if isinstance(flightdeck_url, str) else None
        exporters["flightdeck"] = BatchExporter(FlightDeckSender(url, flightdeck_token), dead_letter=dead_letter)
    if "clickhouse" in only and clickhouse is not None:
        from otel_bridge.exporters.clickhouse import clickhouse_exporter

        exporters["clickhouse"] = clickhouse_exporter(clickhouse)
    if options is None:
        # The FLIGHTDECK_* fallbacks are read the one way serve reads them: the packaged config's ${env:...}.
        from otel_bridge.config import load_config

        options = PipelineOptions(wait=0.5, max_wait=5.0, flightdeck=flightdeck_mapping(load_config().processors.flightdeck))
    return Pipeline(exporters, options)


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
    )


def pipeline_from_config(cfg: Any, store: Any = None) -> Pipeline:
    """The traces pipeline of a ``BridgeConfig``: its enabled exporters, its processors' settings.

    ``store`` is the ClickHouse store the serving process already opened (the API queries share it).
    """
    from otel_bridge.exporters.clickhouse import ClickHouseSender
    from otel_bridge.exporters.flightdeck import FlightDeckSender
    from otel_bridge.exporters.observatory import ObservatorySender

    traces = cfg.service.pipelines.traces
    ex, pr = cfg.exporters, cfg.processors
    exporters: dict[str, BatchExporter] = {}
    for name in cfg.enabled_exporters():
        if name == "clickhouse":
            sender: Any = ClickHouseSender(store) if store is not None else None
            if sender is None:
                from otel_bridge.analytics.store import Store

                sender = ClickHouseSender(Store.open(store_config(cfg)), owns_store=True)
        elif name == "observatory":
            sender = ObservatorySender(ex.observatory.url, ex.observatory.api_key_value or None)
        else:
            sender = FlightDeckSender(ex.flightdeck.url, ex.flightdeck.token_value or None)
        settings = getattr(ex, name)
        exporters[name] = BatchExporter(
            sender,
            max_batch=settings.batch.max_batch,
            interval=settings.batch.interval,
            max_queue=settings.batch.max_queue,
            dead_letter=getattr(settings, "dead_letter", None) or None,
        )
    mapping = flightdeck_mapping(pr.flightdeck)
    redact = "redact" in traces.processors
    options = PipelineOptions(
        wait=pr.runs.wait,
        max_wait=pr.runs.max_wait,
        max_traces=pr.runs.max_traces,
        text_limit=ex.clickhouse.text_limit,
        app_id=pr.observatory.app_id or None,
        flightdeck=mapping,
        redact_secrets=redact and pr.redact.secrets,
        redact_pii=redact and pr.redact.pii,
    )
    return Pipeline(exporters, options)
