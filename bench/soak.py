"""Soak (issue 10): ``otel-bridge serve`` under mixed load for ``--duration`` seconds (default 600) while the
Observatory sink flaps (down 30 s, up 30 s) and one poison span a second arrives (a non-string service.name, or an
out-of-range timestamp that is refused per span). Prints spans acknowledged, delivered per destination,
dead-lettered, lost (must be 0) and the server's RSS at start and end.

    .venv/bin/python bench/soak.py --duration 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import orjson  # noqa: E402
from bridge_server import start_bridge  # noqa: E402
from delivery_helpers import llm_span, request  # noqa: E402
from observatory_sink import ObservatorySink  # noqa: E402

from otel_bridge.analytics.store import Store, StoreConfig  # noqa: E402


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


class Load:
    """Posts requests of ``batch`` spans (JSON and gzip) at about ``rate`` spans/s; counts what was acknowledged."""

    def __init__(self, url: str, rate: int, batch: int = 50) -> None:
        self.url, self.rate, self.batch = url, rate, batch
        self.acknowledged: set[int] = set()  # span numbers (one span per trace)
        self.refused_requests = self.refused_spans = self.poison = 0
        self._next = 0
        self._stop = threading.Event()

    def run(self, until: float) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            last_poison = 0.0
            while time.monotonic() < until:
                t0 = time.monotonic()
                ids = list(range(self._next, self._next + self.batch))
                self._next += self.batch
                spans = [llm_span(i) for i in ids]
                resource, refused = None, None
                if t0 - last_poison >= 1.0:  # one poison span a second, alternating the two kinds
                    last_poison, self.poison = t0, self.poison + 1
                    if self.poison % 2:  # stored, its values coerced
                        resource = {"service.name": 7, "service.version": 1.5}
                    else:  # refused per span in partial_success
                        spans[0], refused = llm_span(ids[0], start_ns=2**64 - 2_000_000), ids[0]
                self._post(c, request(spans, resource), ids, refused)
                time.sleep(max(0.0, self.batch / self.rate - (time.monotonic() - t0)))

    def _post(self, c: httpx.Client, body: bytes, ids: list[int], refused: int | None) -> None:
        while True:
            r = c.post("/v1/traces", content=body, headers={"content-type": "application/json"})
            if r.status_code == 503:  # backpressure before acknowledging: the client retries, as the SDKs do
                self.refused_requests += 1
                time.sleep(float(r.headers.get("retry-after", "1")))
                continue
            r.raise_for_status()
            rejected = int(orjson.loads(r.content).get("partialSuccess", {}).get("rejectedSpans", 0))
            assert rejected == (refused is not None), (rejected, refused)
            self.refused_spans += rejected
            self.acknowledged.update(i for i in ids if i != refused)
            return


def _dead(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--rate", type=int, default=300, help="spans per second offered (default 300)")
    ap.add_argument("--flap", type=float, default=30.0, help="Observatory down/up period in seconds (default 30)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="otel-bridge-soak-"))
    sink = ObservatorySink()
    sink.start()
    bridge = start_bridge(tmp, {"FLOWX_OBSERVATORY_API_URL": sink.url, "FLOWX_OBSERVATORY_API_KEY": sink.api_key})
    rss_start = _rss_mb(bridge.proc.pid)
    load = Load(bridge.url, args.rate)
    until = time.monotonic() + args.duration
    worker = threading.Thread(target=load.run, args=(until,), daemon=True)
    worker.start()
    flaps = 0
    while time.monotonic() < until:
        time.sleep(min(args.flap, max(0.0, until - time.monotonic())))
        if time.monotonic() >= until:
            break
        (sink.stop if flaps % 2 == 0 else sink.start)()
        flaps += 1
    worker.join()
    if flaps % 2:
        sink.start()  # back up for the drain
    expected_events = {(f"{i + 1:032x}", n) for i in load.acknowledged for n in ("llm_start", "llm_end")}
    drain_until = time.monotonic() + 300
    got: set = set()
    while time.monotonic() < drain_until:
        got = {(e["metadata"]["trace_id"], e["name"]) for e in list(sink.events)}
        dead_obs = {
            (e["item"]["metadata"]["trace_id"], e["item"]["name"])
            for e in _dead(tmp / "data" / "dead-letters" / "observatory.jsonl")
        }
        if expected_events <= got | dead_obs:
            break
        time.sleep(1)
    rss_end = _rss_mb(bridge.proc.pid)
    bridge.stop(120)
    sink.stop()
    with Store.open(StoreConfig(data_dir=str(tmp / "data"))) as store:
        stored = {
            int(r["trace_id"], 16) - 1 for r in store.query("SELECT DISTINCT trace_id FROM otel_bridge.spans FINAL")
        }
    dead_ch = _dead(tmp / "data" / "dead-letters" / "clickhouse.jsonl")
    dead_obs_items = _dead(tmp / "data" / "dead-letters" / "observatory.jsonl")
    lost_ch = len(load.acknowledged - stored) - len(dead_ch)
    lost_obs = len(expected_events - got - dead_obs)
    print(f"duration           {args.duration:.0f} s, offered ~{args.rate} spans/s, sink flapped {flaps} times")
    print(f"acknowledged       {len(load.acknowledged)} spans ({load.refused_spans} refused per span, "
          f"{load.refused_requests} requests answered 503 and retried, {load.poison} poison spans)")  # fmt: skip
    print(
        f"delivered          clickhouse {len(load.acknowledged & stored)} spans, observatory {len(got & expected_events)} events"
    )
    print(f"dead-lettered      clickhouse {len(dead_ch)}, observatory {len(dead_obs_items)}")
    print(f"lost               clickhouse {max(0, lost_ch)}, observatory {lost_obs}")
    print(f"RSS                start {rss_start:.0f} MiB, end {rss_end:.0f} MiB")
    print(f"data               {tmp}")
    sys.exit(1 if lost_ch > 0 or lost_obs else 0)


if __name__ == "__main__":
    main()
