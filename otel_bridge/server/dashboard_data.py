"""The dashboard's page contexts, built from the analytics queries (plain data: no HTML here).

Charts are described as ``{id, title, kind, unit, labels, datasets}`` and drawn by static/dashboard.js with Chart.js.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from otel_bridge.analytics import overview as ov
from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store
from otel_bridge.analytics.totals import TOTAL_FILTERS
from otel_bridge.pricing import PriceTable

# The run list's filters: Observatory's set plus the run totals; (name, label, type).
RUN_FILTERS = (
    ("status", "status", "choice"), ("model", "model", "choice"), ("agent", "agent", "choice"),
    ("min_latency_s", "min latency (s)", "float"), ("max_latency_s", "max latency (s)", "float"),
    ("min_cost", "min own cost ($)", "float"), ("max_cost", "max own cost ($)", "float"),
    ("min_total_cost", "min total cost ($)", "float"), ("max_total_cost", "max total cost ($)", "float"),
    ("min_total_tokens", "min total tokens", "float"), ("min_errors", "min errors", "float"),
    ("tags", "tags (any of, comma-separated)", "text"), ("user_email", "user email", "text"),
    ("from", "from (ISO)", "text"), ("to", "to (ISO)", "text"),
)  # fmt: skip
ORDERS = ("-start_time", "start_time", "-latency_s", "-total_cost", "-total_tokens", "-cost", "-llm_calls")


def _label(t: int, step: int) -> str:
    dt = datetime.fromtimestamp(t, UTC)
    return (
        dt.strftime("%m-%d")
        if step >= 86400
        else dt.strftime("%m-%d %H:%M")
        if step >= 3 * 3600
        else dt.strftime("%H:%M")
    )


def _chart(cid: str, title: str, kind: str, unit: str, labels: list, datasets: list, stacked: bool = False) -> dict:
    return {
        "id": cid,
        "title": title,
        "kind": kind,
        "unit": unit,
        "labels": labels,
        "datasets": datasets,
        "stacked": stacked,
    }


def _series(ts: dict[str, Any]) -> list[dict[str, Any]]:
    """Cost by model (stacked), tokens by kind (stacked) and error rates, one value per bucket."""
    index = {t: i for i, t in enumerate(ts["buckets"])}
    labels = [_label(t, ts["step"]) for t in ts["buckets"]]
    n = len(labels)
    by_model: dict[str, list[float]] = {}
    tokens = {"uncached input": [0] * n, "cached input": [0] * n, "output": [0] * n}
    for row in ts["cost"]:
        i = index.get(row["t"])
        if i is None:
            continue
        by_model.setdefault(row["model"] or "(no model)", [0.0] * n)[i] += row["cost"]
        tokens["uncached input"][i] += row["input"] - row["cached"]
        tokens["cached input"][i] += row["cached"]
        tokens["output"][i] += row["output"]
    llm, agent = [None] * n, [None] * n
    for row in ts["errors"]:
        i = index.get(row["t"])
        if i is not None:
            llm[i] = round(100 * row["llm_errors"] / row["llm_calls"], 2) if row["llm_calls"] else None
            agent[i] = round(100 * row["agent_errors"] / row["agent_runs"], 2) if row["agent_runs"] else None
    cost = sorted(by_model.items(), key=lambda kv: -sum(kv[1]))
    return [
        _chart("cost", "Cost by model", "bar", "usd", labels, [{"label": m, "data": v} for m, v in cost], True),
        _chart("tokens", "Tokens", "bar", "tokens", labels, [{"label": k, "data": v} for k, v in tokens.items()], True),
        _chart("errors", "Error rate", "line", "pct", labels,
               [{"label": "agent runs", "data": agent}, {"label": "LLM calls", "data": llm}]),
    ]  # fmt: skip


def _latency_chart(cid: str, title: str, rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    rows = rows[:12]
    labels = [r[key] for r in rows]
    sets = [{"label": p, "data": [r[f"{p}_ms"] for r in rows]} for p in ("p50", "p95", "p99")]
    return _chart(cid, title, "hbar", "ms", labels, sets)


def overview(store: Store, prices: PriceTable, range_key: str) -> dict[str, Any]:
    from_ns, to_ns = ov.window(range_key)
    ts = ov.over_time(store, prices, from_ns, to_ns)
    by_agent = q.latency(store, "agent", from_ns, to_ns, "agent")
    by_model = q.latency(store, "model", from_ns, to_ns, "llm")
    costs = q.costs(store, prices, by="model", from_=from_ns, to=to_ns)
    agents = q.costs(store, prices, by="agent", from_=from_ns, to=to_ns)
    runs = sum(r["count"] for r in by_agent)
    errors = sum(e["agent_errors"] for e in ts["errors"])
    charts = _series(ts)
    charts[2:2] = [_latency_chart("latency_agent", "Agent run latency", by_agent, "agent"),
                   _latency_chart("latency_model", "LLM call latency by model", by_model, "model")]  # fmt: skip
    tiles = {
        "cost": sum(r["cost"] for r in costs), "runs": runs, "llm_calls": sum(r["calls"] for r in costs),
        "tokens": sum(r["input_tokens"] + r["output_tokens"] for r in costs),
        "error_rate": errors / runs if runs else None,
        "cost_per_run": sum(r["cost"] for r in costs) / runs if runs else None,
    }  # fmt: skip
    unpriced = [r for r in q.prices_check(store, prices) if r["source"] == "unpriced"]  # check lists every model
    return {"charts": charts, "tiles": tiles, "unpriced": unpriced,
            "top_agents": [a for a in agents if a["agent"]][:8]}  # fmt: skip


def _filters(form: dict[str, str], range_key: str) -> dict[str, Any]:
    """Form values → ``queries.runs`` filters; empty fields are unset, numbers are checked (ValueError → 400)."""
    out: dict[str, Any] = {}
    for name, label, kind in RUN_FILTERS:
        value = (form.get(name) or "").strip()
        if not value:
            continue
        if kind == "float":
            try:
                out[name] = float(value)
            except ValueError:
                raise ValueError(f"{label}: expected a number, got {value!r}") from None
        elif name == "tags":
            out[name] = [t.strip() for t in value.split(",") if t.strip()]
        else:
            out[name] = value
    if "from" not in out:
        from_ns, _ = ov.window(range_key)
        if from_ns is not None:
            out["from"] = from_ns
    return out


def run_list(store: Store, prices: PriceTable, range_key: str, form: dict[str, str]) -> dict[str, Any]:
    filters = _filters(form, range_key)
    order = form.get("order") or "-start_time"
    try:
        limit = min(max(int(form.get("limit") or 100), 1), 1000)
    except ValueError:
        raise ValueError("limit: expected a whole number") from None
    rows = q.runs(store, prices, limit=limit, order=order, **filters)
    return {"rows": rows, "filters": RUN_FILTERS, "orders": ORDERS, "order": order, "limit": limit,
            "choices": ov.pick_lists(store) | {"statuses": ["success", "error", "started"]},
            "total_filters": sorted(TOTAL_FILTERS)}  # fmt: skip


def run_page(tree: dict[str, Any]) -> dict[str, Any]:
    """Waterfall geometry (offset and width in % of the run) and the LLM-call sums shown beside the totals."""
    run = tree["run"]
    start = q.to_ns(run["start_time"]) // 1_000_000
    total_ms = max(1.0, run["latency_s"] * 1000, *(q.to_ns(s["end_time"]) // 1_000_000 - start for s in tree["spans"]))
    for s in tree["spans"]:
        offset = q.to_ns(s["start_time"]) // 1_000_000 - start
        s["left"] = round(100 * offset / total_ms, 3)
        s["width"] = round(max(0.4, 100 * s["latency_s"] * 1000 / total_ms), 3)
        s["offset_ms"] = offset
    llm = [s for s in tree["spans"] if s["type"] == "llm"]
    chats = [e for e in tree["events"] if e["name"] == "chat"]
    feedback = [e for e in tree["events"] if e["name"] in ("feedback", "saved")]
    return {"run": run, "spans": tree["spans"], "llm_cost_sum": sum(s["cost"] for s in llm), "llm_count": len(llm),
            "total_ms": total_ms, "chats": chats, "feedback": feedback}  # fmt: skip


_METRIC = {"runs": "count", "cost_per_run": "money", "tokens_per_run": "count", "error_rate": "percent"}
_LABELS = {"runs": "runs", "cost_per_run": "cost per run", "tokens_per_run": "tokens per run",
           "latency_mean_ms": "latency, mean", "latency_p50_ms": "latency, p50", "latency_p95_ms": "latency, p95",
           "error_rate": "error rate"}  # fmt: skip
WORSE_WHEN_UP = {"cost_per_run", "tokens_per_run", "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "error_rate"}


def diff_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each metric with its formatter name and whether the change is a regression (up is worse, except runs)."""
    out = []
    for r in rows:
        fmt = _METRIC.get(r["metric"]) or ("millis" if r["metric"].endswith("_ms") else "count")
        worse = r["metric"] in WORSE_WHEN_UP and (r["delta"] or 0) > 0
        better = r["metric"] in WORSE_WHEN_UP and (r["delta"] or 0) < 0
        if r["metric"] == "error_rate":  # a rate moves in percentage points (a 0 baseline has no relative change)
            change = f"{r['delta'] * 100:+.1f} pp" if r["delta"] is not None else ""
        else:
            change = f"{r['delta_pct']:+.1f}%" if r["delta_pct"] is not None else ""
        label = _LABELS.get(r["metric"], r["metric"].replace("_", " "))
        out.append(r | {"fmt": fmt, "worse": worse, "better": better, "change": change, "label": label})
    return out
