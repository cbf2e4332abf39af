"""``model_prices`` holds exactly the (provider, model) pairs seen, each with the rows the analytics would ship
(``price_parameters``); a sync writes only new or changed pairs, re-prices after an override change, and is done by
serve's loop, by the CLI when it opens the store and by ``otel-bridge prices sync``."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path

import orjson
import pytest
from ch_data import make_dataset

from otel_bridge.analytics.cost import price_parameters, span_pairs
from otel_bridge.analytics.price_sync import PriceSync, SyncLoop, resolve, sync_prices
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.cli import main
from otel_bridge.exporters.clickhouse import ClickHouseSender, span_row, spans_items
from otel_bridge.pricing import PriceTable

OVERRIDES = (
    "providers:\n  mine:\n    models:\n      mystery-model: {input: 4, output: 16}\n      o3: {input: 1, output: 3}\n"
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("price_sync") / "data")  # chDB: one directory per process, a database a test


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def _store(data_dir: str, database: str, seed: int = 3) -> Store:
    store = Store.open(StoreConfig(data_dir=data_dir, database=database))
    ClickHouseSender(store).send(spans_items(make_dataset(n_traces=15, seed=seed).spans))
    return store


def _table(store: Store) -> dict[tuple[str, str], dict]:
    rows = store.query(f"SELECT * FROM {store.table('model_prices')} FINAL")
    return {(r["p_provider"], r["p_model"]): r for r in rows}


def _new_model_rows(provider: str, model: str, first_trace: int) -> list:
    """LLM spans of traces not stored yet, carrying a model not seen yet."""
    data = make_dataset(n_traces=3, seed=9, first_trace=first_trace)
    rows = [span_row(a) for a in data.stored if a.kind == "llm"]
    return [("spans", dataclasses.replace(r, model=model, provider=provider)) for r in rows]


def test_sync_writes_exactly_the_pairs_seen(data_dir: str, prices: PriceTable) -> None:
    with _store(data_dir, "sync_pairs") as store:
        seen = set(span_pairs(store))
        written = sync_prices(store, prices)
        assert {(r["provider"], r["model"]) for r in written} == seen
        table = _table(store)
        assert table.keys() == seen
        params = price_parameters(prices, seen)  # what the analytics ship for the same pairs
        shipped = {(p, m): i for i, (p, m) in enumerate(zip(params["pp"], params["pm"], strict=True))}
        for pair, row in table.items():
            if pair not in shipped:  # unpriced: an empty row
                assert (row["p_source"], row["p_from"], row["p_in"]) == ("unpriced", [], []), pair
                continue
            i = shipped[pair]
            for col, key in (("p_from", "pf"), ("p_tod", "pd"), ("p_tier", "pt"), ("p_in", "pi"), ("p_cached", "pc"),
                             ("p_write", "pw"), ("p_out", "po"), ("p_reason", "pr"), ("p_req", "pq")):  # fmt: skip
                assert list(row[col]) == params[key][i], (pair, col)
            assert row["p_source"] == prices.resolve(pair[1], pair[0]).source
        assert {p for p, r in table.items() if r["p_source"] == "unpriced"} == {("acme", "mystery-model-1")}
        assert sync_prices(store, prices) == []  # nothing changed: nothing written
        assert store.query(f"SELECT count() AS n FROM {store.table('model_prices')}")[0]["n"] == len(seen)

        sync = PriceSync(store, prices)
        ClickHouseSender(store).send(_new_model_rows("openai", "gpt-4.1-mini", 5000))
        assert [(r["provider"], r["model"], r["source"]) for r in sync.sync(full=False)] == [
            ("openai", "gpt-4.1-mini", "library")]  # fmt: skip
        assert _table(store).keys() == set(span_pairs(store)) == seen | {("openai", "gpt-4.1-mini")}


def test_an_override_change_re_prices(data_dir: str, prices: PriceTable, tmp_path: Path) -> None:
    with _store(data_dir, "sync_overrides", seed=4) as store:
        seen = set(span_pairs(store))
        sync_prices(store, prices)
        path = tmp_path / "prices.yaml"
        path.write_text(OVERRIDES)
        edited = PriceTable.load(path)
        changed = {pair for pair in seen if resolve(prices, *pair) != resolve(edited, *pair)}
        assert changed == {("acme", "mystery-model-1"), ("openai", "o3")}
        assert {(r["provider"], r["model"]) for r in sync_prices(store, edited)} == changed
        table = _table(store)
        assert table.keys() == seen
        mystery, o3 = table[("acme", "mystery-model-1")], table[("openai", "o3")]
        assert (mystery["p_source"], mystery["p_in"], mystery["p_out"]) == ("override", [4.0], [16.0])
        assert (o3["p_source"], o3["p_priced_as"], o3["p_out"]) == ("override", "mine/o3", [3.0])
        # the override removed: back to the library, and the unknown model to an empty row
        assert {(r["provider"], r["model"]) for r in sync_prices(store, prices)} == changed
        table = _table(store)
        assert table[("acme", "mystery-model-1")]["p_from"] == [] and table[("openai", "o3")]["p_source"] == "library"


def test_serve_loop_writes_new_pairs_as_they_appear(data_dir: str, prices: PriceTable) -> None:
    with _store(data_dir, "sync_loop", seed=5) as store:
        loop = SyncLoop(store, prices, interval=0.05).start()
        try:
            _wait(lambda: _table(store).keys() == set(span_pairs(store)))
            ClickHouseSender(store).send(_new_model_rows("anthropic", "claude-haiku-4-5", 6000))
            _wait(lambda: ("anthropic", "claude-haiku-4-5") in _table(store))
        finally:
            loop.stop()
        assert not any(t.name == "otel-bridge-prices" and t.is_alive() for t in threading.enumerate())
        assert _table(store).keys() == set(span_pairs(store))


def _wait(ready, limit: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + limit
    while not ready():
        assert time.monotonic() < deadline, "model_prices never caught up"
        time.sleep(0.05)


def test_cli_writes_when_it_opens_the_store(data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    database = "sync_cli"
    _store(data_dir, database, seed=6).close()
    conn = ["--data-dir", data_dir, "--database", database]
    path = tmp_path / "prices.yaml"
    path.write_text(OVERRIDES)
    assert main(["costs", *conn, "--prices", str(path), "--json"]) == 0  # a what-if price table writes nothing
    capsys.readouterr()
    with Store.open(StoreConfig(data_dir=data_dir, database=database)) as store:
        assert _table(store) == {}
    assert main(["costs", *conn, "--json"]) == 0  # the configured table: every pair seen written
    capsys.readouterr()
    assert main(["prices", "sync", *conn, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []  # already current
    assert main(["prices", "sync", *conn, "--prices", str(path), "--json"]) == 0
    written = orjson.loads(capsys.readouterr().out)
    assert {(r["provider"], r["model"], r["source"]) for r in written} == {
        ("acme", "mystery-model-1", "override"), ("openai", "o3", "override")}  # fmt: skip
    with Store.open(StoreConfig(data_dir=data_dir, database=database)) as store:
        assert _table(store).keys() == set(span_pairs(store))


def test_serve_owns_the_sync(data_dir: str, tmp_path: Path) -> None:
    """``serve``'s service (built, listeners not started): its price table is the API's and it fills model_prices
    for the spans that reach its store, then stops the loop before the store closes."""
    from otel_bridge.config import load_config
    from otel_bridge.serve import Service

    cfg_path = tmp_path / "bridge.yaml"
    grpc, http = _free(), _free()  # not listened on: only the service is built
    cfg_path.write_text(f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "{grpc}"}}, http: {{endpoint: "{http}"}}}}}}}}
exporters:
  clickhouse: {{data_dir: "{data_dir}", database: sync_serve}}
""")
    service = Service.build(load_config(str(cfg_path)))
    try:
        assert service.price_sync is not None and service.prices is not None
        ClickHouseSender(service.store).send(spans_items(make_dataset(n_traces=6, seed=7).spans))
        _wait(lambda: _table(service.store).keys() == set(span_pairs(service.store)) != set())
    finally:
        service.stop(timeout=10)
    assert not service.price_sync._thread.is_alive()


def _free() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"
