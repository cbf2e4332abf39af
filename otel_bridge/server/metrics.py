"""Prometheus exposition of every component's own counters, read at scrape time (no second bookkeeping)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _Snapshot:
    """A one-shot collector over a stats snapshot (``Pipeline.stats()`` plus the receivers')."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        s = self.stats
        received = CounterMetricFamily("otel_bridge_receiver_items", "Items per receiver, signal and outcome", labels=["receiver", "signal", "outcome"])
        for (receiver, signal), counts in _receiver_counts(s.get("receivers", {})):
            for outcome, value in counts.items():
                received.add_metric([receiver, signal, outcome], value)
        yield received
        pipeline = CounterMetricFamily("otel_bridge_pipeline", "Pipeline counters (spans converted, logs, late spans...)", labels=["counter"])
        for name, value in s.get("pipeline", {}).items():
            pipeline.add_metric([name], value)
        yield pipeline
        runs = s.get("runs", {})
        assembled = CounterMetricFamily("otel_bridge_runs", "Run assembly counters", labels=["counter"])
        for name, value in runs.items():
            if name != "in_flight":
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
        yield GaugeMetricFamily("otel_bridge_runs_in_flight", "Traces held for assembly", value=runs.get("in_flight", 0))
        items = CounterMetricFamily("otel_bridge_exporter_items", "Items per exporter and outcome", labels=["exporter", "outcome"])
        depth = GaugeMetricFamily("otel_bridge_exporter_queue_depth", "Items waiting in an exporter's queue", labels=["exporter"])
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


def metrics_text(stats: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats))
    return generate_latest(registry)
