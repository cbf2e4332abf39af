"""Send GenAI spans and a GenAI log record to an OTLP receiver with the real SDK exporters (gzip), then exit.

usage: send_otlp.py grpc|http HOST:PORT [--runs N] [--token T] [--no-logs] [--timeout S] [--ca-file CA [--cert-file C --key-file K]]

Spans are made by the SDK (``otel_bridge.synthetic``), collected in memory, then handed to the OTLP exporter in one
``export`` call so the exit code says whether the exporter (with its own retries) succeeded: 0 yes, 1 no.
"""

from __future__ import annotations

import argparse
import sys

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

from otel_bridge.synthetic import emit, plan_runs


def _grpc_tls(tls: argparse.Namespace) -> dict:
    """TLS as a gRPC exporter user sets it: channel credentials from the CA and the optional client pair."""
    if not tls.ca_file:
        return {"insecure": True}
    import grpc

    read = lambda path: open(path, "rb").read() if path else None  # noqa: E731
    creds = grpc.ssl_channel_credentials(read(tls.ca_file), read(tls.key_file), read(tls.cert_file))
    return {"insecure": False, "credentials": creds}


def _http_tls(tls: argparse.Namespace) -> dict:
    """TLS as an OTLP/HTTP exporter user sets it: certificate_file, client_key_file, client_certificate_file."""
    if not tls.ca_file:
        return {}
    return {"certificate_file": tls.ca_file, "client_key_file": tls.key_file, "client_certificate_file": tls.cert_file}


def _exporters(
    transport: str, endpoint: str, headers: dict[str, str], timeout: float, tls: argparse.Namespace
) -> tuple:
    if transport == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        kw = dict(endpoint=endpoint, headers=headers, timeout=timeout, compression=Compression.Gzip, **_grpc_tls(tls))
        return OTLPSpanExporter(**kw), OTLPLogExporter(**kw)
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    kw = dict(headers=headers, timeout=timeout, compression=Compression.Gzip, **_http_tls(tls))
    base = f"{'https' if tls.ca_file else 'http'}://{endpoint}"
    return OTLPSpanExporter(endpoint=f"{base}/v1/traces", **kw), OTLPLogExporter(endpoint=f"{base}/v1/logs", **kw)


def _spans(runs: int) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "send-otlp"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("send-otlp")
    for run in plan_runs(runs, seed=11, agents=("sdk-agent",), error_rate=0.0):
        emit(tracer, run)
    return list(memory.get_finished_spans())


def _logs(span) -> list:
    """One ``gen_ai.user.message`` event tied to ``span``, as instrumentations that log message content send it."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "send-otlp"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    from opentelemetry.trace import NonRecordingSpan

    context = set_span_in_context(NonRecordingSpan(span.context))
    provider.get_logger("send-otlp").emit(
        event_name="gen_ai.user.message", body={"content": "hello from the sdk"}, context=context
    )
    return list(memory.get_finished_logs())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("transport", choices=("grpc", "http"))
    p.add_argument("endpoint")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--token")
    p.add_argument("--no-logs", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--ca-file", help="TLS: verify the receiver with this CA (plaintext without it)")
    p.add_argument("--cert-file", help="TLS: client certificate (mutual TLS)")
    p.add_argument("--key-file", help="TLS: client key (mutual TLS)")
    args = p.parse_args()
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    span_exporter, log_exporter = _exporters(args.transport, args.endpoint, headers, args.timeout, args)
    spans = _spans(args.runs)
    ok = span_exporter.export(spans) == SpanExportResult.SUCCESS
    n_logs = 0
    if ok and not args.no_logs:
        logs = _logs(next(s for s in spans if s.name.startswith("chat")))
        n_logs = len(logs)
        ok = log_exporter.export(logs) == LogRecordExportResult.SUCCESS
    print(f"exported spans={len(spans)} logs={n_logs} ok={ok}", flush=True)
    span_exporter.shutdown()
    log_exporter.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
