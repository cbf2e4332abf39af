"""In-process entry points: ``install``, ``track_event`` and the ``opentelemetry-instrument`` exporters.

``opentelemetry-instrument --traces_exporter otlp,observatory,flightdeck python app.py`` instantiates the
exporters below with no arguments (configuration comes from the environment) and wraps them in the SDK's
``BatchSpanProcessor``; spans then arrive complete, so ``_start`` and ``_end`` go out together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_bridge.pipeline import Pipeline, build_inprocess
from otel_bridge.processors.sdk import BridgeSpanProcessor
from otel_bridge.spans import span_from_sdk

log = logging.getLogger(__name__)
_installed: list[Pipeline] = []


def install(
    tracer_provider: Any = None,
    *,
    logger_provider: Any = None,
    pipeline: Pipeline | None = None,
    shutdown_timeout: float = 10.0,
    **kwargs: Any,
) -> BridgeSpanProcessor:
    """Add a ``BridgeSpanProcessor`` to a tracer provider (the global one by default).

    The pipeline is ``otel_bridge.pipeline.build`` of the packaged config (``${env:...}`` expanded) — the wiring
    serve uses — with ``kwargs`` as overrides (``observatory_url``, ``observatory_api_key``, ``flightdeck_url``,
    ``flightdeck_token``, ``clickhouse``, ``dead_letter``, ``data_dir``, ``only``, ``options``; see
    ``pipeline.inprocess_config``). With ``logger_provider`` the GenAI log events that carry message content are
    correlated too.
    """
    provider = tracer_provider or trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):
        raise TypeError("install() needs an SDK TracerProvider (opentelemetry.sdk.trace.TracerProvider)")
    pipeline = pipeline or build_inprocess(**kwargs)
    if not pipeline.exporters:
        log.warning("otel-bridge installed with no exporter: set FLOWX_OBSERVATORY_API_URL or FLIGHTDECK_BASE_URL")
    processor = BridgeSpanProcessor(pipeline, shutdown_timeout=shutdown_timeout)
    provider.add_span_processor(processor)
    if logger_provider is not None:
        logger_provider.add_log_record_processor(processor.log_processor())
    _installed.append(pipeline)
    return processor


def track_event(name: str, **fields: Any) -> dict[str, Any] | None:
    """Observatory's call shape: ``track_event("feedback", run_id=..., rating="positive", comment=...)``.

    Without ``run_id`` the event refers to the current span's run. Never raises into the app.
    """
    if not _installed:
        log.warning("otel_bridge.track_event(%r) called before otel_bridge.install(); event dropped", name)
        return None
    try:
        current = trace.get_current_span()
        span = (
            span_from_sdk(current)
            if isinstance(current, ReadableSpan) and current.get_span_context().is_valid
            else None
        )
        event = None
        for pipeline in _installed:
            event = pipeline.track_event(name, fields, span, time.time_ns())
        return event
    except Exception:
        log.exception("otel_bridge.track_event(%r) failed", name)
        return None


class _PipelineSpanExporter(SpanExporter):
    """A ``SpanExporter`` over a pipeline, for ``--traces_exporter`` entry points."""

    def __init__(self, pipeline: Pipeline | None = None, **kwargs: Any) -> None:
        self._pipeline = pipeline or self._build(**kwargs)
        _installed.append(self._pipeline)  # track_event works under opentelemetry-instrument too

    def _build(self, **kwargs: Any) -> Pipeline:
        raise NotImplementedError

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._pipeline.submit_spans(span_from_sdk(s) for s in spans)
        except Exception:
            log.exception("otel-bridge could not take %d spans", len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._pipeline.force_flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        self._pipeline.shutdown(10.0)


class ObservatorySpanExporter(_PipelineSpanExporter):
    """Entry point ``observatory``: FLOWX_OBSERVATORY_API_URL / FLOWX_OBSERVATORY_API_KEY."""

    def _build(self, **kwargs: Any) -> Pipeline:
        import os

        url = kwargs.pop("url", None) or os.environ.get("FLOWX_OBSERVATORY_API_URL")
        if not url:
            raise ValueError("the observatory exporter needs FLOWX_OBSERVATORY_API_URL")
        return build_inprocess(observatory_url=url, only=("observatory",), **kwargs)


class FlightDeckSpanExporter(_PipelineSpanExporter):
    """Entry point ``flightdeck``: FLIGHTDECK_BASE_URL (default http://127.0.0.1:8765), FLIGHTDECK_* mapping."""

    def _build(self, **kwargs: Any) -> Pipeline:
        import os

        url = kwargs.pop("url", None) or os.environ.get("FLIGHTDECK_BASE_URL") or True
        return build_inprocess(flightdeck_url=url, only=("flightdeck",), **kwargs)
