"""The OTel SDK side: a ``SpanProcessor`` and a ``LogRecordProcessor`` an instrumented app installs.

The app's threads only append to a bounded queue (``BatchExporter.offer``: a few hundred ns, never blocks, never
raises, drops and counts when full). Conversion and everything after it run on one background worker, like the
SDK's own ``BatchSpanProcessor``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.spans import BridgeLog, BridgeSpan, log_from_sdk, span_from_sdk

log = logging.getLogger(__name__)

_STARTED, _ENDED, _LOG = 0, 1, 2


class SpanSink(Protocol):
    """What the processors feed (``otel_bridge.pipeline.Pipeline``)."""

    def submit_started(self, span: BridgeSpan) -> None: ...

    def submit_ended(self, span: BridgeSpan) -> None: ...

    def submit_logs(self, logs: list[BridgeLog]) -> None: ...

    def force_flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> bool: ...


class _Feed:
    """The queue's consumer: converts SDK objects on the worker thread and hands them to the sink."""

    name = "inprocess"

    def __init__(self, sink: SpanSink) -> None:
        self.sink = sink

    def send(self, batch: list[tuple[int, Any]]) -> None:
        logs = []
        for what, obj in batch:
            try:
                if what == _ENDED:
                    self.sink.submit_ended(span_from_sdk(obj))
                elif what == _STARTED:
                    self.sink.submit_started(span_from_sdk(obj))
                else:
                    logs.append(log_from_sdk(obj))
            except Exception:  # one odd span must not cost the rest of the batch
                log.exception("otel-bridge could not convert a span")
        if logs:
            self.sink.submit_logs(logs)

    def close(self) -> None:
        pass


class _Queue:
    """One bounded queue + worker shared by the span and log processors of an installation."""

    def __init__(self, sink: SpanSink, max_queue: int, interval: float) -> None:
        self.sink = sink
        self.engine = BatchExporter(_Feed(sink), max_queue=max_queue, max_batch=512, interval=interval, max_attempts=1)


class BridgeSpanProcessor(SpanProcessor):
    """Feeds Observatory / FlightDeck / ClickHouse from the app's spans; ``_start`` events go out from ``on_start``."""

    def __init__(
        self, sink: SpanSink, *, max_queue: int = 20_000, interval: float = 0.2, shutdown_timeout: float = 10.0
    ) -> None:
        self._queue = _Queue(sink, max_queue, interval)
        self._shutdown_timeout = shutdown_timeout
        self._offer = self._queue.engine.offer

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self._offer((_STARTED, span))

    def on_end(self, span: ReadableSpan) -> None:
        self._offer((_ENDED, span))

    def log_processor(self) -> BridgeLogProcessor:
        """The ``LogRecordProcessor`` for GenAI events sent as log records, sharing this processor's queue."""
        return BridgeLogProcessor(self._queue)

    @property
    def stats(self) -> dict[str, int]:
        return self._queue.engine.stats()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        timeout = timeout_millis / 1000
        return self._queue.engine.force_flush(timeout) and self._queue.sink.force_flush(timeout)

    def shutdown(self) -> None:
        """Flush what is queued, then the pipeline, within ``shutdown_timeout`` in all (a dead peer cannot hang exit)."""
        deadline = time.monotonic() + self._shutdown_timeout
        self._queue.engine.shutdown(self._shutdown_timeout / 2)
        self._queue.sink.shutdown(max(0.1, deadline - time.monotonic()))


class BridgeLogProcessor(LogRecordProcessor):
    """Correlates GenAI log events (message content) with their span by trace and span id."""

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue

    def on_emit(self, log_record: Any) -> None:
        self._queue.engine.offer((_LOG, log_record))

    emit = on_emit  # SDKs before 1.39 call ``emit``

    def shutdown(self) -> None:
        pass  # the span processor owns the queue and the pipeline

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._queue.engine.force_flush(timeout_millis / 1000)
