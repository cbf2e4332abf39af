"""The HTTP API of ``otel-bridge serve``, on the same listener as OTLP/HTTP (OpenAPI docs at ``/docs``).

Analytics (``/api/run/``, ``/api/costs``, ``/api/latency``, ``/api/diff``, ``/api/prices/check``), health and
Prometheus metrics, and the vendor formats as ingest (``POST /api/report``, ``POST /v1/events``). With a bearer
token configured every request must carry it (compared in constant time), FlightDeck's trust boundary.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from otel_bridge import __version__
from otel_bridge.analytics import queries
from otel_bridge.analytics.store import Store
from otel_bridge.pricing import PriceTable
from otel_bridge.receivers.otlp import Refused
from otel_bridge.receivers.otlp_http import read_capped
from otel_bridge.server import dashboard, ingest
from otel_bridge.server.metrics import metrics_text

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the API serves from: the store the serving process owns, the price table, the pipeline's counters."""

    store: Store
    prices: PriceTable
    stats: Callable[[], dict[str, Any]]
    # Vendor-format ingest (kind "observatory" | "flightdeck", raw body, its events): the inserted count, None when
    # the pipeline is full (503); raises ingest.IngestError for a client's mistake (400).
    ingest: Callable[[str, bytes, Any], int | None]
    token: str | None = None
    routers: list = field(default_factory=list)  # extra routers mounted on the same app (OTLP/HTTP)
    max_body: int = 16 << 20  # ingest bodies, like OTLP/HTTP's max_request_body_size


def _authorized(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="otel-bridge", version=__version__, description=__doc__)
    for router in rt.routers:
        app.include_router(router)

    if rt.token:

        @app.middleware("http")
        async def bearer(request: Request, call_next):  # noqa: ANN001, ANN202
            if not _authorized(request.headers.get("authorization"), rt.token):
                return JSONResponse(
                    {"detail": "missing or wrong bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
            return await call_next(request)

    _analytics_routes(app, rt)
    _ingest_routes(app, rt)
    app.include_router(dashboard.router(rt))  # the dashboard at /, behind the same bearer middleware

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        return Response(metrics_text(rt.stats()), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


async def _query(fn: Callable[..., list[dict[str, Any]]], *args: Any, **kwargs: Any) -> Response:
    """Queries block on ClickHouse: run them off the event loop; bad filter values become 400s."""
    try:
        rows = await run_in_threadpool(fn, *args, **kwargs)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return Response(orjson.dumps(rows, default=str), media_type="application/json")


def _analytics_routes(app: FastAPI, rt: Runtime) -> None:
    @app.get("/api/run/", tags=["analytics"])
    async def list_runs(
        status: Literal["success", "error", "started"] | None = None,
        model: str | None = None,
        agent: str | None = None,
        min_latency_s: float | None = None,
        max_latency_s: float | None = None,
        min_cost: float | None = None,
        max_cost: float | None = None,
        tags: Annotated[list[str] | None, Query()] = None,
        user_email: str | None = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        min_total_cost: float | None = None,
        max_total_cost: float | None = None,
        min_total_tokens: float | None = None,
        max_total_tokens: float | None = None,
        min_llm_calls: int | None = None,
        min_tool_calls: int | None = None,
        min_errors: int | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        order: str = "-start_time",
    ) -> Response:
        """Observatory's run filter set: every span that became an event is a run; each carries its subtree's totals
        (tokens by kind, cost, LLM and tool calls, errors), which filter (``min_total_cost``…) and order too."""
        tag_list = [t for group in tags or [] for t in group.split(",") if t] or None
        filters = dict(status=status, model=model, agent=agent, min_latency_s=min_latency_s, max_latency_s=max_latency_s,
                       min_cost=min_cost, max_cost=max_cost, tags=tag_list, user_email=user_email, to=to)  # fmt: skip
        filters["from"] = from_
        filters |= dict(min_total_cost=min_total_cost, max_total_cost=max_total_cost, min_total_tokens=min_total_tokens,
                        max_total_tokens=max_total_tokens, min_llm_calls=min_llm_calls, min_tool_calls=min_tool_calls,
                        min_errors=min_errors)  # fmt: skip
        return await _query(queries.runs, rt.store, rt.prices, limit=limit, offset=offset, order=order, **filters)

    @app.get("/api/costs", tags=["analytics"])
    async def costs(
        group_by: Literal["model", "provider", "agent", "service", "release", "day"] = "model",
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
    ) -> Response:
        """Cost (USD, current price table) and tokens grouped by one dimension."""
        return await _query(queries.costs, rt.store, rt.prices, by=group_by, from_=from_, to=to)

    @app.get("/api/latency", tags=["analytics"])
    async def latency(
        group_by: Literal["model", "agent", "kind", "release"] = "model",
        kind: str | None = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
    ) -> Response:
        """Count, error rate and p50/p90/p95/p99 in ms."""
        return await _query(queries.latency, rt.store, group_by, from_, to, kind)

    @app.get("/api/diff", tags=["analytics"])
    async def diff(baseline: str, candidate: str) -> Response:
        """Baseline vs candidate release (FlightDeck release id or service.version)."""
        return await _query(queries.diff, rt.store, rt.prices, baseline, candidate)

    @app.get("/api/prices/check", tags=["analytics"])
    async def prices_check() -> Response:
        """Models seen without a price row."""
        return await _query(queries.prices_check, rt.store, rt.prices)


def _ingest_routes(app: FastAPI, rt: Runtime) -> None:
    async def store(request: Request, kind: str) -> dict[str, Any]:
        try:
            body = await read_capped(request, rt.max_body)
        except Refused as exc:
            raise HTTPException(413, exc.message) from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise HTTPException(400, 'body must be an object {"events": [...]}')
        try:
            inserted = await run_in_threadpool(rt.ingest, kind, body, doc.get("events"))
        except ingest.IngestError as exc:
            raise HTTPException(400, str(exc)) from None
        finally:
            del body, doc  # freed with the request (issue 10, memory)
        if inserted is None:
            raise HTTPException(503, "ingest queue full, retry later", headers={"Retry-After": "1"})
        return {"inserted": inserted}

    @app.post("/api/report", tags=["ingest"])
    async def observatory_report(request: Request) -> dict[str, Any]:
        """FlowX Observatory's wire protocol (``{"events": [...]}``) into the store."""
        return await store(request, "observatory")

    @app.post("/v1/events", tags=["ingest"])
    async def flightdeck_events(request: Request) -> dict[str, Any]:
        """FlightDeck v1 RunEvents (``{"events": [...]}``), validated as FlightDeck validates them."""
        return await store(request, "flightdeck")
