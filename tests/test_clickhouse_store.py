"""Store, schema and exporter on the real engine: no duplicates ever visible, started→ended, DDL, lock errors."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ch_data import BASE_NS, bridge, iso, llm_attrs, make_dataset

from otel_bridge.analytics import queries as q
from otel_bridge.analytics.cost import span_pairs
from otel_bridge.analytics.schema import (
    SCHEMA_VERSION,
    SPAN_COLUMNS,
    DDLOptions,
    migrations,
    migrations_table_ddl,
    render_ddl,
)  # fmt: skip
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.clickhouse import ClickHouseSender, clickhouse_exporter, event_row, run_row, span_row
from otel_bridge.pricing import PriceTable
from otel_bridge.semconv import recognise_trace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chs") / "data"


@pytest.fixture(scope="module")
def store(data_dir: Path):
    s = Store.open(StoreConfig(data_dir=str(data_dir)))
    yield s
    s.close()


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def _count(store: Store, table: str, where: str = "1") -> int:
    return store.client.query(f"SELECT count() FROM {store.table(table)} FINAL WHERE {where}").result_rows[0][0]


def test_resent_spans_and_runs_are_counted_once_immediately(store: Store, prices: PriceTable) -> None:
    data = make_dataset(n_traces=12, seed=3)
    sender = ClickHouseSender(store)
    items = [("spans", span_row(a)) for a in data.stored] + [("runs", run_row(r)) for r in data.runs]
    sender.send(items)
    first_runs = len(q.runs(store, prices, limit=10_000))
    first_costs = q.costs(store, prices)
    first_diff = q.diff(store, prices, "1.0.0", "1.1.0")
    for _ in range(2):  # re-sent twice, each as its own insert (its own part), queried at once: no merge ran
        sender.send(items)
        assert len(q.runs(store, prices, limit=10_000)) == first_runs == len(data.stored)
        assert q.costs(store, prices) == first_costs
        assert q.diff(store, prices, "1.0.0", "1.1.0") == first_diff
        assert _count(store, "runs") == len(data.runs)
    raw = store.client.query(f"SELECT count() FROM {store.table('spans')}").result_rows[0][0]
    assert raw >= 2 * len(data.stored)  # the copies are really there; FINAL is what hides them


def test_started_row_is_replaced_by_its_end(store: Store, prices: PriceTable) -> None:
    attrs = llm_attrs("openai", "gpt-4o-inflight", 1200, 300)
    (a,) = recognise_trace([bridge(7000, 1, None, "chat", BASE_NS + 5 * 3600 * 10**9, 2500, attrs)])
    sender = ClickHouseSender(store)
    sender.send([("spans", span_row(a, status="started"))])
    (row,) = q.runs(store, prices, status="started", model="gpt-4o-inflight")
    assert row["run_id"] == a.run_id and row["latency_s"] == 0
    sender.send([("spans", span_row(a))])
    assert q.runs(store, prices, status="started", model="gpt-4o-inflight") == []
    (done,) = q.runs(store, prices, model="gpt-4o-inflight")
    assert done["status"] == "success" and done["latency_s"] == pytest.approx(2.5)
    sender.send([("spans", span_row(a, status="started"))])  # a late duplicate start never wins over the end
    assert [r["status"] for r in q.runs(store, prices, model="gpt-4o-inflight")] == ["success"]


def test_events_dedup_on_their_deterministic_id(store: Store) -> None:
    ts = iso(BASE_NS + 3_723_456_000_000)
    ev = {"name": "feedback", "run_id": "5f0c7c1e-1111-4a4a-9b9b-000000000001", "timestamp": ts,
          "rating": "positive", "comment": "good", "metadata": {"agent": "triage", "user_email": "a@b.c"}}  # fmt: skip
    chat = {"name": "chat", "thread_id": "cust-42", "role": "user", "content": "hi", "timestamp": ts}
    rows = [("events", event_row(ev)), ("events", event_row(chat))]
    ClickHouseSender(store).send(rows)
    ClickHouseSender(store).send(rows)
    assert event_row(ev) == event_row(dict(ev))
    assert _count(store, "events") == 2
    (row,) = store.query(f"SELECT * FROM {store.table('events')} FINAL WHERE name = 'feedback'")
    assert (row["rating"], row["agent"], row["user_email"]) == ("positive", "triage", "a@b.c")
    assert str(row["run_id"]) == ev["run_id"] and row["timestamp"].microsecond == 456_000


def test_through_the_batch_engine(store: Store) -> None:
    data = make_dataset(n_traces=6, seed=11, first_trace=1000)
    exporter = clickhouse_exporter(store, interval=0.05)
    assert isinstance(exporter, BatchExporter)
    exporter.offer_many([("spans", span_row(a, release_id="rel-engine")) for a in data.stored])
    assert exporter.force_flush(10)
    assert exporter.shutdown(5)
    assert _count(store, "spans", "release_id = 'rel-engine'") == len(data.stored)
    assert exporter.stats()["sent"] == len(data.stored)


def test_schema_is_versioned_and_idempotent(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == 0
    for stmt in render_ddl(None, store.database):  # the printed single-node DDL runs as is, again
        store.client.command(stmt)
    tables = {r[0] for r in store.client.query(f"SHOW TABLES FROM `{store.database}`").result_rows}
    assert {"spans", "runs", "events", "schema_migrations", "model_prices", "cost_rollup"} <= tables
    engine = store.client.query(
        "SELECT engine, partition_key, sorting_key FROM system.tables WHERE database = {db:String} AND name = 'spans'",
        parameters={"db": store.database},
    ).result_rows[0]
    assert engine == ("ReplacingMergeTree", "toDate(start)", "toStartOfHour(start), run_id")


def _settle_setting(store: Store, table: str) -> int | None:
    """The table's min_age_to_force_merge_seconds (schema v4), if set, read from its definition."""
    ddl = store.client.query(f"SHOW CREATE TABLE {store.table(table)}").result_rows[0][0]
    found = re.search(r"min_age_to_force_merge_seconds = (\d+)", ddl)
    assert found is None or "min_age_to_force_merge_on_partition_only = 1" in ddl
    return int(found.group(1)) if found else None


def test_partitions_settle_into_one_part(store: Store) -> None:
    """Schema v4: every replacing table merges a quiet partition whole, after the configured time."""
    s = Store(store.client, StoreConfig(database="settle_120", settle_seconds=120))  # chDB: one directory a process
    assert s.migrate() == SCHEMA_VERSION
    assert [_settle_setting(s, t) for t in ("spans", "runs", "events")] == [120, 120, 120]
    assert _settle_setting(s, "model_prices") is None


def test_v1_store_upgrades_with_its_models_backfilled(store: Store, prices: PriceTable) -> None:
    """A store created before schema v3 gets span_models filled from the spans it already holds, and spans
    stored after the upgrade reach it through the view: costs price both."""
    o = DDLOptions(database="upgrade_v1")
    for stmt in migrations_table_ddl(o) + migrations(o)[0][2]:
        store.client.command(stmt)
    store.client.insert("`upgrade_v1`.`schema_migrations`", [[1, "v1"]], column_names=["version", "description"])
    old = Store(store.client, StoreConfig(database="upgrade_v1"))

    def put(trace: int, model: str) -> None:
        spans = recognise_trace([bridge(trace, trace, None, "chat", BASE_NS, 900, llm_attrs("openai", model, 100, 10))])
        old.insert("spans", [span_row(a).values() for a in spans], column_names=SPAN_COLUMNS)

    put(901, "gpt-4o")
    assert span_pairs(old) == [("openai", "gpt-4o")]  # a v1 schema (managed by hand): read from the spans
    assert old.migrate() == 5 and old.schema_version() == SCHEMA_VERSION  # v2 prices, v3 span_models, v4 settle, v5, v6
    for table in ("spans", "runs", "events"):  # v6: merges column by column
        ddl = old.client.query(f"SHOW CREATE TABLE {old.table(table)}").result_rows[0][0]
        assert "vertical_merge_algorithm_min_rows_to_activate = 1" in ddl, table
    assert _settle_setting(old, "spans") == _settle_setting(old, "runs") == _settle_setting(old, "events") == 900
    put(902, "gpt-4o-mini")
    assert set(span_pairs(old)) == {("openai", "gpt-4o"), ("openai", "gpt-4o-mini")}
    costs = {r["model"]: r for r in q.costs(old, prices)}
    assert set(costs) == {"gpt-4o", "gpt-4o-mini"}
    assert all(r["cost"] > 0 and r["unpriced_calls"] == 0 for r in costs.values())


def test_cluster_ddl_rendered() -> None:
    ddl = render_ddl("prod", "obs", ttl_days=30, text_ttl_days=7)
    text = "\n".join(ddl)
    assert all(" ON CLUSTER `prod`" in s for s in ddl if not s.startswith("INSERT"))  # backfill: via Distributed
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/obs/span_models_local', '{replica}')" in text
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/obs/spans_local', '{replica}', version)" in text
    assert "ENGINE = Distributed(`prod`, `obs`, `spans_local`, cityHash64(trace_id))" in text
    assert "`obs`.`runs_local`" in text and "`obs`.`events_local`" in text
    assert (
        "INTERVAL 30 DAY" in text and "output_text String CODEC(ZSTD(3)) TTL toDateTime(start) + INTERVAL 7 DAY" in text
    )
    # the price table is whole on every node (no shard in its path), so a shard's join reads it locally
    assert ("ReplicatedReplacingMergeTree('/clickhouse/tables/all/obs/model_prices', '{shard}-{replica}', p_version)"
            in text and "Distributed(`prod`, `obs`, `model_prices" not in text)  # fmt: skip
    settle = [s for s in ddl if "MODIFY SETTING min_age" in s]
    assert [s.split(" ON CLUSTER")[0] for s in settle] == [
        f"ALTER TABLE `obs`.`{t}_local`" for t in ("spans", "runs", "events")
    ]
    vertical = [s for s in ddl if "MODIFY SETTING vertical_merge" in s]  # v6, on every local table too
    assert [s.split(" ON CLUSTER")[0] for s in vertical] == [s.split(" ON CLUSTER")[0] for s in settle]
    assert all(
        "min_age_to_force_merge_seconds = 900, min_age_to_force_merge_on_partition_only = 1" in s for s in settle
    )
    single = "\n".join(render_ddl(None))
    assert "ON CLUSTER" not in single and "Distributed" not in single and "Replicated" not in single


def test_second_process_gets_a_clear_error(data_dir: Path, store: Store) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from otel_bridge.analytics.store import Store, StoreConfig, StoreInUseError
        try:
            Store.open(StoreConfig(data_dir={str(data_dir)!r}))
        except StoreInUseError as exc:
            print("IN USE:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "IN USE: data dir" in out.stdout and "in use by another process" in out.stdout, out.stderr[-2000:]
