"""AgentSpan → FlowX Observatory events (the /api/report wire protocol in shared/seeds/000_…).

Each agent/llm/tool/chain/retriever/embedding span becomes ``<type>_start`` and ``<type>_end``; LLM messages become
``chat`` events, one per user turn and per assistant reply; ``feedback``/``saved`` come from span events and
``track_event``.

A conversation's history is re-sent on every LLM call, so a call reports only the messages it introduced: its
input after the last assistant reply (an assistant message with text: the turn before is history an earlier
trace reported) and its output. Within one trace, the calls of an agent loop re-send the turn's user message
behind tool-call turns, so a message an earlier call of the trace reported is not reported again. Both are read
from the trace alone — all its spans are converted together, in one process — so every worker process, every
restart and every replay reports a message once, with the same id and time; a memory of what a thread already
reported could not (it is per process and forgets).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from otel_bridge.agentspan import AgentSpan, run_id
from otel_bridge.messages import Message
from otel_bridge.spans import has_event

EVENT_TYPES = ("agent", "llm", "tool", "chain", "retriever", "embedding")
CUSTOM_EVENTS = ("chat", "feedback", "saved")
APP_ID_RESOURCE_KEYS = ("flowx.observatory.app_id", "observatory.app_id", "flowx.app_id")


def iso_ms(ns: int) -> str:
    """UTC ISO 8601 with milliseconds and Z, as the wire protocol shows (``2026-05-29T08:42:11.123Z``)."""
    return datetime.fromtimestamp(ns // 1_000_000 / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _message_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


class ObservatoryConverter:
    """Stateful only for parent resolution across batches (bounded)."""

    def __init__(self, app_id: str | None = None, *, max_known_spans: int = 100_000) -> None:
        self.app_id = app_id
        self._known: OrderedDict[tuple[str, str], str | None] = OrderedDict()  # span → parent_run_id it got
        self.max_known_spans = max_known_spans

    # ------------------------------------------------------------------------------------------- run events

    def _base(self, a: AgentSpan) -> dict[str, Any]:
        event: dict[str, Any] = {"run_id": a.run_id, "parent_run_id": self._parent_run_id(a), "type": a.kind}
        app_id = self.app_id or next((a.span.resource[k] for k in APP_ID_RESOURCE_KEYS if k in a.span.resource), None)
        if app_id:
            event["app_id"] = str(app_id)
        event["metadata"] = self.metadata(a)
        return event

    def metadata(self, a: AgentSpan) -> dict[str, Any]:
        meta: dict[str, Any] = {"trace_id": a.trace_id, "span_id": a.span_id}
        for key, value in (
            ("user_email", a.user_email),
            ("user_id", a.user_id),
            ("agent", a.agent),
            ("tags", a.tags or None),
            ("service.name", a.service_name),
            ("service.version", a.service_version),
            ("deployment.environment", a.environment),
            ("conversation_id", a.conversation_id),
            ("session_id", a.session_id),
            ("provider", a.provider),
        ):
            if value is not None:
                meta[key] = value
        return meta

    def _parent_run_id(self, a: AgentSpan) -> str | None:
        """Nearest ancestor that became an event when known, else the direct parent; None for a root."""
        if a.parent_span_id is None:
            return None
        key = (a.trace_id, a.parent_span_id)
        return self._known[key] if key in self._known else run_id(*key)

    def _remember(self, a: AgentSpan, parent_run_id: str | None, became_event: bool) -> None:
        # A span that produced no event passes its own resolved parent down, so children skip over it.
        self._known[(a.trace_id, a.span_id)] = a.run_id if became_event else parent_run_id
        if len(self._known) > self.max_known_spans:
            self._known.popitem(last=False)

    def note_span(self, a: AgentSpan) -> None:
        """Record a span seen at start (in-process) so its children resolve their parent through it."""
        became = a.kind in EVENT_TYPES
        self._remember(a, self._parent_run_id(a), became)

    def _input(self, a: AgentSpan) -> Any:
        if a.kind == "tool":
            return {"tool": a.tool_name, "tool_call_id": a.tool_call_id, "arguments": a.input_text}
        if a.input_messages:
            return {"messages": [_message_json(m) for m in a.input_messages]}
        text = a.input_text
        return {"prompt": text} if text is not None else {}

    def _output(self, a: AgentSpan) -> Any:
        if a.output_messages:
            return {"messages": [_message_json(m) for m in a.output_messages]}
        text = a.output_text
        return {"text": text} if text is not None else None

    def start_event(self, a: AgentSpan) -> dict[str, Any] | None:
        if a.kind not in EVENT_TYPES:
            return None
        event = self._base(a)
        event.update(name=f"{a.kind}_start", timestamp=iso_ms(a.span.start_ns), input=self._input(a), output=None)
        return event

    def end_event(self, a: AgentSpan) -> dict[str, Any] | None:
        if a.kind not in EVENT_TYPES:
            return None
        event = self._base(a)
        event.update(
            name=f"{a.kind}_end",
            timestamp=iso_ms(a.span.end_ns),
            input=self._input(a),
            output=self._output(a),
            status="error" if a.error else "success",
            latency=round(a.latency_ms / 1000, 6),
        )
        if a.error:
            event["error"] = {"type": a.error_type, "message": a.error_message}
        if a.kind == "llm":
            self._usage(a, event)
        return event

    @staticmethod
    def _usage(a: AgentSpan, event: dict[str, Any]) -> None:
        """Observatory prices type=llm events from model + prompt/completion tokens (its cost rules)."""
        event["model"] = a.model or a.request_model or "unknown"
        prompt, completion = a.input_tokens or 0, a.output_tokens or 0
        event.update(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=a.total_tokens or prompt + completion
        )
        if a.cached_input_tokens:
            event["cached_tokens"] = a.cached_input_tokens
        if a.cache_write_tokens:
            event["cache_write_tokens"] = a.cache_write_tokens
        if a.reasoning_tokens:
            event["reasoning_tokens"] = a.reasoning_tokens

    def convert(self, a: AgentSpan, *, started: bool = False, reported: set[str] | None = None) -> list[dict[str, Any]]:
        """Events for a finished span; ``started`` when its ``_start`` already went out from ``on_start``;
        ``reported``: the chat event ids its trace's earlier spans reported (see ``chat_messages``)."""
        end = self.end_event(a)
        self._remember(a, end["parent_run_id"] if end else self._parent_run_id(a), end is not None)
        if end is None:
            return self.custom_events(a, reported)
        events = [end]
        if not started:  # the _start shares the _end's identity, metadata and input: built once, copied
            shared = {k: end[k] for k in ("run_id", "parent_run_id", "type", "app_id", "metadata", "input") if k in end}
            events.insert(
                0, {**shared, "name": f"{a.kind}_start", "timestamp": iso_ms(a.span.start_ns), "output": None}
            )
        return events + self.custom_events(a, reported)

    def custom_events(self, a: AgentSpan, reported: set[str] | None = None) -> list[dict[str, Any]]:
        """``chat`` from an LLM span's messages, ``feedback``/``saved`` from its span events."""
        events = self.chat_events(a, reported) if a.kind == "llm" else []
        return events + self.span_custom_events(a)

    # ------------------------------------------------------------------------------------------- custom events

    def _thread(self, a: AgentSpan) -> tuple[str, str | None]:
        """(de-dup key, thread_id): conversation id, else session id, else none (Observatory groups itself)."""
        thread_id = a.conversation_id or a.session_id
        return (thread_id or f"{a.agent}|{a.user_id or a.user_email}|{a.trace_id}"), thread_id

    def chat_messages(
        self, a: AgentSpan, reported: set[str] | None = None
    ) -> list[tuple[str, str, str | None, int, str]]:
        """``(role, content, thread_id, ns, event_id)`` of each message this call introduced and ``reported`` (the
        ids its trace's earlier calls reported, in the order they ended; updated) does not hold. ``n`` counts
        identical messages over the call's whole list, so a message's id is the same in every call that carries
        it (the next call of an agent loop, a framework's span around the provider's, a retry)."""
        inputs = a.input_messages
        history = max((i for i, m in enumerate(inputs) if m.role == "assistant" and m.content), default=-1)
        counts: dict[tuple[str, str], int] = {}
        out = []
        thread: tuple[str, str | None] | None = None
        for i, m in enumerate(inputs + a.output_messages):
            content = m.content
            if (m.role != "user" and m.role != "assistant") or not content:
                continue
            n = counts[m.role, content] = counts.get((m.role, content), 0) + 1
            if i <= history:  # an earlier turn: reported by the call that introduced it
                continue
            if thread is None:
                thread = self._thread(a)
            digest = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
            event_id = hashlib.blake2b(f"{thread[0]}|{m.role}|{digest}|{n}".encode(), digest_size=16).hexdigest()
            if reported is not None:
                if event_id in reported:
                    continue
                reported.add(event_id)
            ns = a.span.start_ns if i < len(inputs) else a.span.end_ns
            out.append((m.role, content, thread[1], ns, event_id))
        return out

    def chat_events(self, a: AgentSpan, reported: set[str] | None = None) -> list[dict[str, Any]]:
        return [self.chat_event(a, *m) for m in self.chat_messages(a, reported)]

    def chat_event(
        self, a: AgentSpan, role: str, content: str, thread_id: str | None, ns: int, event_id: str
    ) -> dict[str, Any]:
        event = self.custom_event("chat", {"role": role, "content": content}, a, ns)
        event["event_id"] = event_id
        if thread_id:
            event["thread_id"] = thread_id
        return event

    def span_custom_events(self, a: AgentSpan) -> list[dict[str, Any]]:
        """Custom events recorded as span events (``track_event``'s fields as attributes); ``run_id`` defaults to
        the span's own. A ``chat`` span event names its own ``event_id`` (a source's message id), so a message
        edited at its source and sent again replaces its event instead of adding one."""
        if not has_event(a.span.events, CUSTOM_EVENTS):
            return []  # most spans carry none: their events are not made
        redact = a.redactor or (lambda v: v)
        return [
            self.custom_event(e.name, {k: redact(v) if k in ("content", "comment") and isinstance(v, str) else v
                                       for k, v in e.attributes.items()}, a, e.time_ns)
            for e in a.span.events if e.name in CUSTOM_EVENTS
        ]  # fmt: skip

    def custom_event(self, name: str, fields: Mapping[str, Any], a: AgentSpan | None, ns: int) -> dict[str, Any]:
        event: dict[str, Any] = {"name": name, "type": name, "timestamp": iso_ms(ns)}
        if self.app_id:
            event["app_id"] = self.app_id
        event.update({k: v for k, v in fields.items() if v is not None})
        if a is not None:
            event.setdefault("run_id", a.run_id)
            extra = fields.get("metadata")
            event["metadata"] = {**self.metadata(a), **(dict(extra) if isinstance(extra, Mapping) else {})}
        if "rating" in event:
            event["rating"] = str(event["rating"])
        return event
