"""A request split by trace id for ``service.workers`` (issue 12): every span and log record of one trace goes to
the same worker, so each worker's run assembly sees whole traces, and ids arrive in the same worker whether a
trace came as protobuf or as JSON (the route is a function of the id's bytes, not of the encoding).

The serving process only parses the envelope (upb for protobuf, orjson for JSON) and re-encodes each worker's
share; decoding spans into the span model, with its per-span refusals, happens in the workers. Anything the split
cannot place (a span without a readable trace id, a block of the wrong shape) goes to worker 0 as it came, where
the decoder refuses it with its usual message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Split(NamedTuple):
    parts: list[bytes | None]  # per worker, encoded as the request was (None: nothing of it goes there)
    counts: list[int]  # per worker, the spans or log records of its share, readable or not

    @property
    def count(self) -> int:
        return sum(self.counts)


def worker_of(trace_id: bytes, workers: int) -> int:
    """The worker that owns a trace: W3C trace ids end in random bytes, so their low 64 bits spread evenly."""
    return int.from_bytes(trace_id[-8:], "big") % workers if trace_id else 0


# ---------------------------------------------------------------------------------------------- protobuf

_PROTO = {
    "traces": (ExportTraceServiceRequest, "resource_spans", "scope_spans", "spans", "resource", "scope"),
    "logs": (ExportLogsServiceRequest, "resource_logs", "scope_logs", "log_records", "resource", "scope"),
}


def _split_proto(signal: str, body: bytes, workers: int) -> Split:
    cls, top, scopes, leaf, _, _ = _PROTO[signal]
    request = cls.FromString(body)
    # per worker: [(resource index, resource block, scope block, [items])]
    shares: list[list[tuple[int, Any, Any, list]]] = [[] for _ in range(workers)]
    counts = [0] * workers
    for r, block in enumerate(getattr(request, top)):
        for scope_block in getattr(block, scopes):
            buckets: dict[int, list] = {}
            for item in getattr(scope_block, leaf):
                buckets.setdefault(worker_of(item.trace_id, workers), []).append(item)
            for w, items in buckets.items():
                shares[w].append((r, block, scope_block, items))
                counts[w] += len(items)
    used = [w for w, share in enumerate(shares) if share]
    if len(used) == 1:  # the whole request belongs to one worker: forwarded as it came
        return Split([body if w == used[0] else None for w in range(workers)], counts)
    return Split([_encode_share(cls, signal, share) if share else None for share in shares], counts)


def _encode_share(cls: Any, signal: str, share: list[tuple[int, Any, Any, list]]) -> bytes:
    _, top, scopes, leaf, resource, scope = _PROTO[signal]
    out = cls()
    last = None
    for r, block, scope_block, items in share:
        if r != last:
            target = getattr(out, top).add()
            getattr(target, resource).CopyFrom(getattr(block, resource))
            target.schema_url = block.schema_url
            last = r
        target_scope = getattr(target, scopes).add()
        getattr(target_scope, scope).CopyFrom(getattr(scope_block, scope))
        target_scope.schema_url = scope_block.schema_url
        getattr(target_scope, leaf).extend(items)
    return out.SerializeToString()


# ---------------------------------------------------------------------------------------------- JSON

_JSON = {"traces": ("resourceSpans", "scopeSpans", "spans"), "logs": ("resourceLogs", "scopeLogs", "logRecords")}


def _json_trace_id(item: Any) -> bytes:
    value = item.get("traceId", item.get("trace_id")) if isinstance(item, dict) else None
    if not isinstance(value, str):
        return b""
    try:
        return bytes.fromhex(value)
    except ValueError:
        return b""


def _split_json(signal: str, body: bytes, workers: int) -> Split:
    top, scopes, leaf = _JSON[signal]
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get(top, []), list):
        raise ValueError(f"not an object with a {top!r} array")
    shares: list[list] = [[] for _ in range(workers)]
    counts = [0] * workers
    for block in doc.get(top, []):
        scope_blocks = block.get(scopes, []) if isinstance(block, dict) else None
        if not isinstance(scope_blocks, list) or not all(isinstance(sb, dict) for sb in scope_blocks):
            shares[0].append(block)  # the decoder refuses it with its own message
            counts[0] += _leaves(block, scopes, leaf)
            continue
        for sb in scope_blocks:
            items = sb.get(leaf, [])
            if not isinstance(items, list):
                shares[0].append({**block, scopes: [sb]})
                counts[0] += 1
                continue
            buckets: dict[int, list] = {}
            for item in items:
                buckets.setdefault(worker_of(_json_trace_id(item), workers), []).append(item)
            for w, share in buckets.items():
                shares[w].append({**block, scopes: [{**sb, leaf: share}]})
                counts[w] += len(share)
    used = [w for w, share in enumerate(shares) if share]
    if len(used) == 1:
        return Split([body if w == used[0] else None for w in range(workers)], counts)
    return Split([orjson.dumps({top: share}) if share else None for share in shares], counts)


def _leaves(block: Any, scopes: str, leaf: str) -> int:
    """How many items a malformed block seems to hold (what the decoder will count as refused), at least one."""
    scope_blocks = block.get(scopes) if isinstance(block, dict) else None
    if not isinstance(scope_blocks, list):
        return 1
    n = sum(len(sb.get(leaf)) for sb in scope_blocks if isinstance(sb, dict) and isinstance(sb.get(leaf), list))
    return max(1, n)


_SPLITTERS: dict[str, Callable[[str, bytes, int], Split]] = {"proto": _split_proto, "json": _split_json}


def split(signal: str, fmt: str, body: bytes, workers: int) -> Split:
    """Each worker's share of one OTLP request; raises whatever the envelope parser raised on a body that is not
    one (the caller turns that into the decoder's own refusal)."""
    return _SPLITTERS[fmt](signal, body, workers)
