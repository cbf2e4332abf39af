"""ClickHouse rows: the dataclasses' fields are the DDL's columns, and any value is coerced to its column's type."""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bridge.analytics.schema import _TABLES, COLUMNS, DDLOptions
from otel_bridge.exporters.clickhouse import _EVENT_NAMESPACE, event_uuid
from otel_bridge.exporters.rows import ROW_TYPES, EventRow, RunRow, SpanRow, encode_row, text, ts, uint

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"

# DDL type → the Python annotation a row field must carry
_KIND = [
    (r"Nullable\(UUID\)", "str | None"),
    (r"(LowCardinality\()?String\)?|UUID", "str"),
    (r"UInt64", "int"),
    (r"UInt32", "U32"),
    (r"DateTime64\(9, 'UTC'\)", "Ts"),
    (r"Float64", "float"),
    (r"Bool", "bool"),
    (r"Array\((LowCardinality\()?String\)?\)", "list[str]"),
    (r"Map\(String, String\)", "dict[str, str]"),
    (r"Map\(String, UInt32\)", "dict[str, U32]"),
]


def _ddl_columns(table: str) -> list[tuple[str, str]]:
    """(column, type) pairs from the CREATE TABLE body; Nested columns expand to name.sub Array(type)."""
    body = _TABLES[table][0]
    out = []
    for m in re.finditer(r"usage Nested\((.*?)\),\n", body, re.S):
        nested = m.group(1)
    body_flat = re.sub(r"usage Nested\(.*?\),\n", "USAGE_NESTED,\n", body, flags=re.S)
    for part in re.split(r",\s*\n\s*|,\s(?=[a-z_]+ )", body_flat.strip()):
        part = part.strip().rstrip(",")
        if not part or part.startswith("INDEX"):
            continue
        if part == "USAGE_NESTED":
            for sub in nested.split(","):  # noqa: F821 - set above when the table has the Nested column
                name, typ = sub.split(None, 1)
                out.append((f"usage.{name.strip()}", f"Array({typ.strip()})"))
            continue
        name, typ = part.split(None, 1)
        out.append(
            (name, re.sub(r"\s+CODEC.*", "", typ).replace("{text_ttl}", "").replace("{text_ttl_ts}", "").strip())
        )
    return out


def _annotation(table: str, column: str, typ: str) -> str:
    if column.startswith("usage."):
        inner = typ[len("Array(") : -1]
        return "list[str]" if "String" in inner else ("list[U32]" if inner == "UInt32" else "list[int]")
    for pattern, kind in _KIND:
        if re.fullmatch(pattern, typ):
            return kind
    raise AssertionError(f"{table}.{column}: no mapping for DDL type {typ}")


@pytest.mark.parametrize("table", ["spans", "runs", "events"])
def test_row_fields_are_the_ddl_columns_with_matching_types(table):
    cls = ROW_TYPES[table]
    ddl = _ddl_columns(table)
    assert cls.column_names() == COLUMNS[table] == tuple(name for name, _ in ddl)
    annotations = dict(zip(cls.column_names(), [f.type for f in dataclasses.fields(cls)], strict=True))
    for column, typ in ddl:
        assert annotations[column] == _annotation(table, column, typ), f"{table}.{column} ({typ})"
    assert DDLOptions().ttl_days == 90


def test_any_value_is_coerced_to_its_column_type():
    row = SpanRow.of(*([{"odd": [1, 2]}] * len(SpanRow.column_names())))
    for name, value in zip(SpanRow.column_names(), row.values(), strict=True):
        assert value is not None or name == "parent_run_id"
    assert row.input_tokens == 0 and row.start == 0 and row.duration_ms == 0.0
    assert row.name == '{"odd":[1,2]}' and row.tags == ["odd"] and row.attributes == {"odd": "[1,2]"}
    assert uint(2**70) == 0 and uint(-1) == 0 and uint("12") == 12 and uint(float("nan")) == 0
    assert ts(2**64 - 1) == 0 and ts(5) == 5
    assert text(b"\xff") == "\ufffd" and text(7) == "7" and text(None) == ""
    run = RunRow.of(*([7] * len(RunRow.column_names())))
    assert run.usage_model == ["7"] and run.tools == {} and run.success is True
    event = EventRow.from_dict({"event_id": 1, "timestamp": "x"})
    assert event.event_id == "1" and event.timestamp == 0 and event.run_id is None


_ODD = [None, 0, -1, 2**70, "12", " 7 ", "x", 1.5, float("nan"), True, b"\xff", "lone \ud800 surrogate", [1, "a"],
        {"k": 2}, ("t",), 1_764_489_600_123_456_789]  # fmt: skip


@pytest.mark.parametrize("table", ["spans", "runs", "events"])
def test_line_is_the_encoded_row(table):
    """``line`` (the conversion's shortcut) writes exactly what encoding the coerced row writes, for any value."""
    cls = ROW_TYPES[table]
    n = len(cls.column_names())
    for i, odd in enumerate(_ODD):
        values = [_ODD[(i + k) % len(_ODD)] for k in range(n)]
        values[i % n] = odd
        assert cls.line(*values) == encode_row(cls.of(*values))
    with pytest.raises(TypeError):
        cls.line(*range(n + 1))


def test_conversion_lines_are_the_encoded_rows_on_every_fixture():
    """Every fixture span and run, converted: the span and run lines equal the rows ``span_row`` / ``run_row`` build."""
    from otel_bridge.exporters.clickhouse import run_row, span_line, span_row
    from otel_bridge.inspect import agent_spans
    from otel_bridge.processors.runs import assemble

    spans = agent_spans(sorted(FIXTURES.glob("*.traces.pb")))
    assert len(spans) > 100
    for a in spans:
        assert span_line(a, text_limit=64) == encode_row(span_row(a, text_limit=64))
    runs = [run for trace in {a.trace_id for a in spans}
            for run in assemble({a.span_id: a for a in spans if a.trace_id == trace})]  # fmt: skip
    assert runs
    for run in runs:
        assert RunRow.line(*run_row(run).values()) == encode_row(run_row(run))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_event_ids_are_the_uuid5_they_always_were(key: str):
    """Event ids are formatted from the digest directly: a re-sent event must keep the id stored before."""
    try:
        expected = str(uuid.uuid5(_EVENT_NAMESPACE, key))
    except UnicodeEncodeError:  # a lone surrogate: neither can encode it
        with pytest.raises(UnicodeEncodeError):
            event_uuid(key)
        return
    assert event_uuid(key) == expected
