"""FlightDeck sender for the shared batching engine (``otel_bridge.exporters.batch``).

POSTs ``{"events": [RunEvent, ...]}`` to ``{base_url}/v1/events`` and maps the
outcome onto the engine's error contract:

* transport errors (connect/read/write/pool timeouts, resets), HTTP 408, 429, 5xx
  -> :class:`RetryableError` (``retry_after`` parsed from ``Retry-After``);
* HTTP 400 -> ``PermanentError(<server detail>, splittable=True)``: FlightDeck
  1.3.0 validates every event before storing anything and rejects the *whole*
  batch on the first invalid one, so the engine bisects to isolate it;
* HTTP 413 -> ``PermanentError(..., splittable=True)`` (smaller batches may pass);
* any other 4xx (401/403 auth, 404, 422 envelope errors, ...) ->
  ``PermanentError(..., splittable=False)``.

FlightDeck dedupes on ``run_id`` (globally, first write wins) and answers
``{"inserted": n}``; re-sending a batch after an ambiguous failure is safe.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from typing import Any

import httpx
import orjson

from otel_bridge.exporters.batch import PermanentError, RetryableError

__all__ = ["FlightDeckSender", "DEFAULT_BASE_URL", "parse_retry_after"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8765"
ENV_BASE_URL = "FLIGHTDECK_BASE_URL"
ENV_TOKEN = "FLIGHTDECK_LOCAL_API_TOKEN"
EVENTS_PATH = "/v1/events"
_MAX_DETAIL_CHARS = 2000


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
            return None
        return max(0.0, seconds)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # RFC 7231 dates are GMT
        import datetime as _dt

        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, parsed.timestamp() - current)


def _server_detail(response: httpx.Response) -> str:
    """Best-effort human message from a FlightDeck/FastAPI error body."""
    text = ""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = response.text
    else:
        if isinstance(body, dict) and "detail" in body:
            detail = body["detail"]
            if isinstance(detail, str):
                text = detail
            elif isinstance(detail, list):  # FastAPI 422: [{"loc": [...], "msg": ...}, ...]
                parts = []
                for item in detail:
                    if isinstance(item, dict):
                        loc = ".".join(str(p) for p in item.get("loc", []))
                        parts.append(f"{loc}: {item.get('msg', item)}")
                    else:
                        parts.append(str(item))
                text = "; ".join(parts)
            else:
                text = orjson.dumps(detail).decode()
        else:
            text = response.text
    text = text.strip() or response.reason_phrase or "no response body"
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[:_MAX_DETAIL_CHARS] + "..."
    return text


class FlightDeckSender:
    """Sends RunEvent batches to a FlightDeck ``POST /v1/events`` endpoint."""

    name = "flightdeck"

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        base = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        self.base_url = base.strip().rstrip("/")
        self.events_url = self.base_url + EVENTS_PATH
        tok = token if token is not None else os.environ.get(ENV_TOKEN)
        tok = tok.strip() if isinstance(tok, str) else None
        self._token: str | None = tok or None
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        #: ``inserted`` count from the last successful response (duplicates are not counted).
        self.last_inserted: int | None = None

    def __repr__(self) -> str:  # never include the token
        auth = "bearer" if self._token else "none"
        return f"FlightDeckSender(base_url={self.base_url!r}, auth={auth})"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def send(self, batch: list[dict]) -> None:
        if not batch:
            return
        try:
            body = orjson.dumps(
                {"events": batch},
                option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z,
            )
        except TypeError as exc:
            raise PermanentError(f"flightdeck: cannot serialize batch: {exc}", splittable=True) from exc

        try:
            response = self._client.post(
                self.events_url, content=body, headers=self._headers(), timeout=self.timeout
            )
        except httpx.UnsupportedProtocol as exc:
            raise PermanentError(
                f"flightdeck: bad base URL {self.base_url!r}: {exc}", splittable=False
            ) from exc
        except httpx.TransportError as exc:  # connect/read/write/pool errors and timeouts
            kind = type(exc).__name__
            logger.debug("flightdeck: transport error %s posting %d events", kind, len(batch))
            raise RetryableError(f"flightdeck: {kind} posting to {self.events_url}: {exc}") from exc

        status = response.status_code
        if 200 <= status < 300:
            try:
                payload = orjson.loads(response.content) if response.content else {}
                inserted = payload.get("inserted") if isinstance(payload, dict) else None
                self.last_inserted = int(inserted) if inserted is not None else None
            except (orjson.JSONDecodeError, TypeError, ValueError):
                self.last_inserted = None
            logger.debug(
                "flightdeck: posted %d events, inserted=%s", len(batch), self.last_inserted
            )
            return

        detail = _server_detail(response)
        message = f"flightdeck HTTP {status}: {detail}"
        if status in (408, 429) or status >= 500:
            raise RetryableError(
                message, retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        if status in (400, 413):
            raise PermanentError(message, splittable=True)
        if status in (401, 403):
            hint = (
                " (set FLIGHTDECK_LOCAL_API_TOKEN / token=... to the server's token)"
                if status == 401
                else " (ingest without a token is loopback-only; configure a token)"
            )
            raise PermanentError(message + hint, splittable=False)
        raise PermanentError(message, splittable=False)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> FlightDeckSender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
