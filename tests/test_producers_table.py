"""README's supported-producers table is what the fixtures give today (regenerate with
``tests/fixtures/producers_table.py --write``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("producers_table", HERE / "fixtures" / "producers_table.py")
producers_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(producers_table)


def test_readme_table_is_up_to_date():
    current = producers_table.in_readme(producers_table.README.read_text())
    assert current is not None, "README.md lost its producers table markers"
    assert current == producers_table.render(), "run: .venv/bin/python tests/fixtures/producers_table.py --write"


def test_every_fixture_has_a_row():
    rows = producers_table.render().splitlines()[2:]
    assert [r.split(" | ")[0].strip("| `") for r in rows] == producers_table.names()
