"""BridgeSpan → AgentSpan: agent semantics from every convention, one table (DESIGN decisions 2 and 14).

The tables live in ``semconv_tables`` (which key means what, in precedence order); this module reads them.

Token counts are normalised one way, the OTel rule: ``input_tokens`` includes cached input (cache reads and cache
writes), ``output_tokens`` includes reasoning. Whether a source reports the parts inside or outside is decided
by its own ``total_tokens`` where it states one (the reading whose sum equals the total wins); otherwise a
source is taken as exclusive when input < cache read + cache write, or output < reasoning, or when its key is
one whose producer reports it outside (``EXCLUSIVE_KEYS``). Wrong-typed values are listed in
``AgentSpan.skipped``.

The trace-level rule (one model call, one bill) is ``billing.bill_once``, run once a trace is complete.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from otel_bridge.agentspan import AgentSpan, Context, run_id
from otel_bridge.billing import MODEL_CALL_KINDS, bill_once
from otel_bridge.semconv_tables import (
    AGENT_EVIDENCE,
    CACHE_READ_KEYS,
    CACHE_WRITE_KEYS,
    EXCLUSIVE_KEYS,
    FRAMEWORK_SCOPES,
    FRAMEWORKS,
    GENAI_OPERATION_KIND,
    INPUT_TOKEN_KEYS,
    INVOKE_PREFIXES,
    KIND_KEYS,
    KIND_TABLES,
    LLM_EVIDENCE,
    MODEL_KEYS,
    MODEL_PROVIDERS,
    OPERATION_KEY,
    OUTPUT_TOKEN_KEYS,
    PROVIDER_ALIASES,
    PROVIDER_KEYS,
    REASONING_KEYS,
    RUN_ROOT_OPERATIONS,
    TEXT_FIELDS,
    TOKEN_FIELDS,
    TOOL_EVIDENCE,
    TOTAL_TOKEN_KEYS,
    TRACELOOP_PROPS,
)  # fmt: skip
from otel_bridge.spans import STATUS_ERROR, STATUS_OK, BridgeLog, BridgeSpan, ProtoAttributes, pick

__all__ = [
    "AgentSpan", "CACHE_READ_KEYS", "CACHE_WRITE_KEYS", "Context", "INPUT_TOKEN_KEYS", "KINDS", "MODEL_KEYS",
    "OUTPUT_TOKEN_KEYS", "PROVIDER_KEYS", "REASONING_KEYS", "RUN_ROOT_OPERATIONS", "TOTAL_TOKEN_KEYS", "bill_once",
    "inherit_context", "normalise_provider", "recognise", "recognise_trace", "run_id", "unknown_operations",
]  # fmt: skip

KINDS = ("agent", "llm", "tool", "chain", "retriever", "embedding", "other")

_ROUTES: dict[str, tuple[str, int, bool]] = {
    key: (name, rank, is_tokens)
    for table, is_tokens in ((TEXT_FIELDS, False), (TOKEN_FIELDS, True))
    for name, keys in table.items()
    for rank, key in enumerate(keys)
}
assert len(_ROUTES) == sum(len(k) for t in (TEXT_FIELDS, TOKEN_FIELDS) for k in t.values()), "a key routes to one field"
# Every attribute the recogniser reads: converted in one pass, the rest of a protobuf span stays undecoded.
RECOGNISED_KEYS = (
    frozenset(_ROUTES) | frozenset(KIND_KEYS) | frozenset(TOOL_EVIDENCE + AGENT_EVIDENCE) | {"tag.tags", "metadata"}
)
# ... picked in two parts: those under TRACELOOP_PROPS (session, user: routed, and metadata all) apart.
_PICKED_KEYS = frozenset(k for k in RECOGNISED_KEYS if not k.startswith(TRACELOOP_PROPS))

# Operation names seen that the table does not know, by name (bounded): /metrics shows them so they surface.
_UNKNOWN_CAP = 256
_unknown_operations: Counter[str] = Counter()


def unknown_operations() -> dict[str, int]:
    """How often each unknown ``gen_ai.operation.name`` was seen (names past the cap count as ``_other``)."""
    return dict(_unknown_operations)


def _count_unknown(op: str) -> None:
    if op not in _unknown_operations and len(_unknown_operations) >= _UNKNOWN_CAP:
        op = "_other"
    _unknown_operations[op] += 1


# ------------------------------------------------------------------------------------------------ readers


def _as_tokens(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():  # Vercel's ai.usage.cachedInputTokens, exporters that stringify
        return int(value)
    return None


def _route(
    attrs: Mapping[str, Any], props: Mapping[str, Any], skipped: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pass over the picked attributes (``props``: those under ``TRACELOOP_PROPS``): each field gets its
    highest-precedence valid value, and the key it came from (``sources``, for ``inspect --explain``). A provider
    attribute naming a framework (``FRAMEWORKS``) fills ``framework`` instead."""
    fields: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    routes, malformed = _ROUTES, []
    for key, value in (*attrs.items(), *props.items()) if props else attrs.items():
        route = routes.get(key)
        if route is None:
            continue
        name, rank, is_tokens = route
        if is_tokens:
            if type(value) is not int or value < 0:  # noqa: E721 - the common case, exactly int (bool is not)
                value = _as_tokens(value)
                if value is None:
                    malformed.append(key)
                    continue
        elif not isinstance(value, str) or not value:
            continue
        elif name == "provider":
            framework = _FRAMEWORK_OF.get(value)
            if framework is None:
                framework = _framework_of(value)
            if framework:
                name, value = "framework", framework
        if name in fields and rank >= routes[keys[name]][1]:
            continue  # a key of higher precedence already decided (rare: two conventions on one span)
        fields[name] = value
        keys[name] = key
    if malformed:
        skipped += sorted(malformed)  # by key: protobuf attributes come in no fixed order
    return fields, keys


def _framework_of(provider: str) -> str:
    """The framework a provider attribute's value names ("" when it names a provider), remembered per spelling."""
    framework = FRAMEWORKS.get(provider.lower(), "")
    if len(_FRAMEWORK_OF) < 1024:
        _FRAMEWORK_OF[provider] = framework
    return framework


_FRAMEWORK_OF: dict[str, str] = {}


def source(sources: Mapping[str, Any], name: str) -> str | None:
    """The attribute (or derivation) that decided field ``name`` (``AgentSpan.sources``; an older form kept
    (rank, value, key) tuples, read here too)."""
    v = sources.get(name)
    return v[2] if isinstance(v, tuple) else v


def normalise_provider(value: str | None) -> str | None:
    """A provider spelling → the GenAI registry value; ``openai.chat`` (Vercel: provider.api) → ``openai``."""
    if not value:
        return None
    low = value.strip().lower()
    known = _PROVIDER_CACHE.get(low)
    if known is None:
        head = low.split(".", 1)[0]
        known = PROVIDER_ALIASES.get(low) or (PROVIDER_ALIASES.get(head) if head != low else None) or low
        if len(_PROVIDER_CACHE) < 1024:
            _PROVIDER_CACHE[low] = known
    return known


_PROVIDER_CACHE: dict[str, str] = {}


def provider_from_model(model: str | None) -> str | None:
    """The provider a model name implies (``MODEL_PROVIDERS``), for spans whose attributes name none."""
    if not model:
        return None
    low = model.lower()
    return next((provider for prefix, provider in MODEL_PROVIDERS if low.startswith(prefix)), None)


def framework_of_scope(scope: str) -> str | None:
    framework = _SCOPE_CACHE.get(scope, "")
    if framework == "":
        framework = next(
            (f for prefix, f in FRAMEWORK_SCOPES if scope == prefix or scope.startswith(prefix + ".")), None
        )
        if len(_SCOPE_CACHE) < 1024:
            _SCOPE_CACHE[scope] = framework
    return framework


_SCOPE_CACHE: dict[str, str | None] = {}


def _kind(attrs: Mapping[str, Any]) -> tuple[str, str | None, str]:
    """(kind, operation, the attribute that decided). Known operation names first, then the other conventions'
    kind attributes; an unknown operation name is never an LLM call (DESIGN decision 14)."""
    op = attrs.get(OPERATION_KEY)
    if not isinstance(op, str):
        op = None
    elif op in GENAI_OPERATION_KIND:
        return GENAI_OPERATION_KIND[op], op, OPERATION_KEY
    else:
        _count_unknown(op)
    for key, table in KIND_TABLES:
        value = attrs.get(key)
        if isinstance(value, str):
            kind = table.get(value) or table.get(value.upper())
            if kind is not None:
                return kind, (value.lower() if key == "openinference.span.kind" else value), key
    if op is not None:  # unknown: a tool or an agent invocation by what it names, else a step, never an LLM call
        for key in TOOL_EVIDENCE:
            if key in attrs:
                return "tool", op, key
        if op.startswith(INVOKE_PREFIXES):
            for key in AGENT_EVIDENCE:
                if key in attrs:
                    return "agent", op, key
        return "chain", op, OPERATION_KEY
    for evidence, kind in _EVIDENCE:
        for key in evidence:
            if key in attrs:
                return kind, None, key
    return "other", None, ""


# No operation name (pydantic-ai before 2026-04: ``agent run``, ``running tool``; old ADK ``call_llm``; Vercel's
# ``do*`` spans): (evidence keys, kind) in order.
_EVIDENCE = ((TOOL_EVIDENCE, "tool"), (AGENT_EVIDENCE, "agent"), (LLM_EVIDENCE, "llm"))


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


def _metadata(attrs: Mapping[str, Any], props: Mapping[str, Any], skipped: list[str]) -> dict[str, Any]:
    """``metadata`` (a JSON object) plus OpenLLMetry's association properties (``props``, prefix stripped)."""
    meta: dict[str, Any] = {}
    raw = attrs.get("metadata")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            skipped.append("metadata")
            raw = None
    if isinstance(raw, dict):
        meta.update(raw)
    elif raw is not None:
        skipped.append("metadata")
    cut = len(TRACELOOP_PROPS)
    for key, value in sorted(props.items()) if len(props) > 1 else props.items():  # by key, as ``skipped``
        meta[key[cut:]] = value
    return meta


def _tokens_inclusive(a: AgentSpan, keys: Mapping[str, Any]) -> str | None:
    """Make input include cache reads/writes and output include reasoning; returns how it was decided.

    A stated total decides: of the readings (as reported, cache added, reasoning added, both), the first whose
    input + output equals the total wins. Without one (or when none matches), a part larger than its whole, or a
    key whose producer reports it outside (``EXCLUSIVE_KEYS``), means exclusive.
    """
    read, write, reasoning = a.cached_input_tokens or 0, a.cache_write_tokens or 0, a.reasoning_tokens or 0
    if a.input_tokens is None and a.output_tokens is None or not (read or write or reasoning):
        return None
    inp, out = a.input_tokens or 0, a.output_tokens or 0
    if a.total_tokens is not None:
        for add_in, add_out, rule in (
            (0, 0, "total: inclusive"),
            (read + write, 0, "total: input exclusive of cache"),
            (0, reasoning, "total: output exclusive of reasoning"),
            (read + write, reasoning, "total: both exclusive"),
            (write, 0, "total: input exclusive of cache writes"),
            (read, 0, "total: input exclusive of cache reads"),
        ):
            if inp + add_in + out + add_out == a.total_tokens:
                if a.input_tokens is not None:
                    a.input_tokens += add_in
                if a.output_tokens is not None:
                    a.output_tokens += add_out
                return rule
    rules = []
    if a.input_tokens is not None and (read or write):
        by_key = (
            source(keys, "cached_input_tokens") in EXCLUSIVE_KEYS
            or source(keys, "cache_write_tokens") in EXCLUSIVE_KEYS
        )
        if inp < read + write or by_key:
            a.input_tokens += read + write
            rules.append("input exclusive of cache (" + ("by key" if by_key else "input < cache") + ")")
    if a.output_tokens is not None and reasoning:
        by_key = source(keys, "reasoning_tokens") in EXCLUSIVE_KEYS
        if out < reasoning or by_key:
            a.output_tokens += reasoning
            rules.append("output exclusive of reasoning (" + ("by key" if by_key else "output < reasoning") + ")")
    return "; ".join(rules) or "inclusive"


def _no_answer(a: AgentSpan, get: Any) -> bool:
    return (
        get("response_model") is None and get("openinference_model") is None and a.input_tokens is None
        and a.output_tokens is None and a.total_tokens is None
    )  # fmt: skip


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
    """A failed span's (failed, error type, message); ``recognise`` answers for the others."""
    message = span.status_message or None
    if span.status_code != STATUS_ERROR and not error_type:
        return False, None, message
    # An exception event alone is not a failure: record_exception is also used for handled exceptions.
    for event in span.events:
        if event.name == "exception":
            error_type = error_type or event.attributes.get("exception.type")
            message = message or event.attributes.get("exception.message")
    if error_type:  # some instrumentations record repr(type): "<class 'openai.InternalServerError'>"
        error_type = str(error_type)
        m = _CLASS_REPR.match(error_type)
        error_type = m.group(1) if m else error_type
    return True, error_type or None, message


def recognise(span: BridgeSpan) -> AgentSpan:
    """Read one span's agent semantics. Never raises on attribute content."""
    props: dict[str, Any] = {}
    attributes = span.attributes
    if type(attributes) is ProtoAttributes:  # noqa: E721 - the protobuf hot path, one call less
        attrs = attributes.pick(_PICKED_KEYS, TRACELOOP_PROPS, props)
    else:
        attrs = pick(attributes, _PICKED_KEYS, TRACELOOP_PROPS, props)
    skipped: list[str] = []
    f, keys = _route(attrs, props, skipped)
    kind, operation, keys["kind"] = _kind(attrs)
    get = f.get
    entity = get("entity")
    tool_name, tool_call_id, tool_type = get("tool_name"), get("tool_call_id"), None
    if kind == "tool" and keys["kind"] != OPERATION_KEY and not (tool_name or entity or tool_call_id):
        # A tool is counted by its name: a TOOL span naming none (OpenInference's Agents-SDK handoffs) is a step.
        kind, keys["kind"] = "chain", keys["kind"] + " (names no tool: a step)"
    error_type = get("error_type")
    if span.status_code == STATUS_ERROR or error_type:
        failed, error_type, error_message = _error(span, error_type)
    else:
        failed, error_message = False, span.status_message or None
    request_model = get("request_model")
    model = get("response_model") or request_model or get("openinference_model")
    if model is None and kind in MODEL_CALL_KINDS:  # rare: a failed OpenInference call
        model = request_model = _invocation_model(span)
    provider = normalise_provider(get("provider"))
    if provider is None and model is not None and kind in MODEL_CALL_KINDS:
        provider = provider_from_model(model)
        if provider is not None:
            keys["provider"] = "(model name)"
    metadata = _metadata(attrs, props, skipped) if props or "metadata" in attrs else {}
    tags = _tags(attrs, skipped) if "tag.tags" in attrs else []
    framework = get("framework")
    if framework is None:  # the instrumentation scope may name it
        scope = span.scope_name
        framework = _SCOPE_CACHE.get(scope, "")
        if framework == "":
            framework = framework_of_scope(scope)
        if framework is not None:
            keys["framework"] = f"(scope {scope})"
    agent_name, workflow_name, user_id = get("agent_name"), get("workflow_name"), get("user_id")
    if kind == "tool":
        tool_name, tool_type = tool_name or entity or span.name, get("tool_type")
    else:
        tool_name = tool_call_id = None
        if kind == "agent" and agent_name is None:
            agent_name = entity or get("graph_node")
        elif kind == "chain" and workflow_name is None and operation in RUN_ROOT_OPERATIONS:
            workflow_name = entity or agent_name or span.name
    email = get("user_email") or metadata.get("user_email")
    if email is None and user_id and "@" in user_id:
        email = user_id
    # Positional, in AgentSpan's field order: binding thirty keywords costs more than the rest of this function.
    a = AgentSpan(
        span, kind, operation, model, request_model, provider,
        get("input_tokens"), get("cached_input_tokens"), get("cache_write_tokens"),
        get("output_tokens"), get("reasoning_tokens"), get("total_tokens"),
        get("agent_id"), agent_name, workflow_name, tool_name, tool_call_id, tool_type,
        get("conversation_id"), get("session_id"), user_id, email if isinstance(email, str) else None,
        failed, error_type, error_message, tags, metadata, skipped, framework, keys,
    )  # fmt: skip
    if a.cached_input_tokens or a.cache_write_tokens or a.reasoning_tokens:
        keys["tokens"] = _tokens_inclusive(a, keys)
    if (
        kind == "llm"
        and span.status_code == STATUS_OK
        and keys["kind"] == "openinference.span.kind"
        and _no_answer(a, get)
    ):
        # OpenInference records the answering model (llm.model_name) for every completion; a span marked OK with
        # neither it nor usage got no completion: a side request such as OpenAI's input-token count (CrewAI asks
        # before every call), not a model call.
        a.kind, keys["kind"] = "chain", keys["kind"] + " (OK, no answering model, no usage: not a model call)"
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
    bill_once(agents)
    return agents


def inherit_context(agents: Iterable[AgentSpan]) -> None:
    """Each span takes what it lacks (agent, conversation, session, user) from its nearest agent/workflow ancestor.

    Works within the spans given; the pipeline calls it once a trace is complete.
    """
    by_id = {(a.trace_id, a.span_id): a for a in agents}
    handed_down: dict[tuple[str, str], Context | None] = {}  # span → the context its children inherit
    for a in by_id.values():
        if a.parent_span_id and (a.trace_id, a.parent_span_id) in by_id:
            a.inherit(_handed_down((a.trace_id, a.parent_span_id), by_id, handed_down))


def _handed_down(
    key: tuple[str, str],
    by_id: dict[tuple[str, str], AgentSpan],
    handed_down: dict[tuple[str, str], Context | None],
    depth: int = 0,
) -> Context | None:
    """The context the span ``key`` hands its children. A module function, not a closure: a nested function that
    calls itself is a reference cycle holding every span of the trace until the garbage collector finds it."""
    if key in handed_down:
        return handed_down[key]
    a = by_id[key]
    parent_key = (a.trace_id, a.parent_span_id) if a.parent_span_id else None
    above = _handed_down(parent_key, by_id, handed_down, depth + 1) if parent_key in by_id and depth < 512 else None
    if a.kind in ("agent", "chain"):
        ctx = a.context()
        if above is not None:
            own_agent = ctx.agent_id is not None or ctx.agent_name is not None
            if a.kind != "agent" and (above.agent_id is not None or above.agent_name is not None):
                ctx.agent_id, ctx.agent_name, own_agent = above.agent_id, above.agent_name, True  # agents name agents
            for name in Context.__slots__:
                if own_agent and name in ("agent_id", "agent_name"):
                    continue  # an agent's identity is a pair: never half its own, half its parent's
                if getattr(ctx, name) is None:
                    setattr(ctx, name, getattr(above, name))
        above = ctx
    handed_down[key] = above
    return above
