"""BridgeSpan → AgentSpan: agent semantics from the three conventions, one table (DESIGN decision 2).

Precedence wherever two conventions name the same thing: OTel GenAI current > GenAI deprecated > OpenInference >
OpenLLMetry. Sources:
- GenAI: https://opentelemetry.io/docs/specs/semconv/gen-ai/ (gen-ai-spans, gen-ai-agent-spans, gen-ai-events)
- OpenInference: https://github.com/Arize-ai/openinference/blob/main/spec/semantic_conventions.md
- OpenLLMetry: opentelemetry-semantic-conventions-ai (``SpanAttributes``, ``TraceloopSpanKindValues``)

Token counts are normalised one way, the OTel rule: ``input_tokens`` includes cached input (cache reads and cache
writes), ``output_tokens`` includes reasoning. A source that reports them exclusive (Anthropic's API does; so do
instrumentations that copy its usage block) is recognised by input < cache read + cache write, or output <
reasoning, and the parts are added. Wrong-typed values are skipped and listed in ``AgentSpan.skipped``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from otel_bridge.agentspan import AgentSpan, Context, run_id
from otel_bridge.spans import STATUS_ERROR, BridgeLog, BridgeSpan, pick

__all__ = ["AgentSpan", "Context", "KINDS", "inherit_context", "normalise_provider", "recognise", "recognise_trace", "run_id"]

KINDS = ("agent", "llm", "tool", "chain", "retriever", "embedding", "other")

_GENAI_OPERATION_KIND = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "embeddings": "embedding",
    "retrieval": "retriever",
    "create_agent": "agent",
    "invoke_agent": "agent",
    "invoke_workflow": "chain",
    "execute_tool": "tool",
}
_OPENINFERENCE_KIND = {
    "LLM": "llm",
    "EMBEDDING": "embedding",
    "CHAIN": "chain",
    "TOOL": "tool",
    "AGENT": "agent",
    "RETRIEVER": "retriever",
    "RERANKER": "retriever",
}
_TRACELOOP_KIND = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
_LLM_REQUEST_TYPE = {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "retriever"}

# Provider spellings seen across conventions → the GenAI registry's `gen_ai.provider.name` values.
_PROVIDER_ALIASES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "anthropic": "anthropic",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "google": "gcp.gemini",
    "gemini": "gcp.gemini",
    "vertexai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}

# Each field: attribute keys in precedence order.
# model = response model over request model (GenAI), then OpenInference's names (which hold the response model).
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "embedding.model_name")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.reasoning_tokens",
)
TOTAL_TOKEN_KEYS = ("llm.usage.total_tokens", "llm.token_count.total", "gen_ai.usage.total_tokens")
CONVERSATION_KEYS = ("gen_ai.conversation.id", "traceloop.association.properties.conversation_id")
SESSION_KEYS = ("session.id", "traceloop.association.properties.session_id", "gen_ai.session.id")
USER_KEYS = ("user.id", "enduser.id", "traceloop.association.properties.user_id")
EMAIL_KEYS = ("user.email", "enduser.email", "traceloop.association.properties.user_email")
_TRACELOOP_PROPS = "traceloop.association.properties."
# AgentSpan field ← attribute keys in precedence order. Text fields take non-empty strings, token fields
# non-negative integers; anything else is skipped (and token fields list it in ``AgentSpan.skipped``).
TEXT_FIELDS = {
    "response_model": ("gen_ai.response.model",),
    "request_model": ("gen_ai.request.model",),
    "openinference_model": ("llm.model_name", "embedding.model_name"),
    "provider": PROVIDER_KEYS,
    "agent_id": ("gen_ai.agent.id",),
    "agent_name": ("gen_ai.agent.name", "agent.name"),
    "workflow_name": ("gen_ai.workflow.name", "traceloop.workflow.name"),
    "tool_name": ("gen_ai.tool.name", "tool.name"),
    "tool_call_id": ("gen_ai.tool.call.id", "tool_call.id", "tool.id"),
    "tool_type": ("gen_ai.tool.type",),
    "conversation_id": CONVERSATION_KEYS,
    "session_id": SESSION_KEYS,
    "user_id": USER_KEYS,
    "user_email": EMAIL_KEYS,
    "entity": ("traceloop.entity.name",),
    "error_type": ("error.type",),
}
TOKEN_FIELDS = {
    "input_tokens": INPUT_TOKEN_KEYS,
    "cached_input_tokens": CACHE_READ_KEYS,
    "cache_write_tokens": CACHE_WRITE_KEYS,
    "output_tokens": OUTPUT_TOKEN_KEYS,
    "reasoning_tokens": REASONING_KEYS,
    "total_tokens": TOTAL_TOKEN_KEYS,
}
_KIND_KEYS = ("gen_ai.operation.name", "openinference.span.kind", "traceloop.span.kind", "llm.request.type", "gen_ai.system")
_ROUTES: dict[str, tuple[str, int, bool]] = {
    key: (name, rank, is_tokens)
    for table, is_tokens in ((TEXT_FIELDS, False), (TOKEN_FIELDS, True))
    for name, keys in table.items()
    for rank, key in enumerate(keys)
}
assert len(_ROUTES) == sum(len(k) for t in (TEXT_FIELDS, TOKEN_FIELDS) for k in t.values()), "a key routes to one field"
# Every attribute the recogniser reads: converted in one pass, the rest of a protobuf span stays undecoded.
RECOGNISED_KEYS = frozenset(_ROUTES) | frozenset(_KIND_KEYS) | {"tag.tags", "metadata"}


# ------------------------------------------------------------------------------------------------ readers


def _as_tokens(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _route(attrs: Mapping[str, Any], skipped: list[str]) -> dict[str, Any]:
    """One pass over the picked attributes: each field gets its highest-precedence valid value."""
    best: dict[str, tuple[int, Any]] = {}
    for key, value in attrs.items():
        route = _ROUTES.get(key)
        if route is None:
            continue
        name, rank, is_tokens = route
        if is_tokens:
            value = _as_tokens(value)
            if value is None:
                skipped.append(key)
                continue
        elif not isinstance(value, str) or not value:
            continue
        current = best.get(name)
        if current is None or rank < current[0]:
            best[name] = (rank, value)
    return {name: value for name, (_, value) in best.items()}


def normalise_provider(value: str | None) -> str | None:
    if not value:
        return None
    low = value.strip().lower()
    return _PROVIDER_ALIASES.get(low, low)


def _kind(attrs: Mapping[str, Any]) -> tuple[str, str | None]:
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op in _GENAI_OPERATION_KIND:
        return _GENAI_OPERATION_KIND[op], op
    oi = attrs.get("openinference.span.kind")
    if isinstance(oi, str) and oi.upper() in _OPENINFERENCE_KIND:
        return _OPENINFERENCE_KIND[oi.upper()], oi.lower()
    tl = attrs.get("traceloop.span.kind")
    if isinstance(tl, str) and tl in _TRACELOOP_KIND:
        return _TRACELOOP_KIND[tl], tl
    req = attrs.get("llm.request.type")
    if isinstance(req, str) and req in _LLM_REQUEST_TYPE:
        return _LLM_REQUEST_TYPE[req], req
    if "gen_ai.system" in attrs or "gen_ai.provider.name" in attrs:
        return "llm", op if isinstance(op, str) else None
    return "other", op if isinstance(op, str) else None


def _tags(attrs: Mapping[str, Any], skipped: list[str]) -> list[str]:
    value = attrs.get("tag.tags")
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            value = [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    skipped.append("tag.tags")
    return []


def _metadata(attrs: Mapping[str, Any], skipped: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    raw = attrs.get("metadata")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            skipped.append("metadata")
            raw = None
    if isinstance(raw, Mapping):
        meta.update(raw)
    elif raw is not None:
        skipped.append("metadata")
    for key in attrs:
        if key.startswith(_TRACELOOP_PROPS):
            meta[key[len(_TRACELOOP_PROPS) :]] = attrs[key]
    return meta


def _exclusive_to_inclusive(a: AgentSpan) -> None:
    cached = (a.cached_input_tokens or 0) + (a.cache_write_tokens or 0)
    if a.input_tokens is not None and cached and a.input_tokens < cached:
        a.input_tokens += cached
    if a.output_tokens is not None and a.reasoning_tokens and a.output_tokens < a.reasoning_tokens:
        a.output_tokens += a.reasoning_tokens


def _invocation_model(span: BridgeSpan) -> str | None:
    """OpenInference keeps the requested model only inside ``llm.invocation_parameters`` (read when needed)."""
    raw = span.attributes.get("llm.invocation_parameters") if "llm.invocation_parameters" in span.attributes else None
    if not isinstance(raw, str):
        return None
    try:
        model = orjson.loads(raw).get("model")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return model if isinstance(model, str) and model else None


_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")


def _error(span: BridgeSpan, error_type: str | None) -> tuple[bool, str | None, str | None]:
    message = span.status_message or None
    failed = span.status_code == STATUS_ERROR or bool(error_type)
    # An exception event alone is not a failure: record_exception is also used for handled exceptions.
    for event in span.events if failed else ():
        if event.name == "exception":
            error_type = error_type or event.attributes.get("exception.type")
            message = message or event.attributes.get("exception.message")
    if error_type:  # some instrumentations record repr(type): "<class 'openai.InternalServerError'>"
        error_type = str(error_type)
        m = _CLASS_REPR.match(error_type)
        error_type = m.group(1) if m else error_type
    return failed, error_type or None, message


def recognise(span: BridgeSpan) -> AgentSpan:
    """Read one span's agent semantics. Never raises on attribute content."""
    attrs = pick(span.attributes, RECOGNISED_KEYS, _TRACELOOP_PROPS)
    skipped: list[str] = []
    f = _route(attrs, skipped)
    kind, operation = _kind(attrs)
    failed, error_type, error_message = _error(span, f.get("error_type"))
    get = f.get
    request_model = get("request_model")
    model = get("response_model") or request_model or get("openinference_model")
    if model is None and kind in ("llm", "embedding"):  # rare: a failed OpenInference call
        model = request_model = _invocation_model(span)
    a = AgentSpan(
        span,
        kind,
        operation,
        model,
        request_model,
        normalise_provider(get("provider")),
        get("input_tokens"),
        get("cached_input_tokens"),
        get("cache_write_tokens"),
        get("output_tokens"),
        get("reasoning_tokens"),
        get("total_tokens"),
        get("agent_id"),
        get("agent_name") or (get("entity") if kind == "agent" else None),
        get("workflow_name"),
        error=failed,
        error_type=error_type,
        error_message=error_message,
        skipped=skipped,
        conversation_id=get("conversation_id"),
        session_id=get("session_id"),
        user_id=get("user_id"),
    )
    _exclusive_to_inclusive(a)
    if kind == "tool":
        a.tool_name = get("tool_name") or get("entity") or span.name
        a.tool_call_id, a.tool_type = get("tool_call_id"), get("tool_type")
    elif kind == "chain" and a.workflow_name is None and operation in ("workflow", "invoke_workflow"):
        a.workflow_name = get("entity") or span.name
    if "tag.tags" in attrs:
        a.tags = _tags(attrs, skipped)
    a.metadata = _metadata(attrs, skipped)
    email = get("user_email") or a.metadata.get("user_email")
    if email is None and a.user_id and "@" in a.user_id:
        email = a.user_id
    a.user_email = email if isinstance(email, str) else None
    return a


def recognise_trace(spans: Iterable[BridgeSpan], logs: Iterable[BridgeLog] = ()) -> list[AgentSpan]:
    """Recognise a batch, attach correlated GenAI log events, and hand context down parent → child."""
    agents = [recognise(s) for s in spans]
    by_id = {(a.trace_id, a.span_id): a for a in agents}
    for record in logs:
        target = by_id.get((record.trace_id, record.span_id))
        if target is not None:
            target.attach_logs([record])
    inherit_context(agents)
    return agents


def inherit_context(agents: Iterable[AgentSpan]) -> None:
    """Each span takes what it lacks (agent, conversation, session, user) from its nearest agent/workflow ancestor.

    Works within the spans given; the pipeline calls it once a trace is complete.
    """
    by_id = {(a.trace_id, a.span_id): a for a in agents}
    handed_down: dict[tuple[str, str], Context | None] = {}  # span → the context its children inherit

    def down(key: tuple[str, str], depth: int = 0) -> Context | None:
        if key in handed_down:
            return handed_down[key]
        a = by_id[key]
        parent_key = (a.trace_id, a.parent_span_id) if a.parent_span_id else None
        above = down(parent_key, depth + 1) if parent_key in by_id and depth < 512 else None
        if a.kind in ("agent", "chain"):
            ctx = a.context()
            if above is not None:
                own_agent = ctx.agent_id is not None or ctx.agent_name is not None
                for name in Context.__slots__:
                    if own_agent and name in ("agent_id", "agent_name"):
                        continue  # an agent's identity is a pair: never half its own, half its parent's
                    if getattr(ctx, name) is None:
                        setattr(ctx, name, getattr(above, name))
            above = ctx
        handed_down[key] = above
        return above

    for key, a in by_id.items():
        if a.parent_span_id and (a.trace_id, a.parent_span_id) in by_id:
            a.inherit(down((a.trace_id, a.parent_span_id)))
