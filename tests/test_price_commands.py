"""``prices show``, ``prices check`` and ``prices update`` (against a loopback server, never the internet)."""

from __future__ import annotations

import argparse
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from ch_data import BASE_NS, bridge, llm_attrs

from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.commands import register
from otel_bridge.exporters.clickhouse import ClickHouseSender, spans_items
from otel_bridge.price_library import snapshot_path
from otel_bridge.pricing import PriceTable
from otel_bridge.semconv import recognise_trace

FRESH = [  # genai-prices' JSON data format: a provider array
    {
        "id": "acme-cloud",
        "name": "Acme Cloud",
        "api_pattern": "https://api\\.acme\\.example",
        "models": [
            {
                "id": "acme-1",
                "match": {"starts_with": "acme-1"},
                "prices": [
                    {"prices": {"input_mtok": 1.5, "cache_read_mtok": 0.15, "output_mtok": 6}},
                    {"constraint": {"start_date": "2026-01-01"}, "prices": {"input_mtok": 1, "output_mtok": 4}},
                ],
            }
        ],
    }
]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="otel-bridge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _json(capsys: pytest.CaptureFixture) -> list[dict]:
    return orjson.loads(capsys.readouterr().out)


def test_show_marks_the_row_in_force_at_a_date(capsys: pytest.CaptureFixture) -> None:
    assert _run(["prices", "show", "o3", "--provider", "openai", "--at", "2025-06-09T23:59:59Z", "--json"]) == 0
    rows = _json(capsys)
    assert [(r["effective_from"], r["input"], r["output"], r["in_force"]) for r in rows] == [
        ("always", 10.0, 40.0, "*"),
        ("2025-06-10", 2.0, 8.0, ""),
    ]
    assert {r["source"] for r in rows} == {"library"} and rows[0]["match"] == "= 'o3' or = 'o3-2025-04-16'"
    assert _run(["prices", "show", "o3-2025-04-16", "--at", "2025-06-10T00:00:00Z", "--json"]) == 0
    assert [r["in_force"] for r in _json(capsys)] == ["", "*"]


def test_show_marks_the_tier_of_a_long_prompt(capsys: pytest.CaptureFixture) -> None:
    argv = ["prices", "show", "gemini-2.5-pro", "--provider", "gcp.gemini", "--json"]
    assert _run([*argv, "--input-tokens", "200001"]) == 0
    rows = _json(capsys)
    assert [(r["tier"], r["input"], r["in_force"]) for r in rows] == [("", 1.25, ""), ("input > 200,000", 2.5, "*")]
    assert _run([*argv, "--input-tokens", "200000"]) == 0
    assert [r["in_force"] for r in _json(capsys)] == ["*", ""]


def test_show_table_override_and_unpriced(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert _run(["prices", "show", "claude-sonnet-4-5-20250929", "--provider", "anthropic"]) == 0
    out = capsys.readouterr().out
    assert "anthropic/claude-sonnet-4-5 (library: genai-prices 0.2.3 bundled snapshot)" in out and "┏" in out
    overrides = tmp_path / "prices.yaml"
    overrides.write_text("providers:\n  mine:\n    models:\n      claude-sonnet-4-5: {input: 2, output: 9}\n")
    assert _run(["prices", "show", "claude-sonnet-4-5-20250929", "--prices", str(overrides), "--json"]) == 0
    (row,) = _json(capsys)
    assert (row["source"], row["input"], row["output"], row["cached_input"]) == ("override", 2, 9, 2)
    assert row["in_force"] == "*"
    assert _run(["prices", "show", "mystery-model-1"]) == 1
    assert "mystery-model-1: unpriced" in capsys.readouterr().err


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 (ephemeral port) serving ``files``; anything else is a 404."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_update_writes_a_file_the_next_start_uses(
    loopback: tuple[str, dict[str, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url, files = loopback
    data_dir = str(tmp_path / "data")
    with Store.open(StoreConfig(data_dir=data_dir)) as store:  # closed before the CLI opens the directory
        attrs = llm_attrs("acme-cloud", "acme-1-large", 1000, 100, cached=400)
        ClickHouseSender(store).send(spans_items(recognise_trace([bridge(1, 1, None, "chat", BASE_NS, 5, attrs)])))
    assert PriceTable.load(snapshot=snapshot_path(data_dir)).source("acme-1-large", "acme-cloud") == "unpriced"

    files["/data.json"] = orjson.dumps(FRESH)
    assert _run(["prices", "update", "--url", f"{url}/data.json", "--data-dir", data_dir]) == 0
    path = Path(snapshot_path(data_dir))
    assert path == tmp_path / "genai-prices.json" and path.read_bytes() == files["/data.json"]
    assert f"wrote {path}: 1 providers, 1 models" in capsys.readouterr().out

    table = PriceTable.load(snapshot=path)  # what the next start reads
    assert table.library.label.startswith(str(path.resolve())) and "fetched" in table.library.label
    assert table.match("acme-1-large", 1_767_225_599 * 10**9, "acme-cloud").cost(1000, 400, 0, 100) == pytest.approx(
        (600 * 1.5 + 400 * 0.15 + 100 * 6) / 1e6
    )  # the day before 2026-01-01; from then on 1 / 4 USD (cache reads at the input price)
    assert table.match("acme-1-large", 1_767_225_600 * 10**9, "acme-cloud").cost(1000, 400, 0, 100) == pytest.approx(
        (1000 * 1 + 100 * 4) / 1e6
    )
    assert table.source("gpt-4o", "openai") == "unpriced"  # the file replaces the bundled snapshot, it is not merged
    assert _run(["prices", "check", "--data-dir", data_dir, "--json"]) == 0
    (row,) = _json(capsys)
    assert (row["model"], row["source"], row["priced_as"]) == ("acme-1-large", "library", "acme-cloud/acme-1")

    # a bad payload or a failed fetch changes nothing
    files["/bad.json"] = b'{"providers": []}'
    assert _run(["prices", "update", "--url", f"{url}/bad.json", "--data-dir", data_dir]) == 2
    assert "expected a JSON array of providers" in capsys.readouterr().err
    assert _run(["prices", "update", "--url", f"{url}/missing.json", "--data-dir", data_dir]) == 2
    assert "404" in capsys.readouterr().err
    assert path.read_bytes() == files["/data.json"]


def test_loading_prices_never_starts_the_librarys_updater() -> None:
    from genai_prices import data_snapshot, update_prices

    PriceTable.load().match("gpt-4o", provider="openai")
    assert update_prices._shared_updater.thread is None and update_prices._shared_updater.ref_count == 0
    assert data_snapshot._custom_snapshot is None  # the library's global snapshot is untouched
