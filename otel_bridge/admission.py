"""Which recognised spans the pipeline admits: a value no destination can store is refused per span, with a
message, in OTLP ``partial_success`` — never acknowledged and then lost (issue 10, rows 6 and 8).

Refused: a zero or out-of-range timestamp (ClickHouse's DateTime64(9) ends in 2262), a token count outside
0 .. 2^63-1, and a span ClickHouse's TTL would drop at once (older than ``ttl_days``).
"""

from __future__ import annotations

import time

from otel_bridge.agentspan import AgentSpan

TS_MAX_NS = (1 << 63) - 1
TOKENS_MAX = (1 << 63) - 1
_TOKEN_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)


def check(a: AgentSpan, ttl_days: int | None = None, now_ns: int | None = None) -> str | None:
    """None when the span can be stored everywhere, else why not (one line)."""
    s = a.span
    for name, ns in (("start", s.start_ns), ("end", s.end_ns)):
        if not isinstance(ns, int) or ns <= 0:
            return f"{name} time is 0 or missing"
        if ns > TS_MAX_NS:
            return f"{name} time {ns} ns is past 2262-04-11, out of range"
    for name in _TOKEN_FIELDS:
        value = getattr(a, name)
        if value is not None and (not isinstance(value, int) or not 0 <= value <= TOKENS_MAX):
            return f"{name} {value!r} out of range 0..2^63-1"
    if ttl_days:
        now_ns = time.time_ns() if now_ns is None else now_ns
        if max(s.start_ns, s.end_ns) < now_ns - ttl_days * 86_400 * 1_000_000_000:
            return f"older than the {ttl_days}-day retention (TTL), it would be dropped at once"
    return None
