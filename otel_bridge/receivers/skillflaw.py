"""The SkillFlaw receiver: polls a SkillFlaw / Langflow monitor API and feeds what it finds to the pipeline as OTLP.

Every poll builds standard ``ExportTraceServiceRequest`` bodies (``skillflaw_otlp``) and hands them to
``receivers.otlp.receive`` — the same write-ahead spool, counters and submit step as an OTLP/HTTP request — so
redaction, run assembly and every exporter apply with no code of their own. Per flow and per kind, watermarks and
the ids already imported persist in a JSON file next to the data dir; they advance only after the spool accepted
the request, so a restart imports nothing twice (and deterministic ids de-duplicate what a crash repeats).

Errors: server down → a log line and exponential backoff; 401/403 → one clear line naming ``SKILLFLAW_API_KEY``;
a malformed item → skipped and counted (``otel_bridge_receiver_items{receiver="skillflaw",outcome="refused"}``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from otel_bridge.receivers.otlp import ReceiverStats, Refused, SpanConsumer, receive
from otel_bridge.receivers.skillflaw_client import (
    NotOffered,
    SkillFlawClient,
    SkillFlawError,
    Unauthorized,
    Unavailable,
)
from otel_bridge.receivers.skillflaw_items import (
    Item,
    Malformed,
    covering,
    merge,
    parse_build,
    parse_message,
    parse_trace,
    parse_transaction,
    synthetic_runs,
)  # fmt: skip
from otel_bridge.receivers.skillflaw_otlp import FlowRun, export_request, message_span, resource_of, run_spans

log = logging.getLogger(__name__)

TRANSPORT = "skillflaw"
MAX_SPANS_PER_REQUEST = 2000
MIN_TRACE_OVERLAP_NS = 60 * 1_000_000_000
KEEP_RUNS = 2000  # recent runs per flow remembered for late items and message links


@dataclass(frozen=True)
class SkillFlawSettings:
    base_url: str
    api_key: str = field(default="", repr=False)
    flows: tuple[str, ...] = ()  # empty: every flow GET /api/v1/flows/ lists
    poll_interval: float = 10.0
    edit_window: float = 3600.0  # messages this far behind the newest are re-read so an edit is seen
    state_dir: Path = Path(".otel-bridge/data.skillflaw")
    max_backoff: float = 300.0

    @property
    def settle_ns(self) -> int:
        """How long an item no flow run holds waits for one (the run may still be going) before it forms its own."""
        return int(max(30.0, 3 * self.poll_interval) * 1e9)


class PollState:
    """Watermarks and imported ids per flow, in one JSON file written atomically after each accepted request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            self.data = {}
        except (OSError, orjson.JSONDecodeError):
            log.warning(
                "skillflaw: state file %s unreadable; starting over (ids are deterministic, so no duplicates)", path
            )
            self.data = {}
        self.data.setdefault("flows", {})

    def flow(self, flow_id: str) -> dict[str, Any]:
        f = self.data["flows"].setdefault(flow_id, {})
        for kind in ("traces", "transactions", "messages"):
            f.setdefault(kind, {"watermark": 0, "seen": {}})
        f["traces"].setdefault("overlap", MIN_TRACE_OVERLAP_NS)
        f.setdefault("builds", {"seen": []})
        f.setdefault("runs", [])
        return f

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.data))
        os.replace(tmp, self.path)


def state_path(state_dir: Path, base_url: str) -> Path:
    return state_dir / f"{hashlib.blake2b(base_url.rstrip('/').encode(), digest_size=6).hexdigest()}.json"


@dataclass
class _Batch:
    """What one flow's poll found: spans to send and the state changes to apply once they are accepted."""

    runs: list[FlowRun] = field(default_factory=list)
    late: list[FlowRun] = field(default_factory=list)  # components of runs emitted by an earlier poll
    messages: list[Any] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    commits: list[Callable[[], None]] = field(default_factory=list)


class SkillFlawReceiver:
    """A poller thread; ``poll_once`` is the unit tests and the thread share."""

    def __init__(self, settings: SkillFlawSettings, consumer: SpanConsumer, stats: ReceiverStats,
                 client: SkillFlawClient | None = None, clock: Callable[[], int] = time.time_ns) -> None:  # fmt: skip
        self.settings, self.consumer, self.stats = settings, consumer, stats
        self.client = client or SkillFlawClient(settings.base_url, settings.api_key)
        self.state = PollState(state_path(settings.state_dir, settings.base_url))
        self.clock = clock
        self.traces_offered: bool | None = None
        self.counters = {"polls": 0, "poll_errors": 0, "requests_refused": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._names: dict[str, str] = {}
        self._backoff = 0.0

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otel-bridge-skillflaw", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.close()

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            delay = self.settings.poll_interval
            try:
                self.poll_once()
                self._backoff = 0.0
            except Unauthorized as exc:
                log.error("skillflaw: %s", exc)
                delay = self.settings.max_backoff
            except (Unavailable, Refused, SkillFlawError) as exc:
                delay = self._next_backoff()
                log.warning("skillflaw: poll failed (%s); retrying in %.0fs", exc, delay)
            except Exception:  # noqa: BLE001 - a mapping bug must not end the receiver
                delay = self._next_backoff()
                log.exception("skillflaw: poll failed; retrying in %.0fs", delay)

    def _next_backoff(self) -> float:
        self.counters["poll_errors"] += 1
        self._backoff = min(self.settings.max_backoff, max(self.settings.poll_interval, self._backoff * 2 or 1.0))
        return self._backoff

    # ------------------------------------------------------------------------------------------- one poll

    def poll_once(self) -> dict[str, int]:
        """Poll every flow once; returns items imported per kind. Raises the client's errors (the loop backs off)."""
        self.counters["polls"] += 1
        total: dict[str, int] = {}
        for flow_id in self._flows():
            batch = self._poll_flow(flow_id)
            self._send(flow_id, batch)
            for k, n in batch.counts.items():
                total[k] = total.get(k, 0) + n
        return total

    def _flows(self) -> list[str]:
        listed = {f["id"]: str(f.get("name") or f["id"]) for f in self._list_flows()}
        self._names.update(listed)
        return list(self.settings.flows) or sorted(listed)

    def _list_flows(self) -> list[dict[str, Any]]:
        try:
            return self.client.flows()
        except NotOffered:
            if not self.settings.flows:
                raise SkillFlawError(
                    "GET /api/v1/flows/ is not offered: list the flow ids in receivers.skillflaw.flows"
                ) from None
            return []

    def _count(self, kind: str, outcome: str, n: int = 1) -> None:
        if n:
            accepted = n if outcome == "ok" else 0
            self.stats.record(TRANSPORT, kind, outcome, received=n, accepted=accepted, refused=n - accepted)

    def _malformed(self, kind: str, flow_id: str, exc: Exception) -> None:
        log.warning("skillflaw: flow %s: a malformed %s item was skipped: %s", flow_id, kind, exc)
        self._count(kind, "refused")

    def _poll_flow(self, flow_id: str) -> _Batch:
        st, batch, now = self.state.flow(flow_id), _Batch(), self.clock()
        name = self._names.get(flow_id, flow_id)
        batch.runs = self._new_runs(flow_id, name, st, batch)
        recent = [FlowRun(k, flow_id, name, s, e, session_id=sid, synthetic=syn) for k, s, e, sid, syn in st["runs"]]
        uncovered: list[Item] = []
        late: dict[str, FlowRun] = {}
        held: list[Item] = []
        items, current_builds = self._new_items(flow_id, st)
        for item in items:
            run = covering(batch.runs, flow_id, item.end_ns)
            if run is not None:
                merge(run, item)
            elif (old := covering(recent, flow_id, item.end_ns)) is not None:
                merge(late.setdefault(old.key, FlowRun(old.key, flow_id, name, old.start_ns, old.end_ns)), item)
            elif now - item.end_ns >= self.settings.settle_ns:
                uncovered.append(item)
            else:  # its run may still be going: wait for its trace, read it again next poll
                held.append(item)
                continue
            batch.counts[item.kind] = batch.counts.get(item.kind, 0) + 1
        batch.runs += synthetic_runs(uncovered, name)
        batch.late = list(late.values())
        held_ids = {(i.kind, i.id) for i in held}
        imported = [i for i in items if (i.kind, i.id) not in held_ids]
        batch.commits.append(lambda: self._commit_items(st, imported, held, current_builds))
        batch.commits.append(lambda: self._remember_runs(st, batch.runs))
        batch.messages = self._new_messages(flow_id, st, batch, batch.runs + recent)
        batch.counts["runs"] = len(batch.runs)
        return batch

    # ------------------------------------------------------------------------------------------- per kind

    def _bad(self, st: dict[str, Any], kind: str, flow_id: str, raw: Any, exc: Exception) -> None:
        """Count a malformed item once, however often a page brings it back."""
        key = hashlib.blake2b(orjson.dumps(raw, default=str, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
        bad = st.setdefault("malformed", [])
        if key not in bad:
            bad.append(key)
            del bad[:-1000]
            self._malformed(kind, flow_id, exc)

    def _new_runs(self, flow_id: str, name: str, st: dict[str, Any], batch: _Batch) -> list[FlowRun]:
        """Runs from ``/monitor/traces`` since the watermark minus the longest run seen (a trace is written when
        its run ends, so a run that started before the watermark can appear after it)."""
        if self.traces_offered is False:
            return []
        ts = st["traces"]
        since = ts["watermark"] - ts["overlap"] if ts["watermark"] else 0
        try:
            summaries = list(
                self.client.traces(flow_id, datetime.fromtimestamp(since / 1e9, UTC) if since > 0 else None)
            )
        except NotOffered:
            log.info(
                "skillflaw: %s offers no /monitor/traces; runs are formed from builds and transactions",
                self.settings.base_url,
            )
            self.traces_offered = False
            return []
        self.traces_offered = True
        runs = []
        for summary in summaries:
            key = summary.get("id") if isinstance(summary, dict) else None
            if key in ts["seen"]:
                continue
            try:
                run = parse_trace(summary, self._trace_detail(key), name)
            except Malformed as exc:
                self._bad(st, "runs", flow_id, summary, exc)
                continue
            runs.append(run)
        batch.commits.append(lambda: self._commit_runs(ts, runs))
        return runs

    def _trace_detail(self, key: Any) -> Any:
        try:
            return self.client.trace(str(key)) if key else None
        except NotOffered:
            return None  # deleted since it was listed: the summary still makes a run

    @staticmethod
    def _commit_runs(ts: dict[str, Any], runs: list[FlowRun]) -> None:
        for run in runs:
            ts["seen"][run.key] = run.start_ns
            ts["watermark"] = max(ts["watermark"], run.start_ns)
            ts["overlap"] = max(ts["overlap"], run.end_ns - run.start_ns + MIN_TRACE_OVERLAP_NS)
        floor = ts["watermark"] - ts["overlap"]
        ts["seen"] = {k: v for k, v in ts["seen"].items() if v >= floor}

    def _new_items(self, flow_id: str, st: dict[str, Any]) -> tuple[list[Item], set[str]]:
        """Transactions since the watermark and builds not yet imported, parsed (malformed ones counted); and the
        build ids the server holds now (it keeps only the latest per component)."""
        items: list[Item] = []
        tx = st["transactions"]
        for raw in self.client.transactions(flow_id, tx["watermark"]):
            try:
                item = parse_transaction(raw, flow_id)
            except Malformed as exc:
                self._bad(st, "transactions", flow_id, raw, exc)
                continue
            if item.end_ns >= tx["watermark"] and item.id not in tx["seen"]:
                items.append(item)
        builds = self.client.builds(flow_id)
        seen_builds = set(st["builds"]["seen"])
        current: set[str] = set()
        for vertex_id, entries in builds.items():
            for raw in entries if isinstance(entries, list) else [entries]:
                try:
                    item = parse_build(vertex_id, raw, flow_id)
                except Malformed as exc:
                    self._bad(st, "builds", flow_id, raw, exc)
                    continue
                current.add(item.id)
                if item.id not in seen_builds:
                    items.append(item)
        return items, current

    @staticmethod
    def _commit_items(st: dict[str, Any], imported: list[Item], held: list[Item], current_builds: set[str]) -> None:
        tx = st["transactions"]
        for item in imported:
            if item.kind == "transactions":
                tx["seen"][item.id] = item.end_ns
                tx["watermark"] = max(tx["watermark"], item.end_ns)
        held_tx = [i.end_ns for i in held if i.kind == "transactions"]
        if held_tx:
            tx["watermark"] = min([tx["watermark"], *held_tx])
        tx["seen"] = {k: v for k, v in tx["seen"].items() if v >= tx["watermark"]}
        seen = set(st["builds"]["seen"]) & current_builds
        st["builds"]["seen"] = sorted(seen | {i.id for i in imported if i.kind == "builds"})

    @staticmethod
    def _remember_runs(st: dict[str, Any], runs: list[FlowRun]) -> None:
        st["runs"] += [[r.key, r.start_ns, r.end_ns, r.session_id, r.synthetic] for r in runs]
        st["runs"].sort(key=lambda r: r[1])
        del st["runs"][:-KEEP_RUNS]

    def _new_messages(self, flow_id: str, st: dict[str, Any], batch: _Batch, runs: list[FlowRun]) -> list[Any]:
        """New messages, and messages whose text changed (an edit: same id, next revision)."""
        ms = st["messages"]
        window = int(self.settings.edit_window * 1e9)
        stop = ms["watermark"] - window if ms["watermark"] else 0
        out, marks = [], []
        for raw in self.client.messages(flow_id, stop):
            try:
                m = parse_message(raw, flow_id)
            except Malformed as exc:
                self._bad(st, "messages", flow_id, raw, exc)
                continue
            digest = hashlib.blake2b(f"{m.role}\x1f{m.session_id}\x1f{m.text}".encode(), digest_size=8).hexdigest()
            prev = ms["seen"].get(m.id)
            if m.time_ns < stop or (prev is not None and prev[1] == digest):
                continue
            m.revision = prev[2] + 1 if prev is not None else 0
            m.run = covering([r for r in runs if r.synthetic or r.session_id == m.session_id], m.flow_id, m.time_ns)
            out.append(m)
            marks.append((m.id, [m.time_ns, digest, m.revision]))
        batch.counts["messages"] = len(out)

        def commit() -> None:
            ms["seen"].update(marks)
            ms["watermark"] = max([ms["watermark"], *(v[0] for _, v in marks)])
            floor = ms["watermark"] - window
            ms["seen"] = {k: v for k, v in ms["seen"].items() if v[0] >= floor}

        batch.commits.append(commit)
        return out

    # ------------------------------------------------------------------------------------------- hand-off

    def _send(self, flow_id: str, batch: _Batch) -> None:
        """Spans → OTLP requests → ``receive`` (spool, then pipeline); state advances only once all were accepted."""
        spans = [s for r in batch.runs for s in run_spans(r)]
        spans += [s for r in batch.late for s in run_spans(r, root=False)]
        spans += [message_span(m) for m in batch.messages]
        resource = resource_of(flow_id, self._names.get(flow_id, flow_id))
        for i in range(0, len(spans), MAX_SPANS_PER_REQUEST):
            body = export_request([(resource, spans[i : i + MAX_SPANS_PER_REQUEST])])
            receive(self.consumer, self.stats, TRANSPORT, "traces", body, "proto")
        for commit in batch.commits:
            commit()
        self.state.save()
        for kind, n in batch.counts.items():
            self._count(kind, "ok", n)


def skillflaw_from_config(cfg: Any, consumer: SpanConsumer, stats: ReceiverStats) -> SkillFlawReceiver | None:
    """The poller of a ``BridgeConfig`` (None when off); its state lives next to the ClickHouse data dir."""
    if not cfg.skillflaw_enabled():
        return None
    sf = cfg.receivers.skillflaw
    data_dir = Path(cfg.exporters.clickhouse.data_dir).expanduser().resolve()
    settings = SkillFlawSettings(
        sf.base_url, sf.api_key_value, tuple(sf.flows), sf.poll_interval, sf.edit_window,
        state_dir=data_dir.with_name(data_dir.name + ".skillflaw"),
    )  # fmt: skip
    return SkillFlawReceiver(settings, consumer, stats)
