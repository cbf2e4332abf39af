"""Run → FlightDeck v1 RunEvent (the /v1/events contract in shared/seeds/003_…).

FlightDeck prices ``input_tokens`` and ``cached_input_tokens`` separately and adds them, so ``input_tokens`` here
excludes cache reads (AgentSpan counts input inclusive): otherwise cached tokens would be charged twice. It compares
timestamps as text, so they are always UTC with ``Z``. flightdeck-ai 1.3.0 counts ``run_start`` events as runs in
its diff, so only ``run_end`` is sent unless ``emit_run_start`` is set; run_id is its primary key and the first
write wins, so an opted-in ``run_start`` carries its own id (``<run_id>:start``) or it would swallow the ``run_end``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_bridge.processors.observatory import iso_ms
from otel_bridge.processors.runs import Run


@dataclass(slots=True)
class FlightDeckMapping:
    """How trace facts become RunEvent fields; every default overridable in config."""

    workspace_id: str = "ws_local"
    agent_id: str | None = None  # default when the run names no agent
    release_id: str | None = None  # default when neither resource nor release_map names one
    release_map: dict[str, str] = field(default_factory=dict)  # "service.name@service.version" → release id
    tenant_id: str = "default"
    task_id: str | None = None  # default: the root span's name
    environment: str = "local"  # FlightDeck's own default filter
    emit_run_start: bool = False


def _first(maps: tuple[Mapping[str, Any], ...], *keys: str) -> str | None:
    for key in keys:
        for m in maps:
            value = m.get(key)
            if value not in (None, ""):
                return str(value)
    return None


def release_of(run: Run, m: FlightDeckMapping) -> str | None:
    resource = run.root.span.resource
    explicit = _first((resource, run.root.span.attributes), "flightdeck.release_id")
    if explicit:
        return explicit
    mapped = m.release_map.get(f"{run.root.service_name}@{run.root.service_version}")
    return mapped or m.release_id


def run_identity(run: Run, m: FlightDeckMapping) -> dict[str, str] | None:
    """Release, tenant, task and environment of a run (the spans win over the mapping's fallbacks); None when no
    release can be named. FlightDeck's RunEvents and ClickHouse's runs rows both take them from here."""
    release_id = release_of(run, m)
    if release_id is None:
        return None
    span = run.root.span
    maps = (span.attributes, span.resource)
    return {
        "release_id": release_id,
        "tenant_id": _first(maps, "flightdeck.tenant_id", "tenant.id") or m.tenant_id,
        "task_id": _first(maps, "flightdeck.task_id") or m.task_id or span.name,
        "environment": _first(maps, "deployment.environment.name", "deployment.environment") or m.environment,
    }


def run_events(run: Run, m: FlightDeckMapping) -> list[dict[str, Any]]:
    """The RunEvents for one run; empty when no release can be named (the caller counts it)."""
    ident = run_identity(run, m)
    if ident is None:
        return []
    root, span = run.root, run.root.span
    labels = {k: v for k, v in (("service.name", root.service_name), ("service.version", root.service_version)) if v}
    if len(run.models) > 1:
        labels["models"] = ",".join(sorted({u.model for u in run.models}))
    top = run.dominant_model
    cached = run.total("cached_input_tokens")
    end = {
        "api_version": "v1",
        "type": "run_end",
        "timestamp": iso_ms(span.end_ns),
        "workspace_id": m.workspace_id,
        "agent_id": root.agent_id or root.agent_name or m.agent_id or "unknown",
        "release_id": ident["release_id"],
        "run_id": run.run_id,
        "tenant_id": ident["tenant_id"],
        "task_id": ident["task_id"],
        "environment": ident["environment"],
        "request": {
            "session_id": root.conversation_id or root.session_id,
            "trace_id": root.trace_id,
            "span_id": root.span_id,
        },
        "metrics": {"latency_ms": int(round(run.latency_ms)), "success": run.success, "error_type": run.error_type},
        "usage": {
            "model": {
                "provider": (top.provider if top else root.provider) or "unknown",
                "model": (top.model if top else root.model) or "unknown",
                "input_tokens": max(0, run.total("input_tokens") - cached),
                "output_tokens": run.total("output_tokens"),
                "cached_input_tokens": cached,
            },
            "tools": [{"tool_name": name, "invocations": n} for name, n in sorted(run.tools.items())],
        },
        "labels": labels,
    }
    if not m.emit_run_start:
        return [end]
    start = {
        **end,
        "type": "run_start",
        "run_id": f"{run.run_id}:start",
        "timestamp": iso_ms(span.start_ns),
        "metrics": {"success": True},
    }
    return [start, end]
