"""ClickHouse rows as dataclasses, one per table, whose fields are the schema's columns in order.

Every value is coerced to its column's type when a row is built (``SpanRow.of(...)``): OTLP lets any attribute —
``service.name``, a span name read from JSON, a token count — be any ``AnyValue``, and one non-string among 2,000
spans must never fail an insert (issue 10, poison isolation). ``tests/test_rows.py`` holds these fields against
the DDL of ``otel_bridge.analytics.schema``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, ClassVar

import orjson

UINT64_MAX = (1 << 64) - 1
UINT32_MAX = (1 << 32) - 1
# DateTime64(9) holds 1900-01-01 .. 2262-04-11; nanoseconds since the epoch as a signed int64 cover the latter.
TS_MAX_NS = (1 << 63) - 1
Ts = int  # DateTime64(9, 'UTC'), epoch nanoseconds
U32 = int  # UInt32


def text(value: Any) -> str:
    """Any value as a String column: None → "", bytes decoded, containers as JSON."""
    if value.__class__ is str:  # the common case first: one type test, no isinstance chain
        return value
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def opt_text(value: Any) -> str | None:
    """A Nullable column: None stays None, anything else becomes text (empty → None)."""
    return text(value) or None if value is not None else None


def uint(value: Any, limit: int = UINT64_MAX) -> int:
    """An unsigned integer column: a non-number, a negative, NaN or a value past ``limit`` → 0 (never raises)."""
    if value.__class__ is int:
        return value if 0 <= value <= limit else 0
    if value is None:  # an absent count: most spans have no tokens (and int("None") would raise, slowly)
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else 0
    elif not isinstance(value, int):
        try:
            value = int(str(value).strip() or 0)
        except ValueError:
            return 0
    return value if 0 <= value <= limit else 0


def uint32(value: Any) -> int:
    return uint(value, UINT32_MAX)


def ts(value: Any) -> int:
    """A DateTime64(9) column in epoch nanoseconds, clamped into what the type holds; also reads back the
    ``seconds.nanoseconds`` text of ``encode_row`` (a dead-lettered row being retried)."""
    if isinstance(value, str) and "." in value:
        sec, _, frac = value.strip().partition(".")
        if sec.isdigit() and frac.isdigit():
            value = int(sec) * 1_000_000_000 + int(frac[:9].ljust(9, "0"))
    return uint(value, TS_MAX_NS)


def ts_text(ns: int) -> str:
    """Epoch nanoseconds as ClickHouse reads a DateTime64(9) from JSON without ambiguity: an integer is out of
    range and a short ``1.5`` is taken for a date, a zero-padded ``0000000001.500000000`` is not."""
    return "%010d.%09d" % divmod(ns, 1_000_000_000)


def real(value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def flag(value: Any) -> bool:
    return bool(value) if not isinstance(value, str) else value.strip().lower() not in ("", "0", "false", "no")


def texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [text(value)]
    return [text(v) for v in value]


def uints(value: Any, limit: int = UINT64_MAX) -> list[int]:
    if not isinstance(value, list | tuple):
        return [] if value is None else [uint(value, limit)]
    return [uint(v, limit) for v in value]


def text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {text(k): text(v) for k, v in value.items()}


def count_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {text(k): uint32(v) for k, v in value.items()}


_COERCE = {
    "str": text, "str | None": opt_text, "int": uint, "Ts": ts, "U32": uint32, "float": real, "bool": flag,
    "list[str]": texts, "list[int]": uints, "list[U32]": lambda v: uints(v, UINT32_MAX),
    "dict[str, str]": text_map, "dict[str, U32]": count_map,
}  # fmt: skip


def _dumps(values: list) -> bytes:
    try:
        return orjson.dumps(values)
    except orjson.JSONEncodeError:  # a lone surrogate from an app's str: UTF-8 cannot carry it
        return orjson.dumps(_scrub(values))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


class _Row:
    """``of(*values)`` coerces each value to its field's type; ``values()`` is the insert tuple."""

    TABLE: ClassVar[str]
    _coercers: ClassVar[tuple]
    _getter: ClassVar[Any]
    _timestamps: ClassVar[tuple[int, ...]]  # positions of the DateTime64 columns
    _build: ClassVar[Any]
    _line: ClassVar[Any]

    @classmethod
    def _prepare(cls) -> None:
        fs = fields(cls)  # type: ignore[arg-type]
        cls._coercers = tuple(_COERCE[f.type] for f in fs)
        cls._getter = attrgetter(*(f.name for f in fs))
        cls._timestamps = tuple(i for i, f in enumerate(fs) if f.type == "Ts")
        cls._build = _unrolled(cls, "build", "cls({})", stamps_as_text=False)
        cls._line = _unrolled(cls, "line", "dumps([{}])", stamps_as_text=True)

    @classmethod
    def of(cls, *values: Any) -> Any:
        if len(values) != len(cls._coercers):
            raise TypeError(f"{cls.__name__}.of takes {len(cls._coercers)} values, got {len(values)}")
        return cls._build(*values)

    @classmethod
    def line(cls, *values: Any) -> bytes:
        """``encode_row(cls.of(*values))`` without building the row in between: the conversion's hot path."""
        return cls._line(*values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """A row read back (a dead letter being retried): missing or odd values are coerced like new ones."""
        return cls.of(*(data.get(f.name) for f in fields(cls)))  # type: ignore[arg-type]

    def values(self) -> tuple:
        return self._getter(self)

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        return tuple(f.metadata.get("column", f.name) for f in fields(cls))  # type: ignore[arg-type]


def _unrolled(cls: type, name: str, wrap: str, stamps_as_text: bool) -> Any:
    """``def name(v0, ..., vn): return wrap.format(c0(v0), ..., cn(vn))`` for one row type: each value straight
    through its column's coercer (timestamps then as text when ``stamps_as_text``), no generator or zip per row
    (a third of the conversion's time went there)."""
    coercers = cls._coercers  # type: ignore[attr-defined]
    stamps = set(cls._timestamps) if stamps_as_text else set()  # type: ignore[attr-defined]
    names = [f"v{i}" for i in range(len(coercers))]
    items = ", ".join(
        f"ts_text(c{i}({v}))" if i in stamps else _INLINE.get(c, "{c}({v})").format(c=f"c{i}", v=v)
        for i, (v, c) in enumerate(zip(names, coercers, strict=True))
    )
    scope = {"cls": cls, "dumps": _dumps, "ts_text": ts_text, "UINT64_MAX": UINT64_MAX, "INF": math.inf,
             **{f"c{i}": c for i, c in enumerate(coercers)}}  # fmt: skip
    exec(f"def {name}({', '.join(names)}):\n    return {wrap.format(items)}", scope)  # noqa: S102 - from field names
    return scope[name]


# A value already of its column's type passes without a call (the coercer would return it as it is): most do.
_INLINE = {
    text: "({v} if {v}.__class__ is str else {c}({v}))",
    uint: "({v} if {v}.__class__ is int and 0 <= {v} <= UINT64_MAX else {c}({v}))",
    real: "({v} if {v}.__class__ is float and -INF < {v} < INF else {c}({v}))",
}


def _col(name: str) -> Any:
    return field(metadata={"column": name})


@dataclass(slots=True)
class SpanRow(_Row):
    TABLE: ClassVar[str] = "spans"
    trace_id: str
    span_id: str
    run_id: str
    parent_span_id: str
    parent_run_id: str | None
    kind: str
    operation: str
    name: str
    service_name: str
    service_version: str
    environment: str
    release_id: str
    agent: str
    agent_id: str
    model: str
    provider: str
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    start: Ts
    end: Ts
    duration_ms: float
    status: str
    error_type: str
    user_id: str
    user_email: str
    conversation_id: str
    session_id: str
    tags: list[str]
    attributes: dict[str, str]
    input_text: str
    output_text: str
    version: int


@dataclass(slots=True)
class RunRow(_Row):
    TABLE: ClassVar[str] = "runs"
    run_id: str
    trace_id: str
    root_span_id: str
    release_id: str
    agent: str
    tenant_id: str
    task_id: str
    environment: str
    service_name: str
    service_version: str
    start: Ts
    end: Ts
    latency_ms: float
    success: bool
    error_type: str
    spans: U32
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    models: list[str]
    usage_model: list[str] = _col("usage.model")
    usage_provider: list[str] = _col("usage.provider")
    usage_calls: list[U32] = _col("usage.calls")
    usage_input: list[int] = _col("usage.input")
    usage_cached: list[int] = _col("usage.cached")
    usage_cache_write: list[int] = _col("usage.cache_write")
    usage_output: list[int] = _col("usage.output")
    usage_reasoning: list[int] = _col("usage.reasoning")
    tools: dict[str, U32] = _col("tools")
    version: int = _col("version")


@dataclass(slots=True)
class EventRow(_Row):
    TABLE: ClassVar[str] = "events"
    event_id: str
    name: str
    run_id: str | None
    thread_id: str
    role: str
    content: str
    rating: str
    comment: str
    timestamp: Ts
    agent: str
    user_email: str
    metadata: str
    version: int


ROW_TYPES: dict[str, type[_Row]] = {"spans": SpanRow, "runs": RunRow, "events": EventRow}
for _cls in ROW_TYPES.values():
    _cls._prepare()


def row_values(row: Any) -> tuple:
    """The insert tuple of a row dataclass (a plain tuple passes through)."""
    return row.values() if isinstance(row, _Row) else tuple(row)


def encode_row(row: _Row) -> bytes:
    """One ``JSONCompactEachRow`` line: what the process owning ClickHouse inserts as it is, so rows are
    serialised once, by orjson, where they were converted (a worker), and never re-encoded in Python."""
    values = list(row.values())
    for i in row._timestamps:
        values[i] = ts_text(values[i])
    return _dumps(values)
