"""A request split by trace id for ``service.workers`` (issue 12): every span and log record of one trace goes to
the same worker, so each worker's run assembly sees whole traces, and ids arrive in the same worker whether a
trace came as protobuf or as JSON (the route is a function of the id's bytes, not of the encoding).

The serving process only reads the envelope (the protobuf wire format directly, JSON with orjson) and encodes each
worker's share; decoding spans into the span model, with its per-span refusals, happens in the workers. Anything the split
cannot place (a span without a readable trace id, a block of the wrong shape) goes to worker 0 as it came, where
the decoder refuses it with its usual message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson


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
#
# The protobuf envelope is walked on the wire (https://protobuf.dev/programming-guides/encoding/) instead of being
# parsed into messages: each share is then the original bytes of its spans under copies of their resource and
# scope headers — no span is decoded or re-encoded here. Both requests nest the same way: field 1 of the request
# is a resource block; in it field 2 is a scope block (the rest: resource, schema_url); in that, field 2 is one
# span or log record. A span's trace id is its field 1, a log record's its field 9.

_TRACE_ID_FIELD = {"traces": 1, "logs": 9}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: memoryview, pos: int, end: int, one: bool = False) -> list[tuple[int, int, int, int]]:
    """(field number, start of the field's encoding, start of its value, end) for each field in buf[pos:end]
    (only the first when ``one``)."""
    out = []
    while pos < end and not (one and out):
        start = pos
        key = buf[pos]  # field numbers below 16: a one-byte key, the common case, read inline
        pos += 1
        if key >= 0x80:
            key, pos = _varint(buf, start)
        wire = key & 7
        if wire == 2:
            n = buf[pos]
            pos += 1
            if n >= 0x80:
                n, pos = _varint(buf, pos - 1)
            value, pos = pos, pos + n
        elif wire == 0:
            value = pos
            _, pos = _varint(buf, pos)
        elif wire in (1, 5):
            value, pos = pos, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire} is not used by OTLP")
        if pos > end:
            raise ValueError("truncated field")
        out.append((key >> 3, start, value, pos))
    return out


def _trace_id(buf: memoryview, signal: str, start: int, end: int) -> bytes:
    if signal == "traces" and end - start >= 18 and buf[start] == 0x0A and buf[start + 1] == 16:
        return bytes(buf[start + 2 : start + 18])  # what every SDK writes first: trace_id, 16 bytes
    wanted = _TRACE_ID_FIELD[signal]
    for number, _, value, stop in _fields(buf, start, end):
        if number == wanted:
            return bytes(buf[value:stop])
    return b""


def _scope(body: bytes, buf: memoryview, signal: str, pos: int, end: int, workers: int) -> tuple[list, list]:
    """A scope block's header fields, and its spans or log records as runs of neighbours bound for one worker:
    ``(worker, start, end, how many)``. A run is one slice of the request however many spans it holds (an SDK's
    batch keeps a trace's spans together), so a span costs a key, a length and a trace id compared with the last
    one's — the hot loop of the serving process (``bench/otlp.py``), reading ``body`` by index."""
    header: list = []
    runs: list[list] = []
    last_id, last_w = None, -1
    while pos < end:
        start = pos
        if body[pos] == 0x12:  # field 2, length-delimited: a span or log record (the one-byte key of every encoder)
            n = body[pos + 1]
            pos += 2
            if n >= 0x80:
                n, pos = _varint(buf, pos - 1)
            leaf, pos = pos, pos + n
            if pos > end:
                raise ValueError("truncated field")
        else:  # scope, schema url, an unknown field (or field 2 encoded unusually)
            number, _, leaf, pos = _fields(buf, pos, end, one=True)[0]
            if number != 2:
                header.append(buf[start:pos])
                continue
            n = pos - leaf
        if signal == "traces" and n >= 18 and body[leaf] == 0x0A and body[leaf + 1] == 16:
            trace_id = body[leaf + 2 : leaf + 18]  # what every SDK writes first: trace_id, 16 bytes
        else:
            trace_id = _trace_id(buf, signal, leaf, pos)
        if trace_id != last_id:
            last_id, w = trace_id, worker_of(trace_id, workers)
        else:
            w = last_w
        if w == last_w and runs and runs[-1][2] == start:
            run = runs[-1]
            run[2] = pos
            run[3] += 1
        else:
            runs.append([w, start, pos, 1])
        last_w = w
    return header, runs


def _length_delimited(number: int, parts: list) -> list:
    size = sum(map(len, parts))
    header = bytearray([number << 3 | 2])
    while size >= 0x80:
        header.append(size & 0x7F | 0x80)
        size >>= 7
    header.append(size)
    return [bytes(header), *parts]


def _split_proto(signal: str, body: bytes, workers: int) -> Split:
    buf = memoryview(body)
    # per worker: resource blocks, each [resource header fields, {scope block index: [scope header, leaves]}]
    shares: list[list[list]] = [[] for _ in range(workers)]
    counts = [0] * workers
    for number, _, value, end in _fields(buf, 0, len(buf)):
        if number != 1:
            continue  # an unknown top-level field: nothing of ours
        block = _fields(buf, value, end)
        header = [buf[f:e] for n, f, _, e in block if n != 2]
        taken: list[dict[int, list]] = [{} for _ in range(workers)]
        for i, (n, _, scope_value, scope_end) in enumerate(block):
            if n != 2:
                continue
            scope_header, runs = _scope(body, buf, signal, scope_value, scope_end, workers)
            for w, start, stop, leaves in runs:
                taken[w].setdefault(i, [scope_header, []])[1].append(buf[start:stop])
                counts[w] += leaves
        for w, scopes in enumerate(taken):
            if scopes:
                shares[w].append([header, scopes])
    return _split(body, shares, counts, _encode_share)


def _encode_share(share: list[list]) -> bytes:
    out: list = []
    for header, scopes in share:
        block = list(header)
        for scope_header, leaves in scopes.values():
            block += _length_delimited(2, [*scope_header, *leaves])
        out += _length_delimited(1, block)
    return b"".join(out)


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
    return _split(body, shares, counts, lambda share: orjson.dumps({top: share}))


def _leaves(block: Any, scopes: str, leaf: str) -> int:
    """How many items a malformed block seems to hold (what the decoder will count as refused), at least one."""
    scope_blocks = block.get(scopes) if isinstance(block, dict) else None
    if not isinstance(scope_blocks, list):
        return 1
    n = sum(len(sb.get(leaf)) for sb in scope_blocks if isinstance(sb, dict) and isinstance(sb.get(leaf), list))
    return max(1, n)


def _split(body: bytes, shares: list, counts: list[int], encode: Callable[[Any], bytes]) -> Split:
    """Each worker's share encoded; a request that belongs to one worker is forwarded as it came."""
    used = [w for w, share in enumerate(shares) if share]
    if len(used) == 1:
        return Split([body if w == used[0] else None for w in range(len(shares))], counts)
    return Split([encode(share) if share else None for share in shares], counts)


_SPLITTERS: dict[str, Callable[[str, bytes, int], Split]] = {"proto": _split_proto, "json": _split_json}


def split(signal: str, fmt: str, body: bytes, workers: int) -> Split:
    """Each worker's share of one OTLP request; raises whatever the envelope parser raised on a body that is not
    one (the caller turns that into the decoder's own refusal)."""
    return _SPLITTERS[fmt](signal, body, workers)
