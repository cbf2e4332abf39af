"""Per-part sums of settled day partitions, so ``costs`` reads a few thousand rows instead of every LLM span.

A day partition that has settled (schema v4: one active part, made by a merge) holds each span once: the merge of
a ReplacingMergeTree keeps one row per key, and ``FINAL`` itself reads such a partition as it is. Its LLM usage
summed per (day, provider, model, agent, service, release, price bucket) is therefore exact for as long as that
part is the partition's only part. ``cost_rollup`` keeps those sums per part name and per bucket layout
(``sig``: the price boundaries the buckets were cut at), filled on first use. ``costs`` reads the sums of the
partitions that are settled and wholly inside its window, and ``FINAL`` over the rest (today's partition, a day a
replay just wrote into). The partition list is read before and after the query: if any covered partition changed
parts in between, the answer is computed again without the sums. A new copy of an old span makes its partition
two parts, so its sums stop being used until it settles again and gets new ones.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from clickhouse_connect.driver.exceptions import DatabaseError

from otel_bridge.analytics.store import Store

DAY_NS = 86_400 * 10**9
RELEASE = "if(release_id != '', release_id, service_version)"
SUMS = (
    "count() AS n, sum(input_tokens) AS i, sum(cached_input_tokens) AS c, sum(cache_write_tokens) AS w, "
    "sum(output_tokens) AS o, sum(reasoning_tokens) AS r, "
    "sum(greatest(toInt64(input_tokens) - toInt64(cached_input_tokens) - toInt64(cache_write_tokens), 0)) AS ui, "
    "sum(greatest(toInt64(output_tokens) - toInt64(reasoning_tokens), 0)) AS uo"
)
# costs' key → the rollup column it reads
KEYS = {"model": "model", "provider": "provider", "agent": "agent", "service": "service_name",
        "release": "release", "day": "toString(day)"}  # fmt: skip


def signature(bucket_sql: str) -> int:
    """The bucket layout's id: the SQL that cuts the buckets names every boundary."""
    return int.from_bytes(hashlib.sha256(json.dumps(bucket_sql).encode()).digest()[:8], "big")


PART_ID = "concat(name, ':', hash_of_all_files)"  # a part name may come back after TRUNCATE and a restart


def settled(store: Store) -> dict[str, str]:
    """partition id → ``name:content hash`` of its only active part, for the partitions of ``spans`` that are one
    merged part."""
    sql = f"""SELECT partition_id, any({PART_ID}), count(), max(level) FROM system.parts
        WHERE active AND database = {{db:String}} AND table = 'spans' GROUP BY partition_id"""
    rows = store.client.query(sql, parameters={"db": store.database}).result_rows
    return {pid: part for pid, part, n, level in rows if n == 1 and level > 0}


def _inside(partition_id: str, from_ns: int | None, to_ns: int | None) -> bool:
    """Whether the day partition ``YYYYMMDD`` (``toDate(start)``, UTC) lies wholly inside the inclusive window."""
    try:
        day = int(datetime.strptime(partition_id, "%Y%m%d").replace(tzinfo=UTC).timestamp()) * 10**9
    except ValueError:
        return False
    return (from_ns is None or from_ns <= day) and (to_ns is None or day + DAY_NS - 1 <= to_ns)


def cover(store: Store, bucket_sql: str, from_ns: int | None, to_ns: int | None) -> tuple[dict[str, str], int]:
    """The settled partitions inside the window whose sums exist (filled now when missing), and the layout id.
    Empty where the store cannot (a cluster: parts are per node; a schema without the table)."""
    if store.config.cluster:
        return {}, 0
    sig = signature(bucket_sql)
    try:
        parts = {pid: p for pid, p in settled(store).items() if _inside(pid, from_ns, to_ns)}
        if not parts:
            return {}, sig
        done_sql = (
            f"SELECT DISTINCT part FROM {store.table('cost_rollup')} FINAL WHERE sig = {{s:UInt64}} AND marker = 1"
        )
        done = {r[0] for r in store.client.query(done_sql, parameters={"s": sig}).result_rows}
        missing = sorted(set(parts.values()) - done)
        if missing:
            _fill(store, bucket_sql, sig, missing)
    except DatabaseError:  # no rollup table (schema managed by hand) or no system.parts access
        return {}, sig
    return parts, sig


def _fill(store: Store, bucket_sql: str, sig: int, parts: list[str]) -> None:
    """Sum each part's finished LLM spans (no FINAL: a merged part holds each key once), then mark it complete."""
    t = store.table("cost_rollup")
    names = {"names": [p.split(":", 1)[0] for p in parts], "parts": parts}
    store.client.command(
        f"""INSERT INTO {t} (sig, part, marker, day, provider, model, agent, service_name, release, bucket,
            n, i, c, w, o, r, ui, uo)
        SELECT {sig}, transform(toString(_part), {{names:Array(String)}}, {{parts:Array(String)}}, '') AS part_id,
            0, toDate(start) AS day, provider, model, agent, service_name, {RELEASE} AS release,
            {bucket_sql} AS bucket, {SUMS}
        FROM {store.table("spans")} WHERE _part IN {{names:Array(String)}} AND kind = 'llm' AND status != 'started'
        GROUP BY part_id, day, provider, model, agent, service_name, release, bucket""",
        parameters=names,
    )
    store.client.command(
        f"INSERT INTO {t} (sig, part, marker) SELECT {sig}, arrayJoin({{parts:Array(String)}}), 1",
        parameters={"parts": parts},
    )
    # sums of parts merged away or dropped since are never read again (a query that used one sees its part change
    # and recomputes without sums); dropped here, when new ones are added, so the table stays the size of the store
    store.client.command(
        f"""ALTER TABLE {t} DELETE WHERE part NOT IN (SELECT {PART_ID} FROM system.parts
            WHERE active AND database = {{db:String}} AND table = 'spans')
        SETTINGS mutations_sync = 1""",
        parameters={"db": store.database},
    )


def branch(store: Store, by: str) -> str:
    """The rollup's rows for ``costs``, shaped like its per-bucket rows (key, provider, model, bucket, sums);
    ``unknown`` counts calls of a (provider, model) missing from the pairs the query was priced for."""
    known = "model = '' OR has(arrayZip({c_pp:Array(String)}, {c_pm:Array(String)}), (provider, model))"
    return f"""SELECT toString({KEYS[by]}) AS key, provider, model, bucket, n, i, c, w, o, r, ui, uo,
            if({known}, 0, n) AS unknown
        FROM {store.table("cost_rollup")} FINAL
        WHERE sig = {{c_sig:UInt64}} AND marker = 0 AND part IN {{c_parts:Array(String)}}"""


def unchanged(store: Store, covered: dict[str, str]) -> bool:
    """Every covered partition is still the same single part (so the query read exactly what the sums cover)."""
    now = settled(store)
    return all(now.get(pid) == part for pid, part in covered.items())
