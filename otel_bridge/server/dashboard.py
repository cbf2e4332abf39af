"""The dashboard at ``/`` of ``serve``: server-rendered pages over the same queries as the API, plus Chart.js.

Pages: overview (cost by model over time, tokens, latency percentiles by agent and model, error rate, unpriced
models, top agents), runs (Observatory's filter set and the run totals), a run (span waterfall, tokens, cost,
messages, feedback) and the release diff. Every page takes ``range`` (time-range picker) and ``refresh`` (seconds,
auto-refresh). It sits behind the API's bearer-token middleware, so the same auth applies. The chart library is a
committed, minified file (``make dashboard-assets``): running needs neither the network nor Node.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from otel_bridge import humanize as h
from otel_bridge.analytics import overview as ov
from otel_bridge.analytics import queries as q
from otel_bridge.server import dashboard_data as data

HERE = Path(__file__).parent
STATIC = HERE / "static"
REFRESH = (0, 10, 30, 60, 300)


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters.update(money=h.money, count=h.count, seconds=h.seconds, millis=h.millis, percent=h.percent,
                         short_id=h.short_id, when=h.when, signed_percent=h.signed_percent)  # fmt: skip
    return t


def _common(request: Request, range_key: str, refresh: int) -> dict[str, Any]:
    if range_key not in ov.RANGES:
        raise HTTPException(400, f"range: must be one of {', '.join(ov.RANGES)}")
    if refresh not in REFRESH:
        raise HTTPException(400, f"refresh: must be one of {', '.join(map(str, REFRESH))} seconds")
    return {"request": request, "range": range_key, "ranges": list(ov.RANGES), "refresh": refresh,
            "refreshes": REFRESH, "now": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}  # fmt: skip


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Queries block on ClickHouse: off the event loop; a bad filter value is a 400 with its message."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def router(rt: Any) -> APIRouter:
    """The dashboard's routes over the serving process's store and price table (``server.app.Runtime``)."""
    r = APIRouter(include_in_schema=False)
    templates = _templates()

    @r.get("/", response_class=HTMLResponse)
    async def overview(request: Request, range: str = "24h", refresh: int = 0) -> HTMLResponse:  # noqa: A002
        ctx = _common(request, range, refresh)
        ctx |= await _call(data.overview, rt.store, rt.prices, range)
        return templates.TemplateResponse(request, "overview.html", ctx | {"page": "overview"})

    @r.get("/runs", response_class=HTMLResponse)
    async def runs(request: Request, range: str = "24h", refresh: int = 0) -> HTMLResponse:  # noqa: A002
        ctx = _common(request, range, refresh)
        form = {k: v for k, v in request.query_params.items() if k not in ("range", "refresh")}
        ctx |= await _call(data.run_list, rt.store, rt.prices, range, form)
        return templates.TemplateResponse(request, "runs.html", ctx | {"page": "runs", "form": form})

    @r.get("/run/{run_id}", response_class=HTMLResponse)
    async def run(request: Request, run_id: str, range: str = "24h", refresh: int = 0) -> HTMLResponse:  # noqa: A002
        ctx = _common(request, range, refresh)
        tree = await _call(ov.run_tree, rt.store, rt.prices, run_id)
        if tree is None:
            raise HTTPException(404, f"no run {run_id}")
        return templates.TemplateResponse(request, "run.html", ctx | data.run_page(tree) | {"page": "runs"})

    @r.get("/diff", response_class=HTMLResponse)
    async def diff(
        request: Request, baseline: str = "", candidate: str = "", range: str = "24h", refresh: int = 0
    ) -> HTMLResponse:  # noqa: A002
        ctx = _common(request, range, refresh)
        releases = await _call(ov.release_order, rt.store)
        baseline = baseline or (releases[-2] if len(releases) > 1 else "")
        candidate = candidate or (releases[-1] if releases else "")
        rows = await _call(q.diff, rt.store, rt.prices, baseline, candidate) if baseline and candidate else []
        ctx |= {"releases": releases, "baseline": baseline, "candidate": candidate, "rows": data.diff_rows(rows)}
        return templates.TemplateResponse(request, "diff.html", ctx | {"page": "diff"})

    @r.get("/static/{name}")
    def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no static file {name}")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    return r
