"""``otel-bridge inspect FILE…``: what otel-bridge recognises in OTLP files, as a table or JSON lines."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from otel_bridge.agentspan import AgentSpan
from otel_bridge.semconv import recognise_trace
from otel_bridge.spans import BridgeLog, BridgeSpan, DecodeError, Decoded
from otel_bridge.spans import logs_from_otlp_json, logs_from_otlp_proto, spans_from_otlp_json, spans_from_otlp_proto


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
        s, l = read_otlp_file(path)
        spans += s
        logs += l
    return recognise_trace(spans, logs)


def _fmt(v: object) -> str:
    return "" if v is None else str(v)


def print_table(spans: list[AgentSpan]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(spans)} spans", header_style="bold")
    for col in ("trace", "kind", "name", "agent", "model", "provider", "in", "cached", "out", "reasoning", "ms", "status"):
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
