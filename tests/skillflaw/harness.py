"""What the SkillFlaw tests share: the bridge config with the poller on, an in-process pipeline on chDB, and
expected values read straight from a recording (never from the receiver's output)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge_server import TEST_CONFIG

from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.exporters.clickhouse import clickhouse_exporter
from otel_bridge.pipeline import Pipeline, PipelineOptions
from otel_bridge.receivers.otlp import ReceiverStats
from otel_bridge.receivers.skillflaw import SkillFlawReceiver, SkillFlawSettings
from otel_bridge.receivers.skillflaw_client import parse_timestamp, to_ns

FIXTURES = Path(__file__).parent.parent / "fixtures" / "skillflaw"
ROLE = {"User": "user", "Machine": "assistant"}

# The recordings are months old when replayed: keep rows for ten years so ClickHouse's TTL does not drop them.
SERVE_CONFIG = (
    TEST_CONFIG.replace("batch: {interval: 200ms}}", "batch: {interval: 200ms}, ttl: 3650d, text_ttl: 3650d}")
    .replace(
        '    auth: {bearer_token: "${env:OTEL_BRIDGE_TOKEN:-}"}\n',
        '    auth: {bearer_token: "${env:OTEL_BRIDGE_TOKEN:-}"}\n'
        '  skillflaw: {base_url: "${env:SKILLFLAW_BASE_URL}", api_key: "${env:SKILLFLAW_API_KEY:-}",'
        ' flows: "${env:SKILLFLAW_FLOWS:-}", poll_interval: 500ms}\n',
    )
    .replace("receivers: [otlp]", "receivers: [otlp, skillflaw]")
)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def responses(rec: dict[str, Any], path: str, snapshot: str = "exchanges") -> list[tuple[dict, Any]]:
    """(query, body) of every recorded 200 answer for ``path``."""
    return [(e["request"].get("query", {}), e["response"]["body"]) for e in rec[snapshot]
            if e["request"]["path"].rstrip("/") == path.rstrip("/") and e["response"]["status"] == 200]  # fmt: skip


def recorded_messages(rec: dict[str, Any], snapshot: str = "exchanges") -> dict[str, dict]:
    out: dict[str, dict] = {}
    for _, body in responses(rec, "/api/v1/monitor/messages", snapshot):
        out.update((m["id"], m) for m in body)
    return out


def ns(value: str) -> int:
    return to_ns(parse_timestamp(value))


@dataclass
class Local:
    """A real pipeline (ClickHouse exporter on chDB) fed by a SkillFlaw receiver polled by the test."""

    pipeline: Pipeline
    store: Store
    stats: ReceiverStats
    state_dir: Path

    def receiver(self, url: str, key: str, flows: tuple[str, ...] = ()) -> SkillFlawReceiver:
        settings = SkillFlawSettings(url, key, flows, poll_interval=0.2, state_dir=self.state_dir)
        return SkillFlawReceiver(settings, self.pipeline, self.stats)

    def flush(self) -> None:
        self.pipeline.assembler.flush()
        self.pipeline.force_flush(10)

    def chats(self) -> list[dict[str, Any]]:
        return self.store.query(
            f"SELECT toString(event_id) AS event_id, role, content, thread_id, toString(run_id) AS run_id, metadata,"
            f" toUnixTimestamp64Nano(timestamp) AS ns FROM {self.store.table('events')} FINAL WHERE name = 'chat'"
            f" ORDER BY timestamp, event_id"
        )

    def spans(self) -> list[dict[str, Any]]:
        return self.store.query(
            f"SELECT trace_id, span_id, parent_span_id, kind, name, agent, model, input_tokens, output_tokens, status,"
            f" duration_ms, session_id, toUnixTimestamp64Nano(start) AS start_ns FROM {self.store.table('spans')} FINAL"
            f" ORDER BY start, span_id"
        )

    def runs(self) -> list[dict[str, Any]]:
        return self.store.query(
            f"SELECT trace_id, agent, latency_ms, success, spans, input_tokens, output_tokens, models"
            f" FROM {self.store.table('runs')} FINAL ORDER BY start"
        )


def local_pipeline(tmp: Path) -> Local:
    store = Store.open(StoreConfig(data_dir=str(tmp / "data"), ttl_days=3650))
    exporter = clickhouse_exporter(store, interval=0.1)
    pipeline = Pipeline({"clickhouse": exporter}, PipelineOptions(wait=0.05, max_wait=0.2))
    return Local(pipeline, store, ReceiverStats(), tmp / "state")


def query_in_subprocess(data_dir: Path, sql_template: str) -> list[dict[str, Any]]:
    """Query a stopped bridge's chDB directory from a fresh process (chDB serves one data dir per process, and the
    test process may hold another). ``{events}`` etc. in the template name the tables."""
    import subprocess
    import sys

    code = (
        "import sys, orjson\n"
        "from otel_bridge.analytics.store import Store, StoreConfig\n"
        "with Store.open(StoreConfig(data_dir=sys.argv[1])) as s:\n"
        "    sql = sys.argv[2].format(**{t: s.table(t) for t in ('spans', 'runs', 'events')})\n"
        "    sys.stdout.write(orjson.dumps(s.query(sql), default=str).decode())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(data_dir), sql_template], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
