"""FlightDeck sender: ``POST {base_url}/v1/events`` with ``{"events": [RunEvent, ...]}``.

Classification is the shared one (``exporters.http``) plus: 400 and 413 are permanent but *splittable* —
FlightDeck 1.3.0 validates every event before storing anything and rejects the whole batch on the first invalid
one, so the engine bisects to isolate it. FlightDeck dedupes on ``run_id`` (globally, first write wins) and answers
``{"inserted": n}``, so re-sending a batch after an ambiguous failure is safe.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx
import orjson

from otel_bridge.exporters.http import JsonEventsSender, parse_retry_after

__all__ = ["DEFAULT_BASE_URL", "FlightDeckSender", "parse_retry_after"]

DEFAULT_BASE_URL = "http://127.0.0.1:8765"  # FlightDeck's own default
ENV_BASE_URL = "FLIGHTDECK_BASE_URL"
ENV_TOKEN = "FLIGHTDECK_LOCAL_API_TOKEN"
EVENTS_PATH = "/v1/events"


class FlightDeckSender(JsonEventsSender):
    """Sends RunEvent batches; ``last_inserted`` is the server's count of new runs in the last batch."""

    name = "flightdeck"
    splittable_statuses = frozenset({400, 413})

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).strip().rstrip("/")
        token = token if token is not None else os.environ.get(ENV_TOKEN)
        super().__init__(
            self.base_url + EVENTS_PATH, token.strip() if token else None, client=client, timeout=timeout, verify=verify
        )
        self.last_inserted: int | None = None

    @property
    def events_url(self) -> str:
        return self.endpoint

    def delivered(self, response: httpx.Response, n: int) -> None:
        try:
            payload = orjson.loads(response.content) if response.content else {}
            inserted = payload.get("inserted") if isinstance(payload, dict) else None
            self.last_inserted = int(inserted) if inserted is not None else None
        except (orjson.JSONDecodeError, TypeError, ValueError):
            self.last_inserted = None

    def hint(self, status: int) -> str:
        if status == 401:
            return " (set FLIGHTDECK_LOCAL_API_TOKEN / token=... to the server's token)"
        if status == 403:
            return " (ingest without a token is loopback-only; configure a token)"
        return ""

    def __enter__(self) -> FlightDeckSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FlightDeckConversion:
    """Run → FlightDeck RunEvents for this exporter alone (built only when it is on); spans alone send nothing."""

    def __init__(self, mapping: Any) -> None:
        self.mapping = mapping

    def started(self, a: Any) -> list[dict[str, Any]]:
        return []

    def trace(self, spans: list[Any], runs: list[Any], started: frozenset[str]) -> list[dict[str, Any]]:
        from otel_bridge.processors.flightdeck import run_events

        return [event for run in runs for event in run_events(run, self.mapping)]

    def custom(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return []
