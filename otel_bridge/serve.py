"""``otel-bridge serve``: OTLP receivers → pipeline → exporters, and the HTTP API, in one process.

Start order: store (this process owns the chDB directory) → pipeline → gRPC receiver → HTTP listener (OTLP/HTTP and
the API). Stop order, like the collector: receivers → processors (run assembly flushes) → exporters → store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from otel_bridge import client, memory, tls
from otel_bridge.analytics.price_sync import SyncLoop
from otel_bridge.analytics.store import Store
from otel_bridge.config import BridgeConfig
from otel_bridge.exporters.ledger import Ledger
from otel_bridge.pipeline import Pipeline, build, exporter_for, store_config
from otel_bridge.price_library import snapshot_path
from otel_bridge.pricing import PriceTable
from otel_bridge.receivers.otlp import ReceiverSettings, ReceiverStats, check_listeners, decode
from otel_bridge.receivers.otlp_grpc import start_grpc_receiver
from otel_bridge.receivers.otlp_http import otlp_router
from otel_bridge.receivers.skillflaw import skillflaw_from_config
from otel_bridge.receivers.spool import Spool, SpoolFull
from otel_bridge.server import ingest
from otel_bridge.server.app import Runtime, create_app
from otel_bridge.server.metrics import process_usage
from otel_bridge.workerpool import WorkerPool, worker_count

log = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its own shutdown, which would kill the process before the pipeline
    flushes; here a signal only stops the listener and ``serve`` then shuts everything down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def receiver_settings(cfg: BridgeConfig) -> ReceiverSettings:
    otlp = cfg.receivers.otlp
    grpc = otlp.protocols.grpc
    return ReceiverSettings(
        grpc_endpoint=grpc.endpoint if grpc else "",
        http_endpoint=otlp.protocols.http.endpoint,
        max_recv_msg_size=grpc.max_recv_msg_size if grpc else ReceiverSettings.max_recv_msg_size,
        max_request_body_size=otlp.protocols.http.max_request_body_size,
        bearer_token=otlp.auth.bearer_token_value or None,
        grpc_tls=grpc.tls if grpc else None,
        http_tls=otlp.protocols.http.tls,
        allow_plaintext_token=otlp.auth.insecure_allow_plaintext_token,
    )


class SpooledPipeline:
    """The receivers' consumer in ``serve``: the pipeline, with each accepted request written ahead to the spool
    and every item derived from it carrying the request's spool position (the delivery ledger)."""

    def __init__(self, pipeline: Pipeline, spool: Spool) -> None:
        self.pipeline, self.spool = pipeline, spool
        self.has_room = pipeline.has_room

    def persist(self, signal: str, fmt: str, body: bytes) -> int:
        return self.spool.append(signal, fmt, body)

    def release(self, pos: int) -> None:
        self.spool.ledger.release(pos)

    def submit_spans(self, spans: list[Any], pos: int | None = None) -> list[str]:
        return self.pipeline.submit_spans(spans, pos)

    def submit_logs(self, logs: list[Any], pos: int | None = None) -> None:
        self.pipeline.submit_logs(logs, pos)

    def submit(self, signal: str, fmt: str, body: bytes, pos: int | None) -> None:
        """One spooled record into the pipeline (replay uses it; receivers hand over already decoded data)."""
        if signal in ingest.CONVERTERS:
            self.pipeline.submit_rows(
                ingest.rows_of(signal, orjson.loads(body).get("events"), self.pipeline.redactor), pos
            )
            return
        decoded = decode(signal, body, fmt)
        (self.submit_spans if signal == "traces" else self.submit_logs)(decoded.items, pos)

    def replay(self) -> int:
        return self.spool.replay(self.submit)

    def collect(self) -> int:
        """Delete spool segments whose every derived item was delivered or dead-lettered (``receivers.spool``)."""
        return self.spool.collect()


@dataclass
class Service:
    cfg: BridgeConfig
    store: Store
    pipeline: Pipeline | WorkerPool  # the stages here (service.workers: 1), or in worker processes
    settings: ReceiverSettings
    stats: ReceiverStats
    spool: Spool | None = None
    spooled: SpooledPipeline | None = None
    skillflaw: Any = None  # the SkillFlaw poller, when receivers.skillflaw.base_url is set
    grpc: Any = None
    http: uvicorn.Server | None = None
    prices: PriceTable | None = None
    price_sync: SyncLoop | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, cfg: BridgeConfig) -> Service:
        settings = receiver_settings(cfg)
        # Refuse a non-loopback bind without a token, a token in clear, or a bad certificate before touching anything.
        check_listeners(settings)
        store = Store.open(store_config(cfg))
        if cfg.exporters.clickhouse.embedded:  # the data dir holds other people's prompts: owner only
            os.chmod(Path(cfg.exporters.clickhouse.data_dir).expanduser(), 0o700)
        spool_cfg = cfg.receivers.otlp.spool
        spool = None
        if spool_cfg.enabled:
            data_dir = Path(cfg.exporters.clickhouse.data_dir).expanduser().resolve()
            spool = Spool(data_dir.with_name(data_dir.name + ".spool"), max_bytes=spool_cfg.max_size, fsync=spool_cfg.fsync,
                          ledger=Ledger())  # fmt: skip
        ledger = spool.ledger if spool is not None else None
        workers = worker_count(cfg.service.workers)
        if workers > 1:  # the stages in worker processes; this process receives, spools, routes, owns ClickHouse
            clickhouse = (
                exporter_for(cfg, "clickhouse", store, ledger=ledger)
                if "clickhouse" in cfg.enabled_exporters()
                else None
            )
            pipeline: Pipeline | WorkerPool = WorkerPool(cfg, workers, clickhouse, spool)
        else:
            pipeline = build(cfg, store, ledger=ledger)
        service = cls(cfg, store, pipeline, settings, ReceiverStats(), spool=spool)
        # One price table for the API and for model_prices (what Grafana joins), written at start and for new models.
        service.prices = PriceTable.load(snapshot=snapshot_path(cfg.exporters.clickhouse.data_dir))
        service.price_sync = SyncLoop(store, service.prices).start()
        if spool is not None:
            if isinstance(pipeline, WorkerPool):
                pipeline.replay()
            else:
                service.spooled = SpooledPipeline(pipeline, spool)
                service.spooled.replay()  # what a crash left behind goes first, before new traffic
            threading.Thread(target=service._collect_spool, name="otel-bridge-spool", daemon=True).start()
        service.skillflaw = skillflaw_from_config(
            cfg, service.consumer, service.stats
        )  # polled bodies take the OTLP path
        if service.skillflaw is not None:
            service.skillflaw.start()
        return service

    @property
    def consumer(self) -> Any:
        if isinstance(self.pipeline, WorkerPool):
            return self.pipeline
        return self.spooled or self.pipeline

    def _collect_spool(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.spool.collect()  # type: ignore[union-attr]
            except Exception:
                log.exception("spool clean-up failed")

    @property
    def http_url(self) -> str:
        return f"{'https' if tls.enabled(self.settings.http_tls) else 'http'}://{self.settings.http_endpoint}"

    def stats_snapshot(self) -> dict[str, Any]:
        snapshot = {**self.pipeline.stats(), "receivers": self.stats.snapshot()}
        snapshot["processes"] = {"serve": process_usage()}
        if isinstance(self.pipeline, WorkerPool):
            snapshot["processes"].update(self.pipeline.processes())
        if self.spool is not None:
            snapshot["pipeline"] = {**snapshot["pipeline"], **{f"spool_{k}": v for k, v in self.spool.stats().items()}}
        return snapshot

    def ingest(self, kind: str, body: bytes, events: Any) -> int | None:
        """Vendor-format ingest as a receiver: validated (and redacted), checked for room, written ahead to the
        spool, then handed to the pipeline holding its position like any OTLP request. None when full."""
        pipeline = self.pipeline
        if "clickhouse" not in pipeline.exporters:
            raise ingest.IngestError("the clickhouse exporter is off: nothing stores vendor-format events")
        rows = ingest.rows_of(kind, events, pipeline.redactor)
        if not pipeline.has_room(len(rows)):
            return None
        if self.spool is None:
            pipeline.submit_rows(rows)
            return len(rows)
        try:
            pos = self.spool.append(kind, "json", body)
        except SpoolFull:
            return None
        try:
            pipeline.submit_rows(rows, pos)
        finally:
            self.spool.ledger.release(pos)
        return len(rows)

    def app(self):  # noqa: ANN201
        runtime = Runtime(
            store=self.store,
            prices=self.prices or PriceTable.load(snapshot=snapshot_path(self.cfg.exporters.clickhouse.data_dir)),
            stats=self.stats_snapshot,
            ingest=self.ingest,
            token=self.settings.bearer_token,
            routers=[otlp_router(self.consumer, self.settings, self.stats)],
            max_body=self.settings.max_request_body_size,
        )
        return create_app(runtime)

    def start_grpc(self) -> None:
        if self.settings.grpc_endpoint:
            self.grpc = start_grpc_receiver(self.consumer, self.settings, self.stats)

    def run_http(self) -> None:
        """Serve HTTP until stopped (Ctrl-C / SIGTERM in the foreground)."""
        host, _, port = self.settings.http_endpoint.rpartition(":")
        ssl = tls.uvicorn_ssl(self.settings.http_tls, "receivers.otlp.protocols.http.tls")
        config = uvicorn.Config(
            self.app(), host=host.strip("[]"), port=int(port), log_level="warning", access_log=False, **ssl
        )
        self.http = _HttpServer(config)
        client.announce(self.cfg.exporters.clickhouse.data_dir, self.http_url)
        self.http.run()

    def stop(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        if self.http is not None:
            self.http.should_exit = True
        if self.grpc is not None:
            self.grpc.stop(grace=2).wait(3)
        if self.skillflaw is not None:
            self.skillflaw.stop()
        self._stop.set()
        flushed = self.pipeline.shutdown(max(1.0, deadline - time.monotonic()))
        if self.spool is not None:
            left = self.spool.close()  # deletes what was delivered; the rest is replayed next start
            flushed = flushed and not left
        if not flushed:
            log.warning("shutdown deadline: undelivered data stays in the spool for the next start")
        if self.price_sync is not None:
            self.price_sync.stop()
        self.store.close()
        client.withdraw(self.cfg.exporters.clickhouse.data_dir)


def _give_back_memory(cfg: BridgeConfig) -> None:
    """What start-up left resident and no longer needs goes back to the OS (``memory``): chDB's library pages
    its initialisation touched once, and from now on the heap that conversion bursts free; the collector is set
    for a long-running process."""
    if cfg.exporters.clickhouse.embedded:  # serve opens the store for the API whether or not it exports to it
        advised = memory.page_out_library("_chdb")
        log.debug("advised %d MiB of chDB's library pages out", advised >> 20)
    memory.start_housekeeping()


def serve(cfg: BridgeConfig, *, ready: threading.Event | None = None) -> None:
    """Run in the foreground until interrupted; ``ready`` is set once both listeners accept."""
    memory.limit_arenas()  # before chDB's and the receivers' threads make theirs
    memory.without_pandas()  # before the store's first insert
    service = Service.build(cfg)
    _give_back_memory(cfg)
    try:
        service.start_grpc()
        _announce(service)
        if ready is not None:
            threading.Thread(target=_signal_ready, args=(service, ready), daemon=True).start()
        service.run_http()
    finally:
        log.info("shutting down: receivers, run assembly, exporters")
        service.stop()


def _signal_ready(service: Service, ready: threading.Event) -> None:
    while service.http is None or not service.http.started:
        time.sleep(0.02)
    ready.set()


def _announce(service: Service) -> None:
    s = service.settings
    ex = service.cfg.enabled_exporters()
    lines = [
        "otel-bridge is receiving OpenTelemetry traces:",
        f"  OTLP/gRPC  {s.grpc_endpoint or '(off)'}    OTEL_EXPORTER_OTLP_ENDPOINT={'https' if tls.enabled(s.grpc_tls) else 'http'}://{s.grpc_endpoint}"
        if s.grpc_endpoint
        else "  OTLP/gRPC  (off)",
        f"  OTLP/HTTP  {service.http_url}/v1/traces   OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT={service.http_url}",
        f"  API        {service.http_url}/docs   metrics {service.http_url}/metrics",
        f"  exporters  {', '.join(ex)}; data {service.cfg.exporters.clickhouse.data_dir}",
        *(
            [
                f"  SkillFlaw  polling {service.cfg.receivers.skillflaw.base_url} every {service.cfg.receivers.skillflaw.poll_interval:g}s"
            ]
            if service.skillflaw is not None
            else []
        ),
        "  try: otel-bridge demo   (in another terminal), then otel-bridge costs / latency / runs",
    ]
    print("\n".join(lines), flush=True)
