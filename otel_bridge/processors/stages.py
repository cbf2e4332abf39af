"""Processor stages that run between run assembly and the exporters' conversions, in the order
``service.pipelines.traces.processors`` lists them (``runs`` — assembly — is built in).

``redact`` is one stage over every text that leaves the bridge: message content and input/output text (through
the span's ``redactor``, read lazily), status messages, error messages, session / conversation / user ids, tags,
metadata (which carries ``traceloop.association.properties.*``), span events (feedback comments), custom events
and vendor-format ingest bodies. Stages take and return plain data (``AgentSpan``s, dicts), so a later change
can run them in worker processes sharded by trace id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from otel_bridge.agentspan import AgentSpan
from otel_bridge.processors.observatory import CUSTOM_EVENTS
from otel_bridge.processors.redact import Redactor
from otel_bridge.spans import SpanEvent, has_event

_TEXT_FIELDS = ("error_message", "error_type", "session_id", "conversation_id", "user_id", "user_email", "agent_name",
                "workflow_name", "tool_name")  # fmt: skip


def redact_value(value: Any, redactor: Callable[[str | None], str | None]) -> Any:
    """Every string inside a JSON-like value, keys included (a metadata key may hold a token too)."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, Mapping):
        return {
            redact_value(k, redactor) if isinstance(k, str) else k: redact_value(v, redactor) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, redactor) for v in value]
    return value


def redact_span(a: AgentSpan, redactor: Redactor) -> AgentSpan:
    """Mask secrets (and PII when asked) in every text of a recognised span, in place."""
    if not redactor:
        return a
    a.redact_with(redactor)  # messages and input/output text are parsed lazily and pass through it
    for name in _TEXT_FIELDS:
        value = getattr(a, name)
        if isinstance(value, str):
            setattr(a, name, redactor(value))
    a.tags = [redactor(t) if isinstance(t, str) else t for t in a.tags]
    if a.metadata:
        a.metadata = redact_value(a.metadata, redactor)
    s = a.span
    if s.status_message:
        s.status_message = redactor(s.status_message) or ""
    if has_event(s.events, CUSTOM_EVENTS):
        # custom events leave as they are; message events are read into messages, which are redacted
        s.events = [
            SpanEvent(e.name, e.time_ns, redact_value(dict(e.attributes), redactor)) if e.name in CUSTOM_EVENTS else e
            for e in s.events
        ]
    return a


STAGES: dict[str, Callable[[AgentSpan, Redactor], AgentSpan]] = {"redact": redact_span}
