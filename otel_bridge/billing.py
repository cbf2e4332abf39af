"""One model call, one bill (DESIGN decision 14): the trace-level rule, run once a trace is complete.

A framework often wraps the provider instrumentation's span for a model call in an LLM span of its own (Google
ADK's ``call_llm`` around google-genai's ``generate_content``, Strands' ``chat`` around botocore's). Both look like
calls; counting both bills the run twice. Run assembly (``processors/runs.assemble``) and ``inspect`` call
``bill_once`` on each complete trace before anything counts usage.
"""

from __future__ import annotations

from collections.abc import Iterable

from otel_bridge.agentspan import AgentSpan

MODEL_CALL_KINDS = ("llm", "embedding")


def bill_once(agents: Iterable[AgentSpan]) -> int:
    """One model call, one bill (DESIGN decision 14): a model-call span with a model-call descendant of the same
    kind is a framework step wrapping the provider instrumentation's span for that call.

    The step becomes ``chain`` (its operation kept, ``billed_in`` naming the nearest billed descendant); the
    innermost span is billed and takes from the wrapper only what it lacks (model, provider, tokens). Runs once a
    trace is complete; returns the number of wrappers found. Cost: one parent walk per model-call span.
    """
    calls = [a for a in agents if a.kind in MODEL_CALL_KINDS]
    if len(calls) < 2:
        return 0
    by_id = {a.span_id: a for a in calls}
    parents = {a.span_id: a.parent_span_id for a in agents}
    inner_of: dict[str, AgentSpan] = {}  # wrapper span id → its nearest model-call descendant
    for a in calls:
        seen, pid = 0, parents.get(a.span_id)
        while pid is not None and seen < 256:
            outer = by_id.get(pid)
            if outer is not None and outer.kind == a.kind and outer.trace_id == a.trace_id:
                inner_of.setdefault(pid, a)
                break  # the outer's own ancestors are found from the outer
            pid, seen = parents.get(pid), seen + 1
    for wrapper_id, inner in inner_of.items():
        _take_gaps(inner, by_id[wrapper_id])
    for wrapper_id, inner in inner_of.items():
        wrapper = by_id[wrapper_id]
        wrapper.kind, wrapper.billed_in = "chain", inner.span_id
    return len(inner_of)


_GAP_FIELDS = ("model", "request_model", "provider")
# (whole, its parts): input includes cache reads and writes, output includes reasoning (the OTel rule).
_WHOLES = (("input_tokens", ("cached_input_tokens", "cache_write_tokens")), ("output_tokens", ("reasoning_tokens",)))


def _take_gaps(inner: AgentSpan, outer: AgentSpan) -> None:
    """The billed span keeps its own figures; what it lacks comes from the wrapper (the same call).

    A part the inner span lacks (reasoning, cache) is taken from the wrapper; when the inner whole plus that part
    equals the wrapper's normalised whole, the inner span reported its whole without the part, so it is added.
    """
    via = f"(wrapping span {outer.span_id})"
    for name in _GAP_FIELDS:
        if getattr(inner, name) is None and getattr(outer, name) is not None:
            setattr(inner, name, getattr(outer, name))
            inner.sources[name] = via
    for whole, parts in _WHOLES:
        mine, theirs = getattr(inner, whole), getattr(outer, whole)
        taken = 0
        for part in parts:
            if getattr(inner, part) is None and getattr(outer, part) is not None:
                setattr(inner, part, getattr(outer, part))
                taken += getattr(outer, part)
                inner.sources[part] = via
        if (mine is None and theirs is not None) or (taken and theirs is not None and mine + taken == theirs):
            setattr(inner, whole, theirs)
            inner.sources[whole] = f"{via}: {whole} without its parts" if mine is not None else via
    if outer.provider is None or outer.sources.get("provider") == "(model name)":
        outer.provider = inner.provider
    if inner.framework is None and outer.framework is not None:
        inner.framework, inner.sources["framework"] = outer.framework, via
