"""App-thread time per span: ``BridgeSpanProcessor`` against the SDK's ``BatchSpanProcessor`` + OTLP gRPC exporter.

Same spans (agent runs of GenAI chat spans with a dozen attributes, as openai instrumentations record them), same run,
alternating rounds; both background paths deliver to real loopback receivers running in a separate process (an
OTLP gRPC TraceService and an HTTP ``/api/report`` sink), so their network work competes with the app as in life.

    .venv/bin/python bench/inprocess.py [--spans 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTRS = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 412,
    "gen_ai.usage.output_tokens": 37,
    "gen_ai.request.temperature": 0.2,
    "server.address": "api.openai.com",
    "server.port": 443,
    "gen_ai.conversation.id": "conv-1",
}


def _receivers(ready, grpc_port, http_port) -> None:  # noqa: ANN001 - runs in the child process
    """Loopback peers that accept everything: an OTLP gRPC TraceService and an Observatory-like HTTP sink."""
    from concurrent import futures
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Trace(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802, ANN001, ANN201
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Trace(), server)
    grpc_port.value = server.add_insecure_port("127.0.0.1:0")
    server.start()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802, ANN201
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):  # noqa: ANN002, ANN201
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    http_port.value = http.server_address[1]
    ready.set()
    http.serve_forever()


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bench-agent", "gen_ai.provider.name": "openai"}


def per_span(provider, n: int, calls_per_run: int = 20) -> float:  # noqa: ANN001
    """Agent runs of ``calls_per_run`` chat spans each, as an agent app records them; time per span (all kinds)."""
    tracer = provider.get_tracer("bench")
    runs = max(1, n // (calls_per_run + 1))
    t0 = time.perf_counter()
    for _ in range(runs):
        with tracer.start_as_current_span("invoke_agent bench-agent", attributes=AGENT):
            for _ in range(calls_per_run):
                with tracer.start_as_current_span("chat gpt-4o-mini", attributes=ATTRS):
                    pass
    return (time.perf_counter() - t0) / (runs * (calls_per_run + 1))


def sdk_provider(grpc_port: int):  # noqa: ANN201
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
    return provider


def bridge_provider(http_port: int):  # noqa: ANN201
    from opentelemetry.sdk.trace import TracerProvider

    import otel_bridge
    from otel_bridge.pipeline import build_inprocess

    provider = TracerProvider()
    pipeline = build_inprocess(
        observatory_url=f"http://127.0.0.1:{http_port}", observatory_api_key="bench", only=("observatory",)
    )
    provider.bridge = otel_bridge.install(provider, pipeline=pipeline)
    provider.pipeline = pipeline
    return provider


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ready, grpc_port, http_port = mp.Event(), mp.Value("i", 0), mp.Value("i", 0)
    child = mp.Process(target=_receivers, args=(ready, grpc_port, http_port), daemon=True)
    child.start()
    ready.wait(30)
    try:
        sdk, bridge, delivered = [], [], []
        for _ in range(args.rounds):
            for make, out, port in ((sdk_provider, sdk, grpc_port.value), (bridge_provider, bridge, http_port.value)):
                provider = make(port)
                per_span(provider, 1000)  # warm up
                out.append(per_span(provider, args.spans))
                provider.shutdown()
                if hasattr(provider, "bridge"):
                    delivered.append((provider.bridge.stats, provider.pipeline.stats()["exporters"]["observatory"]))
    finally:
        child.terminate()
    s, b = statistics.median(sdk), statistics.median(bridge)
    print(f"spans per round: {args.spans}, rounds: {args.rounds} (median)")
    print(f"BatchSpanProcessor + OTLP gRPC exporter: {s * 1e6:6.2f} us/span on the app thread")
    print(f"BridgeSpanProcessor (Observatory):       {b * 1e6:6.2f} us/span on the app thread")
    print(f"ratio bridge / SDK batch:                {b / s:.3f}  (goal <= 1.1)")
    queue, exporter = delivered[-1]
    print(
        f"last bridge round: span records queued {queue['queued']}, dropped {queue['dropped']}; "
        f"Observatory events sent {exporter['sent']}, dropped {exporter['dropped']}, failed {exporter['failed']}"
    )


if __name__ == "__main__":
    main()
