"""Items imported per second by the SkillFlaw receiver from the replayed Langflow recording.

The recording (7 runs, 17 transactions, 5 builds, 14 messages) is scaled ``--copies`` times: every run, transaction
and message is copied with fresh ids and timestamps shifted by a minute per copy, so paging and the trace-detail
fetches grow like a busier server's would. One first poll imports everything through a real pipeline (no exporter:
the figure is the receiver's — HTTP, parsing, OTLP encoding, decode and run assembly).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from skillflaw.harness import load  # noqa: E402
from skillflaw.replay import ReplayServer  # noqa: E402

from otel_bridge.pipeline import Pipeline, PipelineOptions  # noqa: E402
from otel_bridge.receivers.otlp import ReceiverStats  # noqa: E402
from otel_bridge.receivers.skillflaw import SkillFlawReceiver, SkillFlawSettings  # noqa: E402
from otel_bridge.receivers.skillflaw_client import parse_timestamp  # noqa: E402


def _shift(value: str, minutes: int) -> str:
    return (parse_timestamp(value) + timedelta(minutes=minutes)).isoformat()


def scaled(copies: int) -> dict:
    rec = load("langflow.json")
    extra = []
    for i in range(1, copies):
        for e in copy.deepcopy(rec["exchanges"]):
            path, body = e["request"]["path"], e["response"]["body"]
            new = lambda x, i=i: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{x}:{i}"))  # noqa: E731
            if e["response"]["status"] != 200:
                continue
            if path == "/api/v1/monitor/messages":
                for m in body:
                    m["id"], m["timestamp"] = new(m["id"]), _shift(m["timestamp"], i)
            elif path == "/api/v1/monitor/transactions":
                for t in body["items"]:
                    t["id"], t["timestamp"] = new(t["id"]), _shift(t["timestamp"], i)
            elif path == "/api/v1/monitor/traces":
                for t in body["traces"]:
                    t["id"], t["startTime"] = new(t["id"]), _shift(t["startTime"], i)
            elif path.startswith("/api/v1/monitor/traces/"):
                e["request"]["path"] = path.rsplit("/", 1)[0] + "/" + new(path.rsplit("/", 1)[1])
                body["id"], body["startTime"] = new(body["id"]), _shift(body["startTime"], i)
                if body.get("endTime"):
                    body["endTime"] = _shift(body["endTime"], i)
                for s in body["spans"]:
                    s["startTime"], s["endTime"] = _shift(s["startTime"], i), _shift(s["endTime"], i)
                    for c in s["children"]:
                        c["startTime"], c["endTime"] = _shift(c["startTime"], i), _shift(c["endTime"], i)
            else:
                continue
            extra.append(e)
    rec["exchanges"] = rec["exchanges"] + extra
    return rec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=20)
    args = parser.parse_args()
    rec = scaled(args.copies)
    with ReplayServer(rec) as srv, tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline({}, PipelineOptions(wait=0.05, max_wait=0.2))
        receiver = SkillFlawReceiver(
            SkillFlawSettings(srv.url, rec["api_key"], state_dir=Path(tmp)), pipeline, ReceiverStats()
        )
        t0 = time.perf_counter()
        counts = receiver.poll_once()
        elapsed = time.perf_counter() - t0
        pipeline.shutdown(5)
    items = sum(v for k, v in counts.items())
    print(
        f"{counts} in {elapsed:.2f}s: {items / elapsed:,.0f} items/s, {receiver.client.requests} requests, "
        f"{pipeline.counters['spans']} spans"
    )


if __name__ == "__main__":
    main()
