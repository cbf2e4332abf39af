"""Numbers for people: ``$0.60``, ``142.7k``, ``1.9 s``, short ids. Tables use these; ``--json`` keeps raw values."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def _bad(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def money(x: Any) -> str:
    """USD: cents from $0.10 up, two significant digits below (a single call often costs a fraction of a cent)."""
    if _bad(x):
        return ""
    v = float(x)
    if v == 0:
        return "$0"
    sign, v = ("-" if v < 0 else ""), abs(v)
    if v < 0.1:
        return f"{sign}${v:.2g}" if v >= 1e-4 else f"{sign}${v:.1e}"
    return f"{sign}${v:,.0f}" if v >= 10_000 else f"{sign}${v:,.2f}"


def count(x: Any) -> str:
    """142658 → 142.7k; below a thousand the exact number (non-integers keep one decimal)."""
    if _bad(x):
        return ""
    v = float(x)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return str(int(v)) if v == int(v) else f"{v:.1f}"


def seconds(x: Any) -> str:
    """1.94 → 1.9 s; 0.42 → 420 ms; 125 → 2m 05s; 3720 → 1h 02m."""
    if _bad(x):
        return ""
    v = float(x)
    if abs(v) < 1:
        return f"{v * 1000:.0f} ms"
    if abs(v) < 60:
        return f"{v:.1f} s"
    m, s = divmod(int(round(abs(v))), 60)
    sign = "-" if v < 0 else ""
    return f"{sign}{m}m {s:02d}s" if m < 60 else f"{sign}{m // 60}h {m % 60:02d}m"


def millis(x: Any) -> str:
    return "" if _bad(x) else seconds(float(x) / 1000)


def percent(x: Any) -> str:
    """A 0–1 rate as a percentage."""
    return "" if _bad(x) else f"{float(x) * 100:.1f}%"


def signed_percent(x: Any) -> str:
    """An already-percent delta with its sign."""
    return "" if _bad(x) else f"{float(x):+.1f}%"


def short_id(x: Any) -> str:
    """The first 8 hex digits of a UUID or trace id: enough to tell rows apart, and a prefix to grep for."""
    return "" if not x else str(x).replace("-", "")[:8]


def when(x: Any) -> str:
    """ISO 8601 (UTC) → ``MM-DD HH:MM:SS``: the year is noise in a table of recent runs."""
    if not x:
        return ""
    try:
        dt = datetime.fromisoformat(str(x).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return str(x)
    return dt.strftime("%m-%d %H:%M:%S")


def plain(x: Any) -> str:
    if _bad(x):
        return ""
    if isinstance(x, (list, tuple)):
        return ", ".join(map(str, x))
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}"
    if isinstance(x, int):
        return count(x)
    return str(x)


def by_key(key: str):  # noqa: ANN201 - a formatter
    """The formatter a column's name implies (the general rule; ``tables`` names the exceptions)."""
    if key.endswith("_id") or key in ("run_id", "trace_id"):
        return short_id
    if "cost" in key:
        return money
    if key.endswith("_ms"):
        return millis
    if key.endswith("_s"):
        return seconds
    if key.endswith("_rate"):
        return percent
    if key.endswith(("_time", "_seen")):
        return when
    if key.endswith(("tokens", "calls", "spans")) or key in ("count", "n", "errors", "runs"):
        return count
    return plain
