"""A plain OTel-instrumented agent app: no otel-bridge import. Run under ``opentelemetry-instrument``."""

import sys

from opentelemetry import trace

from otel_bridge.synthetic import emit, plan_runs

n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
tracer = trace.get_tracer("instrumented-app")
for run in plan_runs(n, seed=3, agents=("app-agent",), error_rate=0.0):
    emit(tracer, run)
print("app done", flush=True)

if len(sys.argv) > 2 and sys.argv[2] == "--feedback":
    import otel_bridge

    otel_bridge.track_event("feedback", run_id="run-from-app", rating="positive", comment="great")
