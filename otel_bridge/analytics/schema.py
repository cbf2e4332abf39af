"""ClickHouse tables for agent analytics: column lists, versioned migrations and DDL rendering (DESIGN decision 9).

Engine: ``ReplacingMergeTree(version)`` keyed on the deterministic ids of DESIGN decision 3, read with ``FINAL``
so a re-sent span or run is never counted twice, even before a background merge
(https://clickhouse.com/docs/engines/table-engines/mergetree-family/replacingmergetree). Rows are versioned
``2 × ns + ended``: a span's ``started`` row (start time) always loses to its end row (end time, odd).

ORDER BY ``(toStartOfHour(start), run_id)``: every query filters or buckets on a time window first (runs from/to,
cost per day, release diff), and the key must hold only what is identical in a span's start and end rows
(start time and id are; kind or model may only be known at the end) — otherwise dedup would miss them.
Replacement also only happens inside a partition, and ``toDate(start)`` is the same for both rows.
Cluster mode: Replicated* local tables sharded by ``cityHash64(trace_id)``, so every copy of a span lands on one
shard and ``FINAL`` (which runs per shard) still sees them together.

``model_prices`` (version 2) holds each (provider, model) seen with its resolved price rows, as the parallel arrays
``analytics.cost.PRICES_SQL`` ships as query parameters, so a client that talks to ClickHouse directly (Grafana)
prices spans with the same ``SPAN_COST`` expression; ``analytics.price_sync`` keeps it current. On a cluster it is
a small dimension table replicated whole to every node (no shard in its path), so a join next to a shard's spans
reads it locally.

Version 4 has ClickHouse merge a day partition into one part once it has had no insert for ``settle_seconds``
(15 min): ``FINAL`` reads such a partition without merging. Version 5 adds ``cost_rollup``, the LLM usage sums of
those settled parts that ``costs`` reads instead of their spans (``analytics.cost_rollup``; not on a cluster). Version 6 has
merges run column by column (vertical), which bounds the memory of merging the wide text columns.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 6
SETTLE_SECONDS = 900  # quiet time after which a partition is merged into one part (v4)

SPAN_COLUMNS = (
    "trace_id", "span_id", "run_id", "parent_span_id", "parent_run_id", "kind", "operation", "name",
    "service_name", "service_version", "environment", "release_id", "agent", "agent_id", "model", "provider",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "start", "end", "duration_ms", "status", "error_type", "user_id", "user_email", "conversation_id",
    "session_id", "tags", "attributes", "input_text", "output_text", "version",
)  # fmt: skip
RUN_COLUMNS = (
    "run_id", "trace_id", "root_span_id", "release_id", "agent", "tenant_id", "task_id", "environment",
    "service_name", "service_version", "start", "end", "latency_ms", "success", "error_type", "spans",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "models",
    "usage.model", "usage.provider", "usage.calls", "usage.input", "usage.cached", "usage.cache_write",
    "usage.output", "usage.reasoning", "tools", "version",
)  # fmt: skip
EVENT_COLUMNS = (
    "event_id", "name", "run_id", "thread_id", "role", "content", "rating", "comment", "timestamp", "agent",
    "user_email", "metadata", "version",
)  # fmt: skip
PRICE_COLUMNS = (
    "p_provider", "p_model", "p_source", "p_priced_as", "p_from", "p_tod", "p_tier", "p_in", "p_cached", "p_write",
    "p_out", "p_reason", "p_req", "p_version", "p_updated",
)  # fmt: skip
COLUMNS = {"spans": SPAN_COLUMNS, "runs": RUN_COLUMNS, "events": EVENT_COLUMNS, "model_prices": PRICE_COLUMNS}

_TS = "DateTime64(9, 'UTC')"
_LC = "LowCardinality(String)"

_SPANS_BODY = f"""
    trace_id String, span_id String, run_id UUID,
    parent_span_id String, parent_run_id Nullable(UUID),
    kind {_LC}, operation {_LC}, name String,
    service_name {_LC}, service_version {_LC}, environment {_LC}, release_id {_LC},
    agent {_LC}, agent_id {_LC}, model {_LC}, provider {_LC},
    input_tokens UInt64, cached_input_tokens UInt64, cache_write_tokens UInt64,
    output_tokens UInt64, reasoning_tokens UInt64,
    start {_TS}, end {_TS}, duration_ms Float64,
    status {_LC}, error_type {_LC},
    user_id String, user_email String, conversation_id String, session_id String,
    tags Array({_LC}), attributes Map(String, String),
    input_text String CODEC(ZSTD(3)){{text_ttl}}, output_text String CODEC(ZSTD(3)){{text_ttl}},
    version UInt64,
    INDEX idx_model model TYPE set(256) GRANULARITY 4,
    INDEX idx_agent agent TYPE set(256) GRANULARITY 4,
    INDEX idx_status status TYPE set(4) GRANULARITY 4,
    INDEX idx_email user_email TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_tags tags TYPE bloom_filter(0.01) GRANULARITY 4"""

_RUNS_BODY = f"""
    run_id UUID, trace_id String, root_span_id String,
    release_id {_LC}, agent {_LC}, tenant_id {_LC}, task_id String, environment {_LC},
    service_name {_LC}, service_version {_LC},
    start {_TS}, end {_TS}, latency_ms Float64, success Bool, error_type {_LC}, spans UInt32,
    input_tokens UInt64, cached_input_tokens UInt64, cache_write_tokens UInt64,
    output_tokens UInt64, reasoning_tokens UInt64,
    models Array({_LC}),
    usage Nested(model {_LC}, provider {_LC}, calls UInt32, input UInt64, cached UInt64, cache_write UInt64,
                 output UInt64, reasoning UInt64),
    tools Map(String, UInt32),
    version UInt64"""

_EVENTS_BODY = f"""
    event_id UUID, name {_LC}, run_id Nullable(UUID), thread_id String, role {_LC},
    content String CODEC(ZSTD(3)){{text_ttl_ts}}, rating {_LC}, comment String,
    timestamp {_TS}, agent {_LC}, user_email String, metadata String,
    version UInt64"""

# table → (columns, time column)
_TABLES = {"spans": (_SPANS_BODY, "start"), "runs": (_RUNS_BODY, "start"), "events": (_EVENTS_BODY, "timestamp")}


@dataclass(frozen=True, slots=True)
class DDLOptions:
    database: str = "otel_bridge"
    cluster: str | None = None
    ttl_days: int = 90
    text_ttl_days: int | None = None  # message text may be kept for less than the rows
    settle_seconds: int = SETTLE_SECONDS


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _on_cluster(o: DDLOptions) -> str:
    return f" ON CLUSTER {_ident(o.cluster)}" if o.cluster else ""


def _engine(o: DDLOptions, table: str, replacing: bool = True) -> str:
    base, args = ("ReplacingMergeTree", "version") if replacing else ("MergeTree", "")
    if not o.cluster:
        return f"{base}({args})"
    zk = f"'/clickhouse/tables/{{shard}}/{o.database}/{table}', '{{replica}}'"
    return f"Replicated{base}({zk}{', ' + args if args else ''})"


def _table_ddl(o: DDLOptions, table: str) -> list[str]:
    body, ts = _TABLES[table]
    text_ttl = f" TTL toDateTime({ts}) + INTERVAL {o.text_ttl_days} DAY" if o.text_ttl_days else ""
    body = body.replace("{text_ttl}", text_ttl).replace("{text_ttl_ts}", text_ttl)
    local = f"{table}_local" if o.cluster else table
    db = _ident(o.database)
    stmt = (
        f"CREATE TABLE IF NOT EXISTS {db}.{_ident(local)}{_on_cluster(o)} ({body}\n)\n"
        f"ENGINE = {_engine(o, local)}\n"
        f"PARTITION BY toDate({ts})\n"
        f"ORDER BY (toStartOfHour({ts}), {'event_id' if table == 'events' else 'run_id'})\n"
        f"TTL toDateTime({ts}) + INTERVAL {int(o.ttl_days)} DAY"
    )
    out = [stmt]
    if o.cluster:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{_ident(table)}{_on_cluster(o)} AS {db}.{_ident(local)}\n"
            f"ENGINE = Distributed({_ident(o.cluster)}, {db}, {_ident(local)}, cityHash64(trace_id))"
            if table != "events"
            else f"CREATE TABLE IF NOT EXISTS {db}.{_ident(table)}{_on_cluster(o)} AS {db}.{_ident(local)}\n"
            f"ENGINE = Distributed({_ident(o.cluster)}, {db}, {_ident(local)}, cityHash64(event_id))"
        )
    return out


def migrations_table_ddl(o: DDLOptions) -> list[str]:
    db = _ident(o.database)
    local = "schema_migrations_local" if o.cluster else "schema_migrations"
    out = [
        f"CREATE DATABASE IF NOT EXISTS {db}{_on_cluster(o)}",
        f"CREATE TABLE IF NOT EXISTS {db}.{_ident(local)}{_on_cluster(o)} "
        f"(version UInt32, description String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))\n"
        f"ENGINE = {_engine(o, local, replacing=False)} ORDER BY version",
    ]
    if o.cluster:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{_on_cluster(o)} AS {db}.{_ident(local)}\n"
            f"ENGINE = Distributed({_ident(o.cluster)}, {db}, {_ident(local)}, version)"
        )
    return out


def _prices_ddl(o: DDLOptions) -> list[str]:
    """One row per (provider, model) seen: ``p_source`` (override, library, unpriced), ``p_priced_as`` and the
    price rows sorted by (effective_from, time-of-day slot, tier); empty arrays = unpriced. Newest ``p_version``
    wins; read it with ``FINAL``."""
    engine = "ReplacingMergeTree(p_version)"
    if o.cluster:  # every node holds all of it: one replication path, replica names unique across shards
        engine = (f"ReplicatedReplacingMergeTree('/clickhouse/tables/all/{o.database}/model_prices', "
                  "'{shard}-{replica}', p_version)")  # fmt: skip
    ints, floats = "Array(Int64)", "Array(Float64)"
    return [
        f"CREATE TABLE IF NOT EXISTS {_ident(o.database)}.{_ident('model_prices')}{_on_cluster(o)} (\n"
        f"    p_provider String, p_model String, p_source {_LC}, p_priced_as String,\n"
        f"    p_from {ints}, p_tod {ints}, p_tier {ints},\n"
        f"    p_in {floats}, p_cached {floats}, p_write {floats}, p_out {floats}, p_reason {floats}, p_req {floats},\n"
        f"    p_version UInt64, p_updated DateTime64(3, 'UTC') DEFAULT now64(3)\n)\n"
        f"ENGINE = {engine}\nORDER BY (p_provider, p_model)"
    ]


def _span_models_ddl(o: DDLOptions) -> list[str]:
    """The (provider, model) pairs ever stored, kept by a materialised view on ``spans``: costs must price the
    pairs present before aggregating, and a ``DISTINCT`` over every span row cost as much CPU as the FINAL
    aggregation it prepares (bench/clickhouse.py). A set needs no dedup; pairs whose spans expired stay listed,
    which only adds an unused price row to the query. Backfilled from the spans already stored."""
    db, cl = _ident(o.database), _on_cluster(o)
    local, spans = ("span_models_local", "spans_local") if o.cluster else ("span_models", "spans")
    out = [
        f"CREATE TABLE IF NOT EXISTS {db}.{_ident(local)}{cl} (provider {_LC}, model {_LC})\n"
        f"ENGINE = {_engine(o, local, replacing=False).replace('MergeTree', 'ReplacingMergeTree')} "
        "ORDER BY (provider, model)",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.`span_models_mv`{cl} TO {db}.{_ident(local)} AS "
        f"SELECT DISTINCT provider, model FROM {db}.{_ident(spans)} WHERE model != ''",
    ]
    if o.cluster:
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.span_models{cl} AS {db}.{_ident(local)}\n"
            f"ENGINE = Distributed({_ident(o.cluster)}, {db}, {_ident(local)}, cityHash64(provider, model))"
        )
    out.append(f"INSERT INTO {db}.span_models SELECT DISTINCT provider, model FROM {db}.spans WHERE model != ''")
    return out


def _cost_rollup_ddl(db: str) -> str:
    """Per-part LLM usage sums of settled partitions (``analytics.cost_rollup``). Replacing on the whole group key:
    two queries filling the same part at once write identical rows, which collapse; read with ``FINAL``.
    ``marker`` rows say a part's sums are complete."""
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.`cost_rollup` (sig UInt64, part String, marker UInt8, day Date, "
        f"provider {_LC}, model {_LC}, agent {_LC}, service_name {_LC}, release {_LC}, bucket UInt64, "
        "n UInt64, i UInt64, c UInt64, w UInt64, o UInt64, r UInt64, ui Int64, uo Int64)\n"
        "ENGINE = ReplacingMergeTree ORDER BY (sig, part, marker, day, provider, model, agent, service_name, release, "
        "bucket)"
    )


def _settle_ddl(o: DDLOptions) -> list[str]:
    """Merge a partition into one part once none of its parts is younger than ``settle_seconds``: ``FINAL`` (with
    ``do_not_merge_across_partitions_select_final``) reads a partition that is one merged part as a plain read, so
    only partitions still receiving rows (today's, or a day a replay wrote into) pay for the merge at query time.
    Dedup stays ClickHouse's: a late copy makes its partition two parts again until the next settle."""
    settings = (f"min_age_to_force_merge_seconds = {int(o.settle_seconds)}, "
                "min_age_to_force_merge_on_partition_only = 1")  # fmt: skip
    db = _ident(o.database)
    return [
        f"ALTER TABLE {db}.{_ident(f'{t}_local' if o.cluster else t)}{_on_cluster(o)} MODIFY SETTING {settings}"
        for t in _TABLES
    ]


def _vertical_merges_ddl(o: DDLOptions) -> list[str]:
    """Merge column by column, whatever a merge's size: a horizontal merge holds every column of a block at once,
    and the wide text columns made chDB's inserts and merges the largest share of the serving process's memory
    (one process inserting the benchmark's rows: +238–277 MiB at the peak, +149 MiB merging vertically)."""
    settings = "vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1"
    db = _ident(o.database)
    return [
        f"ALTER TABLE {db}.{_ident(f'{t}_local' if o.cluster else t)}{_on_cluster(o)} MODIFY SETTING {settings}"
        for t in _TABLES
    ]


# version → (description, statements). Append new versions; never edit a shipped one.
def migrations(o: DDLOptions) -> list[tuple[int, str, list[str]]]:
    return [
        (1, "spans, runs and events tables", [s for t in _TABLES for s in _table_ddl(o, t)]),
        (2, "model_prices: resolved price rows per (provider, model) seen, for clients like Grafana", _prices_ddl(o)),
        (3, "span_models: the (provider, model) pairs stored, for pricing", _span_models_ddl(o)),
        (4, "settled partitions merged into one part, so FINAL reads them without merging", _settle_ddl(o)),
        (
            5,
            "cost_rollup: LLM usage sums per settled part (not on a cluster: parts are per node)",
            [] if o.cluster else [_cost_rollup_ddl(_ident(o.database))],
        ),
        (6, "merges column by column: the memory of merging wide text columns", _vertical_merges_ddl(o)),
    ]


def render_ddl(
    cluster: str | None = None,
    database: str = "otel_bridge",
    ttl_days: int = 90,
    text_ttl_days: int | None = None,
    settle_seconds: int = SETTLE_SECONDS,
) -> list[str]:
    """Every statement ``Store.open`` would run on an empty database, in order (``otel-bridge schema print``)."""
    o = DDLOptions(database, cluster, ttl_days, text_ttl_days, settle_seconds)
    return migrations_table_ddl(o) + [s for _, _, stmts in migrations(o) for s in stmts]
