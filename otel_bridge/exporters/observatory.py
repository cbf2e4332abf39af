"""FlowX Observatory sender: ``POST {url}/api/report`` with ``{"events": [...]}`` and a Bearer key.

Wire protocol: FlowX Observatory "Events" docs (the SDK's batch payload, mirrored exactly). Classification is the
shared one (``exporters.http``): connection errors, 429 and 5xx retry with the server's ``Retry-After``; any
other 4xx is permanent and carries the server's message.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import httpx

from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.http import JsonEventsSender, parse_retry_after

__all__ = ["ENV_KEY", "ENV_URL", "REPORT_PATH", "ObservatorySender", "observatory_exporter", "parse_retry_after"]

logger = logging.getLogger(__name__)

ENV_URL = "FLOWX_OBSERVATORY_API_URL"
ENV_KEY = "FLOWX_OBSERVATORY_API_KEY"
REPORT_PATH = "/api/report"


class ObservatorySender(JsonEventsSender):
    """Sends batches of Observatory events."""

    name = "observatory"
    # A batch refused as a whole for one bad event: the engine bisects so only that event is dead-lettered.
    splittable_statuses = frozenset({400, 413, 422})

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        base = url or os.environ.get(ENV_URL)
        if not base:
            raise ValueError(f"{ENV_URL}: not set and no url given")
        key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        if not key:
            logger.warning("observatory: no API key (set %s); the server will refuse reports", ENV_KEY)
        super().__init__(base.rstrip("/") + REPORT_PATH, key, client=client, timeout=timeout, verify=verify)


def observatory_exporter(url: str | None = None, api_key: str | None = None, **batch_kwargs: Any) -> BatchExporter:
    """An Observatory exporter on the shared engine; ``batch_kwargs`` go to :class:`BatchExporter`."""
    return BatchExporter(ObservatorySender(url, api_key), **batch_kwargs)


class ObservatoryConversion:
    """AgentSpan → Observatory events for this exporter alone (built only when it is on). Stateful: parent
    resolution across batches, so the pipeline calls it one trace at a time."""

    def __init__(self, app_id: str | None = None) -> None:
        from otel_bridge.processors.observatory import ObservatoryConverter

        self.converter = ObservatoryConverter(app_id)

    def started(self, a: Any) -> list[dict[str, Any]]:
        """In-process: the ``_start`` of something that may run long."""
        self.converter.note_span(a)
        event = self.converter.start_event(a)
        return [event] if event is not None else []

    def trace(self, spans: list[Any], runs: list[Any], started: frozenset[str]) -> list[dict[str, Any]]:
        """One finished trace: start and end events in the order things ended, then chat/feedback/saved."""
        for a in spans:  # start order: parents are known before their children ask for them
            self.converter.note_span(a)
        events: list[dict[str, Any]] = []
        reported: set[str] = set()  # chat messages its earlier calls reported
        for a in sorted(spans, key=lambda a: a.span.end_ns):
            events.extend(self.converter.convert(a, started=a.span_id in started, reported=reported))
        return events

    def custom(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """``track_event``: the event as built, in Observatory's own call shape."""
        return [event]
