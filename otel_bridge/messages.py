"""Chat messages of an LLM span, from wherever a convention put them.

Sources, in precedence order:
- GenAI current: ``gen_ai.system_instructions`` / ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON
  strings or structured values of role + parts), on the span or on a ``gen_ai.client.inference.operation.details``
  log event;
- OpenInference: ``llm.input_messages.N.message.*`` / ``llm.output_messages.N.message.*``;
- OpenLLMetry: ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*``;
- GenAI deprecated events ``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice``, as span events or
  as log records correlated by trace and span id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from otel_bridge.spans import BridgeLog, BridgeSpan, has_event, pick


@dataclass(slots=True)
class ToolCall:
    id: str | None
    name: str | None
    arguments: str | None


@dataclass(slots=True)
class Message:
    role: str
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_MESSAGE_EVENTS = frozenset({*_EVENT_ROLES, "gen_ai.choice", _DETAILS_EVENT})
# The attributes messages and texts are read from: picked from a span in one pass (``content_attributes``).
CONTENT_KEYS = frozenset({
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.prompt",
    "gen_ai.completion", "input.value", "output.value", "traceloop.entity.input", "traceloop.entity.output",
})  # fmt: skip
# indexed message keys' prefixes, two dotted components each → (output side, default role)
_INDEXED = {("llm", "input_messages"): (False, "user"), ("llm", "output_messages"): (True, "assistant"),
            ("gen_ai", "prompt"): (False, "user"), ("gen_ai", "completion"): (True, "assistant")}  # fmt: skip
CONTENT_PREFIXES = tuple(f"{head}.{name}." for head, name in _INDEXED)


# Roles as the GenAI conventions name them (system, user, assistant, tool): Gemini and Google ADK call the model's
# turns "model", LangChain's message types are "human" and "ai". A reply is an assistant message whatever the
# provider calls it, so chat events and the history boundary read the same everywhere.
_ROLES = {"model": "assistant", "ai": "assistant", "human": "user"}


def _role(value: Any, default: str) -> str:
    role = str(value or default)
    return _ROLES.get(role, role)


def redact(parsed: tuple[list[Message], list[Message]], redactor: Any) -> None:
    """Mask secrets in every message text and tool-call argument, in place."""
    for m in (*parsed[0], *parsed[1]):
        m.content = redactor(m.content)
        for call in m.tool_calls:
            call.arguments = redactor(call.arguments)


def last_text(messages: list[Message], role: str | None) -> str | None:
    for m in reversed(messages):
        if (role is None or m.role == role) and m.content:
            return m.content
    return None


def _json(value: Any, key: str, skipped: list[str]) -> Any:
    if isinstance(value, (str, bytes)):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            skipped.append(key)
            return None
    return value


def _args(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text_of(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()  # any AnyValue (bytes too)


def _genai_message(raw: Any) -> Message | None:
    """One GenAI ``{"role", "parts": [...]}`` message."""
    if not isinstance(raw, Mapping):
        return None
    texts, calls, call_id = [], [], None
    for part in raw.get("parts") or []:
        if not isinstance(part, Mapping):
            continue
        ptype = part.get("type")
        if ptype == "text":
            texts.append(_text_of(part.get("content")) or "")
        elif ptype == "tool_call":
            calls.append(ToolCall(part.get("id"), part.get("name"), _args(part.get("arguments"))))
        elif ptype == "tool_call_response":
            call_id = part.get("id")
            texts.append(_text_of(part.get("response") if "response" in part else part.get("result")) or "")
    return Message(_role(raw.get("role"), "user"), "\n".join(texts) if texts else None, calls, call_id)


def _genai(value: Any, key: str, skipped: list[str]) -> list[Message] | None:
    parsed = _json(value, key, skipped)
    if parsed is None:
        return None
    if not isinstance(parsed, list):
        skipped.append(key)
        return None
    return [m for m in (_genai_message(x) for x in parsed) if m is not None]


def _system_instructions(value: Any, skipped: list[str]) -> Message | None:
    if isinstance(value, str) and value.lstrip()[:1] not in ("[", "{", '"'):
        return Message("system", value)  # plain text, as some instrumentations record it
    parsed = _json(value, "gen_ai.system_instructions", skipped)
    if isinstance(parsed, list):
        texts = [_text_of(p.get("content")) or "" for p in parsed if isinstance(p, Mapping)]
        return Message("system", "\n".join(texts))
    if isinstance(parsed, str):
        return Message("system", parsed)
    return None


def _from_genai_attrs(attrs: Mapping[str, Any], skipped: list[str]) -> tuple[list[Message], list[Message]] | None:
    if "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs:
        return None
    inputs = _genai(attrs.get("gen_ai.input.messages"), "gen_ai.input.messages", skipped) or []
    if "gen_ai.system_instructions" in attrs:
        system = _system_instructions(attrs["gen_ai.system_instructions"], skipped)
        if system is not None:
            inputs.insert(0, system)
    outputs = _genai(attrs.get("gen_ai.output.messages"), "gen_ai.output.messages", skipped) or []
    return inputs, outputs


def _from_indexed(attrs: Mapping[str, Any]) -> tuple[list[Message], list[Message]] | None:
    """OpenInference and OpenLLMetry flatten messages into indexed attribute keys (``<prefix>.<n>.<field>``)."""
    groups: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, value in attrs.items():
        parts = key.split(".", 3)  # [head, name, index, field]: one split instead of a test per prefix
        if len(parts) == 4 and parts[3] and (parts[0], parts[1]) in _INDEXED:
            index = parts[2]
            if index.isdigit() and index.isascii():
                groups.setdefault((parts[0], parts[1], int(index)), {})[parts[3]] = value
    if not groups:
        return None
    inputs: list[Message] = []
    outputs: list[Message] = []
    for (head, name, _), fields in sorted(groups.items()):
        output, role = _INDEXED[head, name]
        (outputs if output else inputs).append(_indexed_message(fields, role))
    return inputs, outputs


_TOOL_CALL_KEY = {p: re.compile(rf"^{re.escape(p)}tool_calls\.(\d+)\.(?:tool_call\.)?(.+)$") for p in ("", "message.")}


def _indexed_message(f: Mapping[str, Any], default_role: str) -> Message:
    strip = "message." if any(k.startswith("message.") for k in f) else ""
    get = lambda k: f.get(strip + k)  # noqa: E731 - local shorthand
    content = get("content")
    if content is None:  # OpenInference multi-part contents
        parts = sorted(
            (int(k[len(strip) :].split(".")[1]), v)
            for k, v in f.items()
            if k.startswith(strip + "contents.") and k.endswith("message_content.text")
        )
        content = "\n".join(v for _, v in parts) if parts else None
    calls: dict[int, dict[str, Any]] = {}
    tool_call = _TOOL_CALL_KEY[strip]
    for k, v in f.items():
        m = tool_call.match(k) if "tool_calls." in k else None
        if m:
            calls.setdefault(int(m.group(1)), {})[m.group(2)] = v
    tool_calls = [
        ToolCall(
            c.get("id"),
            c.get("function.name") or c.get("name"),
            _args(c.get("function.arguments") or c.get("arguments")),
        )
        for _, c in sorted(calls.items())
    ]
    return Message(_role(get("role"), default_role), _text_of(content), tool_calls, get("tool_call_id"))


def _event_message(name: str, body: Any, skipped: list[str]) -> tuple[str, Message] | None:
    """A deprecated GenAI event (span event attributes or a log body) → ("input"|"output", message)."""
    if isinstance(body, (str, bytes)):
        body = _json(body, name, skipped)
    if not isinstance(body, Mapping):
        body = {}
    if name == "gen_ai.choice":
        msg = body.get("message")
        if not isinstance(msg, Mapping):  # Strands records the choice's content blocks as the message itself
            msg = {"content": msg} if isinstance(msg, str | list) else body
        return "output", _deprecated_message(msg, "assistant")
    role = _EVENT_ROLES.get(name)
    if role is None:
        return None
    return "input", _deprecated_message(body, role)


def _deprecated_message(body: Mapping[str, Any], role: str) -> Message:
    calls = []
    for c in body.get("tool_calls") or []:
        if isinstance(c, Mapping):
            fn = c.get("function") if isinstance(c.get("function"), Mapping) else {}
            calls.append(ToolCall(c.get("id"), fn.get("name"), _args(fn.get("arguments"))))
    content, call_id = body.get("content"), body.get("id")
    blocks = _converse_blocks(content)
    if blocks is not None:
        content, more, call_id = blocks[0], blocks[1], blocks[2] or call_id
        calls += more
    return Message(_role(body.get("role"), role), _text_of(content), calls, call_id)


# Bedrock Converse content blocks, one kind each: Strands records a message's content as their JSON text.
_BLOCK_KINDS = frozenset({"text", "toolUse", "toolResult", "image", "document", "video", "reasoningContent",
                          "cachePoint", "guardContent", "citationsContent"})  # fmt: skip


def _converse_blocks(value: Any) -> tuple[str | None, list[ToolCall], str | None] | None:
    """(text, tool calls, the tool call a result answers) of a list of Converse content blocks, as a list or its
    JSON text; None for anything else (a content that merely looks like JSON stays as it is)."""
    if isinstance(value, str):
        if not value.startswith("[{"):
            return None
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if not (isinstance(value, list) and value and all(isinstance(b, Mapping) and len(b) == 1 and
                                                       next(iter(b)) in _BLOCK_KINDS for b in value)):  # fmt: skip
        return None
    texts: list[str] = []
    calls: list[ToolCall] = []
    call_id = None
    for block in value:
        ((kind, body),) = block.items()
        if kind == "text":
            texts.append(_text_of(body) or "")
        elif kind == "toolUse" and isinstance(body, Mapping):
            calls.append(ToolCall(body.get("toolUseId"), body.get("name"), _args(body.get("input"))))
        elif kind == "toolResult" and isinstance(body, Mapping):
            call_id = body.get("toolUseId")
            for part in body.get("content") or []:
                if isinstance(part, Mapping) and ("text" in part or "json" in part):
                    texts.append(_text_of(part["text"]) if "text" in part else _args(part["json"]) or "")
    return ("\n".join(texts) if texts else None), calls, call_id


def _from_events(
    span: BridgeSpan, logs: Iterable[BridgeLog], skipped: list[str]
) -> tuple[list[Message], list[Message]] | None:
    found = None
    inputs: list[Message] = []
    outputs: list[Message] = []
    events = span.events  # most spans' events are not messages (exceptions, framework steps): those stay unread
    items = [(e.name, e.attributes, None) for e in events] if has_event(events, _MESSAGE_EVENTS) else []
    items += [(r.event_name, r.attributes, r.body) for r in logs]
    for name, attrs, body in items:
        if name not in _MESSAGE_EVENTS:
            continue
        if name == _DETAILS_EVENT:
            both = _from_genai_attrs(body if isinstance(body, Mapping) and body else attrs, skipped)
            if both is not None:
                inputs.extend(both[0])
                outputs.extend(both[1])
                found = True
            continue
        content = body if body is not None else (attrs.get("gen_ai.event.content") or attrs)
        got = _event_message(name, content, skipped)
        if got is not None:
            (inputs if got[0] == "input" else outputs).append(got[1])
            found = True
    return (inputs, outputs) if found else None


def content_attributes(span: BridgeSpan) -> dict[str, Any]:
    return pick(span.attributes, CONTENT_KEYS, CONTENT_PREFIXES)


def extract(
    span: BridgeSpan, attrs: Mapping[str, Any], logs: Iterable[BridgeLog], skipped: list[str]
) -> tuple[list[Message], list[Message]]:
    """Input and output messages of a span (``attrs``: its ``content_attributes``); malformed sources are listed
    in ``skipped``."""
    found = _from_genai_attrs(attrs, skipped)  # in precedence order, each read only if those before found nothing
    if not (found and (found[0] or found[1])):
        found = _from_indexed(attrs)
        if not (found and (found[0] or found[1])):
            found = _from_events(span, logs, skipped)
    if found and (found[0] or found[1]):
        return found
    inputs = [Message("user", v)] if isinstance(v := attrs.get("gen_ai.prompt"), str) else []
    outputs = [Message("assistant", v)] if isinstance(v := attrs.get("gen_ai.completion"), str) else []
    return inputs, outputs
