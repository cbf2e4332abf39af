"""FlightDeck v1 ``RunEvent`` wire model (mirrors flightdeck-ai 1.3.0 validation).

Written independently so otel-bridge has no runtime dependency on flightdeck-ai.
The rules below match what ``POST /v1/events`` of FlightDeck 1.3.0 accepts and
rejects (verified against a real server in ``tests/test_flightdeck_server.py``):

* required: ``timestamp``, ``agent_id``, ``release_id``, ``run_id``, ``tenant_id``,
  ``task_id``, ``environment``, ``usage`` (with ``usage.model.provider``,
  ``usage.model.model``, ``usage.model.input_tokens``, ``usage.model.output_tokens``);
* ``api_version`` must be ``"v1"`` (default), ``type`` is ``"run_start"`` or
  ``"run_end"`` (default ``"run_end"``), ``workspace_id`` defaults to ``"ws_local"``;
* token counts, ``metrics.latency_ms`` and tool ``invocations`` are ints >= 0,
  tool ``cost_units`` a float >= 0; ``labels`` is ``dict[str, str]``;
* pydantic v2 *lax* mode like FlightDeck: numeric strings ("12") and integral
  floats (12.0) coerce to int, "true"/"false"/0/1 coerce to bool, but ints are
  NOT coerced to str (``tenant_id: 5`` is rejected);
* unknown fields are ignored (dropped), not rejected;
* ``timestamp`` accepts ISO-8601 (with or without offset), date-only strings and
  unix seconds.  NOTE: FlightDeck accepts *naive* timestamps but they break its
  ``GET /v1/runs`` (HTTP 500 when mixed with aware ones) and are compared as if
  UTC; producers should always send UTC with an explicit offset (``Z``).
  :func:`RunEvent.is_timezone_aware` lets callers enforce that on top.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "API_VERSION",
    "RUN_EVENT_TYPES",
    "Metrics",
    "ModelUsage",
    "RequestContext",
    "RunEvent",
    "ToolUsage",
    "Usage",
    "IngestBatch",
]

API_VERSION = "v1"
RUN_EVENT_TYPES = ("run_start", "run_end")


class RequestContext(BaseModel):
    """Optional correlation ids (``request`` object)."""

    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


class Metrics(BaseModel):
    latency_ms: int | None = Field(default=None, ge=0)
    success: bool = True
    error_type: str | None = None


class ModelUsage(BaseModel):
    provider: str
    model: str
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)


class ToolUsage(BaseModel):
    tool_name: str
    invocations: int = Field(default=0, ge=0)
    cost_units: float = Field(default=0.0, ge=0)


class Usage(BaseModel):
    model: ModelUsage
    tools: list[ToolUsage] = Field(default_factory=list)


class RunEvent(BaseModel):
    api_version: Literal["v1"] = "v1"
    type: Literal["run_start", "run_end"] = "run_end"
    timestamp: datetime

    workspace_id: str = "ws_local"
    agent_id: str
    release_id: str
    run_id: str

    tenant_id: str
    task_id: str
    environment: str

    request: RequestContext | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    usage: Usage
    labels: dict[str, str] = Field(default_factory=dict)

    def is_timezone_aware(self) -> bool:
        """True when ``timestamp`` carries an offset (FlightDeck does not require it)."""
        return self.timestamp.tzinfo is not None and self.timestamp.utcoffset() is not None

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict in the shape FlightDeck stores/returns (``model_dump(mode="json")``)."""
        return self.model_dump(mode="json")


class IngestBatch(BaseModel):
    """Body of ``POST /v1/events``: ``{"events": [<RunEvent>, ...]}`` (at least one).

    FlightDeck validates the envelope first (FastAPI -> HTTP 422 when ``events`` is
    missing, empty, or has non-object items), then each item as a ``RunEvent``
    (HTTP 400 on the first invalid one; nothing from the batch is stored).
    """

    events: list[dict[str, Any]] = Field(min_length=1)
