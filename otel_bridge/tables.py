"""CLI tables that fit 120 columns: chosen columns, human numbers, the rest behind ``--wide``.

Each command names the columns worth a glance (``NARROW``); ``--wide`` shows every key the query returned;
``--json`` (in ``commands``) prints the raw rows. Columns blank on every row, and token columns zero on every row, are
left out of the narrow table (a column of zeros answers nothing), and long names are cut with an ellipsis instead of wrapping.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from otel_bridge import humanize as h

WIDTH = 120


@dataclass(frozen=True)
class Col:
    key: str
    header: str
    fmt: Callable[[Any], str] = h.plain
    max_width: int | None = None


def _c(key: str, header: str | None = None, max_width: int | None = None) -> Col:
    return Col(key, header or key.replace("_", " "), h.by_key(key), max_width)


# What a row shows without --wide. Runs show their subtree totals as "tokens"/"cost" (the question a user asks);
# the span's own Observatory fields are in --wide and --json.
NARROW: dict[str, list[Col]] = {
    "runs": [
        _c("run_id", "run"), _c("start_time", "start"), _c("type"), _c("name", max_width=32),
        _c("model", max_width=28), _c("status"), _c("latency_s", "latency"), _c("total_tokens", "tokens"),
        _c("total_cost", "cost"), _c("llm_calls", "llm"), _c("tool_calls", "tools"), _c("errors", "err"),
    ],
    "costs": [
        _c("model"), _c("provider"), _c("agent"), _c("service"), _c("release"), _c("day"), _c("calls"),
        _c("input_tokens", "input"), _c("cached_input_tokens", "cached"), _c("cache_write_tokens", "cache write"),
        _c("output_tokens", "output"), _c("reasoning_tokens", "reasoning"), _c("cost"),
        _c("unpriced_calls", "unpriced"),
    ],
    "latency": [
        _c("model"), _c("agent"), _c("kind"), _c("release"), _c("count"), _c("error_rate", "errors"),
        _c("mean_ms", "mean"), _c("p50_ms", "p50"), _c("p90_ms", "p90"), _c("p95_ms", "p95"), _c("p99_ms", "p99"),
    ],
    "prices check": [
        _c("model", max_width=36), _c("provider"), _c("source"), _c("priced_as", "priced as", max_width=36),
        _c("spans"), _c("llm_spans", "llm spans"), _c("input_tokens", "input"),
        _c("output_tokens", "output"), _c("last_seen", "last seen"),
    ],
    # prices show: USD per 1M tokens (per call for per_call); model and source are on the line above the table
    "prices show": [
        _c("in_force", "now"), _c("effective_from", "from"), _c("time_of_day_from", "time of day"), _c("tier"),
        _c("input"), _c("cached_input", "cached"), _c("cache_write", "cache write"), _c("output"), _c("reasoning"),
        _c("per_call", "per call"),
    ],
}  # fmt: skip

# diff rows are metrics: the value format depends on the row, not the column.
_METRIC_FMT = {"runs": h.count, "cost_per_run": h.money, "tokens_per_run": h.count, "error_rate": h.percent}


def _diff_value(metric: str, value: Any) -> str:
    fmt = _METRIC_FMT.get(metric) or (h.millis if metric.endswith("_ms") else h.plain)
    return fmt(value)


def _diff_table(rows: list[dict[str, Any]], table: Table) -> None:
    for head in ("metric", "baseline", "candidate", "delta", "change", "confidence", "samples"):
        table.add_column(head, justify="left" if head in ("metric", "samples") else "right")
    for r in rows:
        m = r["metric"]
        delta = _diff_value(m, r["delta"])
        if r["delta"] is not None and r["delta"] > 0 and not delta.startswith("+"):
            delta = "+" + delta
        table.add_row(m, _diff_value(m, r["baseline"]), _diff_value(m, r["candidate"]), delta,
                      h.signed_percent(r["delta_pct"]), h.percent(r["confidence"]), r["samples"])  # fmt: skip


def _is_empty(rows: list[dict[str, Any]], key: str) -> bool:
    """Nothing to read in the column: blank everywhere, or zero everywhere for counts of tokens."""
    blank = (None, "", [])
    zero = blank + (0, 0.0) if "tokens" in key or key.startswith("unpriced") else blank
    return all(r.get(key) in zero for r in rows)


def columns(kind: str, rows: list[dict[str, Any]], wide: bool) -> list[Col]:
    """The columns a table shows: the command's narrow set (present, not all zero), or every key when wide."""
    keys = list(rows[0]) if rows else []
    if wide or kind not in NARROW:
        return [_c(k) for k in keys]
    return [c for c in NARROW[kind] if c.key in keys and not _is_empty(rows, c.key)]


def _new_table(title: str | None) -> Table:
    """No outer edge and one space of padding: two characters between columns, more room for names."""
    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                 header_style="bold", title_justify="left")  # fmt: skip


def _overhead(n: int) -> int:
    """Characters a table of ``n`` columns spends on padding and dividers (measured, not assumed)."""
    from rich.measure import Measurement

    t = _new_table(None)
    for _ in range(n):
        t.add_column(width=1)
    con = Console(width=10_000)
    return Measurement.get(con, con.options, t).maximum - n


def _widths(cols: list[Col], texts: list[list[str]], width: int) -> list[int]:
    """Natural widths; when they don't fit, only the columns with a ``max_width`` (names) give way."""
    natural = [max([len(c.header)] + [len(row[i]) for row in texts]) for i, c in enumerate(cols)]
    natural = [min(n, c.max_width) if c.max_width else n for n, c in zip(natural, cols, strict=True)]
    overhead = _overhead(len(cols))
    flex = [i for i, c in enumerate(cols) if c.max_width]
    spare = width - overhead - sum(n for i, n in enumerate(natural) if i not in flex)
    wanted = sum(natural[i] for i in flex)
    if flex and wanted > spare:
        for i in flex:
            natural[i] = max(6, min(natural[i], natural[i] * spare // wanted))
    return natural


def table(
    rows: list[dict[str, Any]], kind: str, *, wide: bool = False, title: str | None = None, width: int = WIDTH
) -> Table:
    t = _new_table(title)
    if kind == "diff" and rows and not wide:
        _diff_table(rows, t)
        return t
    cols = columns(kind, rows, wide)
    if not cols:
        t.add_column("(no rows)")
        return t
    texts = [[c.fmt(r.get(c.key)) for c in cols] for r in rows]
    widths = _widths(cols, texts, width) if not wide else [None] * len(cols)
    for c, w in zip(cols, widths, strict=True):
        numeric = c.fmt not in (h.plain, h.short_id, h.when) or (rows and isinstance(rows[0].get(c.key), (int, float)))
        t.add_column(c.header, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis", width=w)
    for r, row_texts in zip(rows, texts, strict=True):
        t.add_row(*(_styled(c, r, text) for c, text in zip(cols, row_texts, strict=True)))
    return t


def _styled(c: Col, row: dict[str, Any], text: str) -> str:
    text = text.replace("[", r"\[")
    if c.key == "status" and text == "error":
        return "[red]error[/red]"
    return text


def console(file: Any = None) -> Console:
    """120 columns unless a wider terminal says otherwise."""
    out = file or sys.stdout
    width = Console(file=out).width if out.isatty() else WIDTH
    return Console(file=out, width=width, highlight=False)


def print_table(rows: list[dict[str, Any]], kind: str, *, wide: bool = False, title: str | None = None) -> None:
    con = console()
    t = table(rows, kind, wide=wide, title=title, width=con.width)
    if wide:  # as wide as the values need: nothing cut (pipe it to ``less -S``)
        from rich.measure import Measurement

        big = Console(width=100_000)
        con = Console(
            file=con.file, width=max(con.width, Measurement.get(big, big.options, t).maximum), highlight=False
        )
    con.print(t)
    con.print()
