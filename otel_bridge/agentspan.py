"""AgentSpan: what otel-bridge knows about one span once the conventions are read (``semconv.recognise``).

Identity and timing read through to the ``BridgeSpan``; messages and texts are parsed on first use (most consumers
never read them) and pass through the pipeline's redactor; context (agent, conversation, user) can be inherited
from the nearest agent or workflow ancestor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from otel_bridge import messages as _messages
from otel_bridge.semconv_tables import RUN_ROOT_OPERATIONS
from otel_bridge.spans import BridgeLog, BridgeSpan

INPUT_TEXT_KEYS = ("input.value", "traceloop.entity.input", "gen_ai.prompt")
OUTPUT_TEXT_KEYS = ("output.value", "traceloop.entity.output", "gen_ai.completion")


def _text(attrs: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return None


@dataclass(slots=True)
class Context:
    """What an agent or workflow span hands down to its descendants."""

    agent_id: str | None = None
    agent_name: str | None = None
    conversation_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    user_email: str | None = None


@dataclass(slots=True, eq=False)
class AgentSpan:
    span: BridgeSpan
    kind: str
    operation: str | None
    model: str | None
    request_model: str | None
    provider: str | None
    input_tokens: int | None = None  # inclusive of cached input
    cached_input_tokens: int | None = None  # cache reads
    cache_write_tokens: int | None = None
    output_tokens: int | None = None  # inclusive of reasoning
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    workflow_name: str | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_type: str | None = None
    conversation_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    user_email: str | None = None
    error: bool = False
    error_type: str | None = None
    error_message: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # attributes ignored as malformed
    framework: str | None = None  # the agent framework that emitted the span (google-adk, strands-agents, ...)
    sources: dict[str, Any] = field(default_factory=dict)  # field → the attribute that decided it (inspect --explain)
    billed_in: str | None = None  # a framework step wrapping a model call: the span id billed for that call
    logs: Sequence[BridgeLog] = ()  # GenAI log events correlated with this span (most have none: no list each)
    redactor: Callable[[str | None], str | None] | None = None  # applied to every message/text read
    _messages: tuple | None = None
    _content: dict[str, Any] | None = None
    _run_id: str | None = None
    _texts: list | None = None  # [input_text, output_text] once read: redacted once, read by every destination

    # --- identity and timing, read through from the span
    @property
    def trace_id(self) -> str:
        return self.span.trace_id

    @property
    def span_id(self) -> str:
        return self.span.span_id

    @property
    def parent_span_id(self) -> str | None:
        return self.span.parent_span_id

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            self._run_id = run_id(self.span.trace_id, self.span.span_id)
        return self._run_id

    @property
    def latency_ms(self) -> float:
        return max(0, self.span.end_ns - self.span.start_ns) / 1e6

    @property
    def status(self) -> str:
        return "error" if self.error else "ok"

    @property
    def agent(self) -> str | None:
        return self.agent_name or self.agent_id

    @property
    def service_name(self) -> str | None:
        return self.span.resource.get("service.name")

    @property
    def service_version(self) -> str | None:
        return self.span.resource.get("service.version")

    @property
    def environment(self) -> str | None:
        res = self.span.resource
        return res.get("deployment.environment.name") or res.get("deployment.environment")

    @property
    def is_run_root_kind(self) -> bool:
        """Agent invocations and workflows start runs (DESIGN decision 4); creating an agent does not."""
        return (self.kind == "agent" and self.operation != "create_agent") or self.operation in RUN_ROOT_OPERATIONS

    # --- messages are parsed on first use: most consumers never read them
    @property
    def content(self) -> dict[str, Any]:
        """The message and text attributes, picked in one pass on first use."""
        if self._content is None:
            self._content = _messages.content_attributes(self.span)
        return self._content

    def _parsed(self) -> tuple:
        if self._messages is None:
            self._messages = _messages.extract(self.span, self.content, self.logs, self.skipped)
            if self.redactor:
                _messages.redact(self._messages, self.redactor)
        return self._messages

    @property
    def input_messages(self) -> list[_messages.Message]:
        return self._parsed()[0]

    @property
    def output_messages(self) -> list[_messages.Message]:
        return self._parsed()[1]

    @property
    def input_text(self) -> str | None:
        return self._read_texts()[0]

    @property
    def output_text(self) -> str | None:
        return self._read_texts()[1]

    def _read_texts(self) -> list:
        if self._texts is None:
            texts = [_text(self.content, INPUT_TEXT_KEYS), _text(self.content, OUTPUT_TEXT_KEYS)]
            for i, role in enumerate(("user", None)):
                if texts[i] is None:  # the last message's text, redacted with its messages
                    texts[i] = _messages.last_text(self._parsed()[i], role)
                elif self.redactor:
                    texts[i] = self.redactor(texts[i])
            self._texts = texts
        return self._texts

    def redact_with(self, redactor: Callable[[str | None], str | None]) -> None:
        """Every message and text read from now on passes through ``redactor`` (what was read is read again)."""
        self.redactor, self._messages, self._texts = redactor, None, None

    def attach_logs(self, logs: Iterable[BridgeLog]) -> None:
        self.logs = [*self.logs, *logs]
        self._messages = self._texts = None

    def inherit(self, ctx: Context | None) -> None:
        """Fill what this span lacks from its nearest agent/workflow ancestor.

        Only agent spans define which agent ran: any other span takes the enclosing agent's identity over its own
        agent attributes (frameworks stamp a default name such as "OpenAI Agent" on every span)."""
        if ctx is None:
            return
        has_agent = ctx.agent_name is not None or ctx.agent_id is not None
        if (self.agent_name is None and self.agent_id is None) or (has_agent and self.kind != "agent"):
            self.agent_id, self.agent_name = ctx.agent_id, ctx.agent_name
        self.conversation_id = self.conversation_id or ctx.conversation_id
        self.session_id = self.session_id or ctx.session_id
        self.user_id = self.user_id or ctx.user_id
        self.user_email = self.user_email or ctx.user_email

    def context(self) -> Context:
        return Context(
            self.agent_id, self.agent_name, self.conversation_id, self.session_id, self.user_id, self.user_email
        )

    def as_dict(self) -> dict[str, Any]:
        """The stable field names scripts rely on (``otel-bridge inspect --json``)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "kind": self.kind,
            "operation": self.operation,
            "name": self.name,
            "agent": self.agent,
            "agent_id": self.agent_id,
            "model": self.model,
            "provider": self.provider,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "tool_name": self.tool_name,
            "tool_call_id": self.tool_call_id,
            "conversation_id": self.conversation_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "user_email": self.user_email,
            "service_name": self.service_name,
            "service_version": self.service_version,
            "environment": self.environment,
            "start_ns": self.span.start_ns,
            "end_ns": self.span.end_ns,
            "latency_ms": round(self.latency_ms, 3),
            "status": self.status,
            "error_type": self.error_type,
            "tags": self.tags,
            "framework": self.framework,
            "billed_in": self.billed_in,
        }


@lru_cache(maxsize=4096)  # a span's id is read again as its children's parent run id, in the same conversion
def run_id(trace_id: str, span_id: str) -> str:
    """Deterministic id for the span (DESIGN decision 3): a re-sent span gets the same id everywhere.

    A BLAKE2b digest of ``trace_id:span_id`` as an RFC 9562 version-8 UUID (cheaper than uuid5, same use).
    """
    h = hashlib.blake2b(f"{trace_id}:{span_id}".encode(), digest_size=16).hexdigest()
    variant = "89ab"[int(h[16], 16) & 3]  # RFC 9562: version 8 (custom), variant 10
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"
