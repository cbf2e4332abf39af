"""What the HTTP exporters share: POST ``{"events": [...]}`` and classify the outcome for the batching engine.

STYLE: the exporter classifies, the engine decides. Transport errors, 408, 429 and 5xx are retryable (with the
server's ``Retry-After``); other statuses are permanent and carry the server's own message, bounded in length
because it lands in logs and dead-letter lines. Subclasses name their endpoint and which permanent failures are
worth bisecting.
"""

from __future__ import annotations

import email.utils
import logging
import math
import ssl
import time
from typing import Any

import httpx
import orjson

from otel_bridge.exporters.batch import PermanentError, RetryableError

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value or not value.strip():
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


def server_message(response: httpx.Response) -> str:
    """The server's explanation: a JSON body's ``detail`` (FastAPI 422 lists flattened), ``error`` or
    ``message``, else the text."""
    text = response.text
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            detail = body.get(key)
            if not detail:
                continue
            if isinstance(detail, list):
                detail = "; ".join(
                    f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', d)}" if isinstance(d, dict) else str(d)
                    for d in detail
                )
            text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
            break
    text = " ".join(text.split())
    return text[:_MAX_MESSAGE] or response.reason_phrase or "no response body"


class JsonEventsSender:
    """One pooled ``httpx.Client``; never logs or shows the credential."""

    name = "http"
    splittable_statuses: frozenset[int] = frozenset()  # permanent failures the engine should bisect

    def __init__(
        self,
        endpoint: str,
        token: str | None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,  # otel_bridge.tls.client_context: certificates are verified by default
    ) -> None:
        self.endpoint = endpoint
        self._token = token or None
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            self._headers["Authorization"] = f"Bearer {self._token}"
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout, verify=verify)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, auth={'bearer' if self._token else 'none'})"

    def send(self, batch: list[Any]) -> None:
        if not batch:
            return
        try:
            body = orjson.dumps({"events": batch}, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
        except TypeError as exc:
            raise PermanentError(f"{self.name}: cannot serialize batch: {exc}", splittable=True) from exc
        try:
            response = self._client.post(self.endpoint, content=body, headers=self._headers, timeout=self.timeout)
        except httpx.UnsupportedProtocol as exc:
            raise PermanentError(f"{self.name}: bad URL {self.endpoint!r}: {exc}") from exc
        except httpx.TransportError as exc:  # connect/read/write/pool errors and timeouts
            tls = f" ({exc})" if "SSL" in str(exc) else ""  # a refused certificate says why; no secret is in it
            raise RetryableError(f"{self.name}: {type(exc).__name__} posting to {self.endpoint}{tls}") from exc
        if 200 <= response.status_code < 300:
            self.delivered(response, len(batch))
            return
        self.classify(response)

    def delivered(self, response: httpx.Response, n: int) -> None:
        logger.debug("%s: posted %d events (HTTP %d)", self.name, n, response.status_code)

    def classify(self, response: httpx.Response) -> None:
        status = response.status_code
        message = f"{self.name}: HTTP {status}: {server_message(response)}{self.hint(status)}"
        if status in (408, 429) or status >= 500:
            raise RetryableError(message, retry_after=parse_retry_after(response.headers.get("Retry-After")))
        raise PermanentError(message, splittable=status in self.splittable_statuses)

    def hint(self, status: int) -> str:
        return ""

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
