"""A chDB data dir reopened after its writer closed keeps every row (chDB allows one engine path at a time)."""

from __future__ import annotations

from pathlib import Path

from ch_data import make_dataset

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import clickhouse_exporter, run_row, span_row
from otel_bridge.pricing import PriceTable


def test_reopen_keeps_every_row(tmp_path: Path) -> None:
    data = make_dataset(n_traces=20, seed=5)
    prices = PriceTable.load()
    config = StoreConfig(data_dir=str(tmp_path / "data"))
    writer = Store.open(config)
    exporter = clickhouse_exporter(writer)
    exporter.offer_many([("spans", span_row(a)) for a in data.stored] + [("runs", run_row(r)) for r in data.runs])
    assert exporter.shutdown(10)
    before = (q.runs(writer, prices, limit=10_000), q.costs(writer, prices))
    writer.close()

    reader = Store.open(config)
    try:
        assert reader.migrate() == 0
        after = (q.runs(reader, prices, limit=10_000), q.costs(reader, prices))
        assert after == before and len(after[0]) == len(data.stored)
        assert len(q.diff(reader, prices, "1.0.0", "1.1.0")) == 7
        assert q.diff(reader, prices, "1.0.0", "1.1.0")[0]["baseline"] == 10
    finally:
        reader.close()


def test_exporter_from_a_config_owns_its_store(tmp_path: Path) -> None:
    data = make_dataset(n_traces=3, seed=9)
    config = StoreConfig(data_dir=str(tmp_path / "owned"))
    exporter = clickhouse_exporter(config)
    exporter.offer_many([("spans", span_row(a)) for a in data.stored])
    assert exporter.shutdown(10)  # flushes, then closes the store it opened
    with Store.open(config) as reader:
        assert len(q.runs(reader, PriceTable.load(), limit=100)) == len(data.stored)
