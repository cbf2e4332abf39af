"""``otel-bridge inspect FILE…``: what otel-bridge recognises in OTLP files, as a table or JSON lines.

``--explain`` says per span which attribute decided its kind, model, provider and tokens, which span was billed
for each model call, and which GenAI-looking attributes were ignored: what an unknown framework is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from otel_bridge.agentspan import AgentSpan
from otel_bridge.messages import CONTENT_KEYS, CONTENT_PREFIXES
from otel_bridge.semconv import MODEL_CALL_KINDS, RECOGNISED_KEYS, recognise_trace, source
from otel_bridge.semconv_tables import GENAI_PREFIXES, TRACELOOP_PROPS
from otel_bridge.spans import (
    BridgeLog,
    BridgeSpan,
    Decoded,
    DecodeError,
    logs_from_otlp_json,
    logs_from_otlp_proto,
    spans_from_otlp_json,
    spans_from_otlp_proto,
)


class InspectError(Exception):
    """A file that cannot be read as OTLP; the message names the file."""


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


def read_otlp_file(path: Path) -> tuple[list[BridgeSpan], list[BridgeLog]]:
    """Read a traces or logs file, protobuf or JSON (told apart by content, not by name)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InspectError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    is_logs = ".logs." in path.name
    try:
        if _looks_like_json(data):
            decoded: Decoded = (logs_from_otlp_json if is_logs else spans_from_otlp_json)(data)
        else:
            decoded = (logs_from_otlp_proto if is_logs else spans_from_otlp_proto)(data)
    except DecodeError as exc:
        raise InspectError(f"{path}: {exc}") from exc
    if decoded.rejected:
        raise InspectError(f"{path}: {decoded.rejected} malformed item(s): {decoded.error}")
    if not decoded.items and not is_logs and data.strip() not in (b"", b"{}"):
        raise InspectError(f"{path}: no spans found (is it an OTLP ExportTraceServiceRequest?)")
    return (decoded.items, []) if not is_logs else ([], decoded.items)


def agent_spans(paths: Iterable[Path]) -> list[AgentSpan]:
    spans: list[BridgeSpan] = []
    logs: list[BridgeLog] = []
    for path in paths:
        s, records = read_otlp_file(path)
        spans += s
        logs += records
    return recognise_trace(spans, logs)


def _fmt(v: object) -> str:
    return "" if v is None else str(v)


def print_table(spans: list[AgentSpan]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(spans)} spans", header_style="bold")
    for col in (
        "trace",
        "kind",
        "name",
        "agent",
        "model",
        "provider",
        "in",
        "cached",
        "out",
        "reasoning",
        "ms",
        "status",
    ):
        table.add_column(col, justify="right" if col in ("in", "cached", "out", "reasoning", "ms") else "left")
    for a in sorted(spans, key=lambda a: (a.trace_id, a.span.start_ns)):
        table.add_row(
            a.trace_id[:8],
            a.kind,
            a.name,
            _fmt(a.agent),
            _fmt(a.model),
            _fmt(a.provider),
            _fmt(a.input_tokens),
            _fmt(a.cached_input_tokens),
            _fmt(a.output_tokens),
            _fmt(a.reasoning_tokens),
            f"{a.latency_ms:.1f}",
            "[red]error[/red]" if a.error else "ok",
        )
    import sys

    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped: don't squeeze to 80 columns


def print_json_lines(spans: list[AgentSpan]) -> None:
    import sys

    out = sys.stdout.buffer
    for a in sorted(spans, key=lambda a: (a.trace_id, a.span.start_ns)):
        out.write(orjson.dumps(a.as_dict()) + b"\n")
    out.flush()


# ------------------------------------------------------------------------------------------------ --explain

_TOKEN_NAMES = (
    ("input_tokens", "in"), ("cached_input_tokens", "cache read"), ("cache_write_tokens", "cache write"),
    ("output_tokens", "out"), ("reasoning_tokens", "reasoning"), ("total_tokens", "total"),
)  # fmt: skip


def _attr(a: AgentSpan, key: str | None) -> str:
    """``key=value`` as the span carried it (a derived source is shown as is)."""
    if not key or key.startswith("("):
        return key or "(none)"
    value = a.span.attributes.get(key)
    return f"{key}={value!r}"


def _billing(a: AgentSpan, billed_for: dict[str, str]) -> str:
    if a.billed_in:
        return f"no: a step wrapping the model call billed in span {a.billed_in}"
    if a.kind in MODEL_CALL_KINDS:
        wrapper = billed_for.get(a.span_id)
        return "yes" + (f" (the call wrapped by span {wrapper})" if wrapper else "")
    if a.input_tokens is not None or a.output_tokens is not None:
        return f"no: usage on a {a.kind} span repeats its model calls'"
    return "no: not a model call"


def ignored_attributes(a: AgentSpan) -> list[str]:
    """GenAI-looking attribute keys the recogniser does not read (what an unknown producer may be missing)."""
    read = RECOGNISED_KEYS | CONTENT_KEYS
    return sorted(
        k for k in a.span.attributes
        if k.startswith(GENAI_PREFIXES) and k not in read and not k.startswith(CONTENT_PREFIXES + (TRACELOOP_PROPS,))
    )  # fmt: skip


def explain(a: AgentSpan, billed_for: dict[str, str]) -> dict[str, object]:
    """Which attribute decided each field of one span, whether it was billed, and what was ignored."""
    src = {k: source(a.sources, k) for k in a.sources}
    model_key = next(
        (src[k] for k in ("model", "response_model", "request_model", "openinference_model") if k in src), None
    )
    if a.model and model_key is None:
        model_key = "(llm.invocation_parameters)" if a.kind in MODEL_CALL_KINDS else "(the wrapped call)"
    provider_key = src.get("provider") or ("(the wrapped call)" if a.provider else None)
    tokens = {
        label: {"value": getattr(a, field), "from": _attr(a, src.get(field))}
        for field, label in _TOKEN_NAMES if getattr(a, field) is not None
    }  # fmt: skip
    return {
        "trace_id": a.trace_id, "span_id": a.span_id, "name": a.name,
        "kind": {"value": a.kind, "operation": a.operation, "from": _attr(a, src.get("kind"))},
        "model": {"value": a.model, "from": _attr(a, model_key) if a.model else None},
        "provider": {"value": a.provider, "from": _attr(a, provider_key) if a.provider else None},
        "framework": {"value": a.framework, "from": _attr(a, src.get("framework")) if a.framework else None},
        "tokens": tokens, "token_rule": src.get("tokens"),
        "billed": _billing(a, billed_for),
        "malformed": list(a.skipped),
        "ignored": ignored_attributes(a),
    }  # fmt: skip


def explanations(spans: list[AgentSpan]) -> list[dict[str, object]]:
    billed_for = {a.billed_in: a.span_id for a in spans if a.billed_in}
    return [explain(a, billed_for) for a in sorted(spans, key=lambda a: (a.trace_id, a.span.start_ns))]


def print_explain(spans: list[AgentSpan], as_json: bool = False) -> None:
    import sys

    out = sys.stdout
    for e in explanations(spans):
        if as_json:
            out.write(orjson.dumps(e).decode() + "\n")
            continue
        kind = e["kind"]
        out.write(f"{e['trace_id'][:8]} {e['span_id']} {e['name']}\n")
        out.write(f"  kind       {kind['value']} (operation {kind['operation']}) <- {kind['from']}\n")
        for field in ("model", "provider", "framework"):
            f = e[field]
            if f["value"] is not None:
                out.write(f"  {field:<10} {f['value']} <- {f['from']}\n")
        for label, t in e["tokens"].items():
            out.write(f"  {label:<10} {t['value']} <- {t['from']}\n")
        if e["token_rule"]:
            out.write(f"  tokens     {e['token_rule']}\n")
        out.write(f"  billed     {e['billed']}\n")
        if e["malformed"]:
            out.write(f"  malformed  {', '.join(e['malformed'])}\n")
        if e["ignored"]:
            out.write(f"  ignored    {', '.join(e['ignored'])}\n")
    out.flush()
