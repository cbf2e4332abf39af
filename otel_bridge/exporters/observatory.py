"""FlowX Observatory sender: ``POST {url}/api/report`` with ``{"events": [...]}`` and a Bearer key.

Wire protocol: FlowX Observatory "Events" docs (the SDK's batch payload, mirrored exactly). This module only
*classifies* outcomes (STYLE: the exporter classifies, the engine decides): connection errors, timeouts, 429 and
5xx are retryable with the server's ``Retry-After``; any other 4xx is permanent and carries the server's message.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import time
from typing import Any

import httpx
import orjson

from otel_bridge.exporters.batch import BatchExporter, PermanentError, RetryableError

logger = logging.getLogger(__name__)

ENV_URL = "FLOWX_OBSERVATORY_API_URL"
ENV_KEY = "FLOWX_OBSERVATORY_API_KEY"
REPORT_PATH = "/api/report"
_MAX_MESSAGE = 500  # server messages end up in logs and dead-letter lines: keep them bounded


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is not an HTTP-date
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _server_message(response: httpx.Response) -> str:
    """The server's own explanation: ``detail``/``error``/``message`` of a JSON body, else the text."""
    text = response.text
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if body.get(key):
                detail = body[key]
                text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
                break
    text = " ".join(text.split())
    return text[:_MAX_MESSAGE] or response.reason_phrase


class ObservatorySender:
    """Sends batches of Observatory events; one ``httpx.Client`` (connection pooling) per sender."""

    name = "observatory"

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        base = url or os.environ.get(ENV_URL)
        if not base:
            raise ValueError(f"{ENV_URL}: not set and no url given")
        key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        if not key:
            logger.warning("observatory: no API key (set %s); the server will refuse reports", ENV_KEY)
        self.endpoint = base.rstrip("/") + REPORT_PATH
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)

    def __repr__(self) -> str:  # never show the key
        return f"ObservatorySender(endpoint={self.endpoint!r})"

    def send(self, batch: list[Any]) -> None:
        if not batch:
            return
        body = orjson.dumps({"events": batch}, default=str, option=orjson.OPT_NON_STR_KEYS)
        try:
            response = self._client.post(self.endpoint, content=body, headers=self._headers,
                                         timeout=self._timeout)
        except httpx.TransportError as exc:  # connect/read/write/pool errors and timeouts
            raise RetryableError(f"observatory: {type(exc).__name__} posting to {self.endpoint}") from exc
        self._classify(response, len(batch))

    def _classify(self, response: httpx.Response, n: int) -> None:
        status = response.status_code
        if 200 <= status < 300:
            logger.debug("observatory: posted %d events (HTTP %d)", n, status)
            return
        message = f"observatory: HTTP {status}: {_server_message(response)}"
        if status == 429 or status >= 500:
            raise RetryableError(message, retry_after=parse_retry_after(response.headers.get("Retry-After")))
        raise PermanentError(message, splittable=False)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def observatory_exporter(url: str | None = None, api_key: str | None = None, **batch_kwargs: Any) -> BatchExporter:
    """An Observatory exporter on the shared engine; ``batch_kwargs`` go to :class:`BatchExporter`."""
    return BatchExporter(ObservatorySender(url, api_key), **batch_kwargs)
