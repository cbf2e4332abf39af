"""HTTP client for a SkillFlaw / Langflow monitor API (``/api/v1/monitor``), with the paging rules of Langflow 1.13.

Facts it follows (checked against Langflow 1.13.0): messages take ``limit`` (≤ 200), ``offset`` and ``order`` and
return the newest window first when ordered DESC; transactions are paginated (``page``/``size`` ≤ 100) newest first
with no time filter, so paging stops once a page reaches the watermark; builds hold only the latest build per
component; ``/monitor/traces`` filters by ``start_time``/``end_time``. The API key goes out as ``x-api-key``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger(__name__)

API_KEY_VARIABLE = "SKILLFLAW_API_KEY"
MESSAGE_PAGE = 200  # Langflow's maximum ``limit``
TRANSACTION_PAGE = 100  # Langflow's maximum ``size``
TRACE_PAGE = 100
MAX_PAGES = 1000  # a server that never stops paging cannot hold the poller forever


class SkillFlawError(Exception):
    """A poll that could not complete; the poller logs it and backs off."""


class Unavailable(SkillFlawError):
    """Connection refused, timeout, 5xx or 429: worth retrying later."""


class Unauthorized(SkillFlawError):
    """401/403: the key is missing or wrong; retrying with the same key will not help."""


class NotOffered(SkillFlawError):
    """404/405: this server has no such endpoint (SkillFlaw has no ``/monitor/traces``)."""


_SPACE_TZ = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2}(?:\.\d+)?)\s*(UTC|Z|[+-]\d{2}:?\d{2})?$")


def parse_timestamp(value: Any) -> datetime:
    """SkillFlaw's timestamps (``2024-12-23 19:10:57.123456 UTC``, ``2024-12-23T19:10:58.772766Z``, naive ISO,
    ``+00:00``) as an aware UTC datetime; a naive value is UTC (that is how Langflow stores them)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        m = _SPACE_TZ.match(value.strip())
        if m is None:
            raise ValueError(f"not a timestamp: {value[:40]!r}")
        date, time_, zone = m.groups()
        frac = ""
        if "." in time_:
            time_, frac = time_.split(".")
            frac = "." + frac[:6].ljust(6, "0")
        zone = "+00:00" if zone in (None, "UTC", "Z") else zone
        dt = datetime.fromisoformat(f"{date}T{time_}{frac}{zone}")
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def to_ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


class SkillFlawClient:
    """One ``httpx.Client``; ``transport`` is the seam tests may use (the real tests use a loopback server)."""

    def __init__(self, base_url: str, api_key: str = "", *, timeout: float = 15.0, transport: Any = None) -> None:
        headers = {"accept": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.requests = 0

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET and decode JSON, classifying every failure into one of the exceptions above."""
        self.requests += 1
        try:
            r = self._http.get(path, params={k: v for k, v in (params or {}).items() if v is not None})
        except httpx.HTTPError as exc:
            raise Unavailable(f"{self._http.base_url}{path}: {type(exc).__name__}: {exc}") from None
        if r.status_code in (401, 403):
            raise Unauthorized(
                f"{self._http.base_url}{path} answered {r.status_code}: the API key is missing or not accepted; "
                f"set {API_KEY_VARIABLE} (receivers.skillflaw.api_key) to a valid key"
            )
        if r.status_code in (404, 405):
            raise NotOffered(f"{path} answered {r.status_code}")
        if r.status_code == 429 or r.status_code >= 500:
            raise Unavailable(f"{self._http.base_url}{path} answered {r.status_code}")
        if r.status_code >= 400:
            raise SkillFlawError(f"{path} answered {r.status_code}: {r.text[:200]}")
        try:
            return r.json()
        except ValueError:
            raise SkillFlawError(f"{path}: the answer is not JSON") from None

    # ------------------------------------------------------------------------------------------- endpoints

    def flows(self) -> list[dict[str, Any]]:
        """Every flow the key can see (``GET /api/v1/flows/``), as dicts with at least ``id`` and ``name``."""
        body = self.get("/api/v1/flows/", {"get_all": "true", "header_flows": "true", "remove_example_flows": "true"})
        items = body.get("items", []) if isinstance(body, dict) else body
        return [f for f in items if isinstance(f, dict) and f.get("id")]

    def builds(self, flow_id: str) -> dict[str, list[Any]]:
        body = self.get("/api/v1/monitor/builds", {"flow_id": flow_id})
        builds = body.get("vertex_builds") if isinstance(body, dict) else None
        if not isinstance(builds, dict):
            raise SkillFlawError("/monitor/builds: no vertex_builds mapping in the answer")
        return builds

    def messages(self, flow_id: str, stop_before_ns: int) -> Iterator[Any]:
        """Messages newest first, a page of ``MESSAGE_PAGE`` at a time, until a page reaches ``stop_before_ns``."""
        for page in range(MAX_PAGES):
            items = self.get(
                "/api/v1/monitor/messages",
                {"flow_id": flow_id, "order": "DESC", "limit": MESSAGE_PAGE, "offset": page * MESSAGE_PAGE},
            )
            if not isinstance(items, list):
                raise SkillFlawError("/monitor/messages: the answer is not a list")
            yield from items
            if len(items) < MESSAGE_PAGE or _reaches(items, stop_before_ns):
                return

    def transactions(self, flow_id: str, stop_before_ns: int) -> Iterator[Any]:
        """Transactions newest first, page by page until a page reaches ``stop_before_ns`` or the last page."""
        for page in range(1, MAX_PAGES + 1):
            body = self.get(
                "/api/v1/monitor/transactions", {"flow_id": flow_id, "page": page, "size": TRANSACTION_PAGE}
            )
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise SkillFlawError("/monitor/transactions: no items list in the answer")
            yield from items
            if not items or page >= int(body.get("pages") or 0) or _reaches(items, stop_before_ns):
                return

    def traces(self, flow_id: str, start: datetime | None) -> Iterator[Any]:
        """Flow runs that started at or after ``start`` (``/monitor/traces``; raises NotOffered where absent)."""
        for page in range(1, MAX_PAGES + 1):
            body = self.get("/api/v1/monitor/traces", {
                "flow_id": flow_id, "start_time": start.isoformat() if start else None, "page": page, "size": TRACE_PAGE})  # fmt: skip
            items = body.get("traces", body.get("items")) if isinstance(body, dict) else body
            if not isinstance(items, list):
                raise SkillFlawError("/monitor/traces: no list of traces in the answer")
            yield from items
            pages = int(body.get("pages") or 0) if isinstance(body, dict) else 0
            if not items or page >= pages:
                return

    def trace(self, trace_id: str) -> Any:
        return self.get(f"/api/v1/monitor/traces/{trace_id}")


def _reaches(items: list[Any], stop_before_ns: int) -> bool:
    """True when the oldest readable timestamp on a newest-first page is before the watermark."""
    for item in reversed(items):
        try:
            return to_ns(parse_timestamp(item.get("timestamp"))) < stop_before_ns
        except (AttributeError, ValueError):
            continue
    return False
