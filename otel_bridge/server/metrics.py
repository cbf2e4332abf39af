"""Prometheus exposition of every component's own counters, read at scrape time (no second bookkeeping)."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _Snapshot:
    """A one-shot collector over a stats snapshot (``Pipeline.stats()`` plus the receivers')."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:  # prometheus_client's collector protocol
        s = self.stats
        received = CounterMetricFamily(
            "otel_bridge_receiver_items",
            "Items per receiver, signal and outcome",
            labels=["receiver", "signal", "outcome"],
        )
        for (receiver, signal), counts in _receiver_counts(s.get("receivers", {})):
            for outcome, value in counts.items():
                received.add_metric([receiver, signal, outcome], value)
        yield received
        pipeline = CounterMetricFamily(
            "otel_bridge_pipeline", "Pipeline counters (spans converted, logs, late spans...)", labels=["counter"]
        )
        for name, value in s.get("pipeline", {}).items():
            pipeline.add_metric([name], value)
        yield pipeline
        runs = s.get("runs", {})
        assembled = CounterMetricFamily("otel_bridge_runs", "Run assembly counters", labels=["counter"])
        for name, value in runs.items():
            if name not in ("in_flight", "held_bytes"):
                assembled.add_metric([name], value)
        yield assembled
        unknown = CounterMetricFamily(
            "otel_bridge_unknown_operations",
            "Spans whose gen_ai.operation.name the recogniser does not know (never billed as LLM calls), by name",
            labels=["operation"],
        )
        for name, value in s.get("unknown_operations", {}).items():
            unknown.add_metric([name], value)
        yield unknown
        yield GaugeMetricFamily(
            "otel_bridge_runs_in_flight", "Traces held for assembly", value=runs.get("in_flight", 0)
        )
        yield GaugeMetricFamily("otel_bridge_runs_held_bytes", "Bytes of the spans held for assembly (as received)",
                                value=runs.get("held_bytes", 0))  # fmt: skip
        rss = GaugeMetricFamily(
            "otel_bridge_process_rss_bytes", "Resident memory per process", labels=["process", "pid"]
        )
        peak = GaugeMetricFamily(
            "otel_bridge_process_peak_rss_bytes", "Peak resident memory per process", labels=["process", "pid"]
        )
        anon = GaugeMetricFamily(
            "otel_bridge_process_anon_rss_bytes",
            "Anonymous resident memory per process (allocated, not mapped library code)",
            labels=["process", "pid"],
        )
        cpu = CounterMetricFamily(
            "otel_bridge_process_cpu_seconds", "CPU time (user + system) per process", labels=["process", "pid"]
        )
        for name, usage in s.get("processes", {}).items():
            labels = [name, str(usage["pid"])]
            rss.add_metric(labels, usage["rss_bytes"])
            peak.add_metric(labels, usage["peak_rss_bytes"])
            anon.add_metric(labels, usage.get("anon_rss_bytes", 0))
            cpu.add_metric(labels, usage.get("cpu_seconds", 0.0))
        yield rss
        yield peak
        yield anon
        yield cpu
        workers = s.get("workers")
        if workers:  # service.workers > 1
            yield GaugeMetricFamily("otel_bridge_workers_alive", "Worker processes running", value=workers["alive"])
            yield CounterMetricFamily(
                "otel_bridge_worker_restarts", "Worker processes restarted after they died", value=workers["restarts"]
            )
        items = CounterMetricFamily(
            "otel_bridge_exporter_items", "Items per exporter and outcome", labels=["exporter", "outcome"]
        )
        depth = GaugeMetricFamily(
            "otel_bridge_exporter_queue_depth", "Items waiting in an exporter's queue", labels=["exporter"]
        )
        for exporter, counts in s.get("exporters", {}).items():
            for outcome, value in counts.items():
                if outcome == "queue_depth":
                    depth.add_metric([exporter], value)
                else:
                    items.add_metric([exporter, outcome], value)
        yield items
        yield depth


def _receiver_counts(receivers: dict[str, Any]):  # noqa: ANN202
    """``{"otlp_grpc": {"traces": {...counts}}}`` → ((receiver, signal), counts); flat counts get signal ''."""
    for receiver, by_signal in receivers.items():
        if by_signal and all(isinstance(v, dict) for v in by_signal.values()):
            for signal, counts in by_signal.items():
                yield (receiver, signal), {k: v for k, v in counts.items() if isinstance(v, (int, float))}
        else:
            yield (receiver, ""), {k: v for k, v in by_signal.items() if isinstance(v, (int, float))}


_STATUS = {"VmRSS:": "rss_bytes", "VmHWM:": "peak_rss_bytes", "RssAnon:": "anon_rss_bytes"}


def process_usage(pid: int | None = None) -> dict[str, Any]:
    """Current and peak resident memory of a process and its CPU seconds so far (Linux ``/proc``; elsewhere this
    process's own figures from ``getrusage``). The anonymous part of the resident memory is what the process
    allocated, as opposed to mapped library code (chDB's engine maps ~380 MiB of shared, reclaimable file pages
    into the process that opens the store). CPU per span by process is what sizing reads (``docs/SIZING.md``)."""
    pid = os.getpid() if pid is None else pid
    out: dict[str, Any] = {"pid": pid, "rss_bytes": 0, "peak_rss_bytes": 0, "anon_rss_bytes": 0, "cpu_seconds": 0.0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key = _STATUS.get(line.split(None, 1)[0] if line.strip() else "")
                if key is not None:
                    out[key] = int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        out["cpu_seconds"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        if pid == os.getpid():  # ru_maxrss is KiB on Linux, bytes on macOS; /proc is missing on the latter
            usage = resource.getrusage(resource.RUSAGE_SELF)
            out["peak_rss_bytes"] = out["rss_bytes"] = out["anon_rss_bytes"] = usage.ru_maxrss
            out["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return out


def metrics_text(stats: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats))
    return generate_latest(registry)
