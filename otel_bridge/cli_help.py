"""``--help`` text for people: a plain description and worked examples on every command (no reST markup).

Kept apart from the parsers so the examples read as one page, and so a test can check that every command has some.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
otel-bridge turns OpenTelemetry traces of AI agents into cost and latency analytics (ClickHouse),
FlowX Observatory events and FlightDeck runs.

Start with:  otel-bridge serve     (OTLP on 127.0.0.1:4317 and :4318, dashboard at http://127.0.0.1:4318/)
then:        otel-bridge demo      (synthetic agent traffic, then cost, latency and release-diff tables)"""

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "": [
        ("otel-bridge serve", "receive traces, store them, serve the API and dashboard"),
        ("otel-bridge doctor", "check config, ports, storage, exporters; says what to fix"),
        ("otel-bridge runs --status error", "the latest failed runs"),
        ("otel-bridge <command> --help", "options and examples of one command"),
    ],
    "inspect": [
        ("otel-bridge inspect trace.pb", "the agent spans recognised in a captured OTLP request"),
        ("otel-bridge inspect --json a.json b.pb | jq .model", "one JSON object per span"),
    ],
    "serve": [
        ("otel-bridge serve", "packaged config, data in ./.otel-bridge/data"),
        ("otel-bridge serve --config my-bridge.yaml", "your pipeline (check it first with config check)"),
        ("OTEL_BRIDGE_TOKEN=s3cret otel-bridge serve", "require a bearer token on every request"),
    ],
    "demo": [
        ("otel-bridge demo", "60 agent runs per release to the running server (one is started if none runs)"),
        ("otel-bridge demo --runs 300", "more traffic for the dashboard"),
    ],
    "doctor": [
        ("otel-bridge doctor", "check the packaged config and everything it points at"),
        ("otel-bridge doctor --config my-bridge.yaml --json", "the same checks as JSON (exit 1 if any failed)"),
    ],
    "runs": [
        ("otel-bridge runs", "the 50 latest runs, newest first"),
        ("otel-bridge runs --agent support-agent --status error", "one agent's failures"),
        ("otel-bridge runs --model gpt-4o --min-latency-s 5", "slow calls of one model"),
        ("otel-bridge runs --min-total-cost 0.10 --order=-total_cost", "the most expensive runs (whole subtree)"),
        ("otel-bridge runs --from 2026-05-01T00:00:00Z --wide", "every column; --json for full values"),
    ],
    "costs": [
        ("otel-bridge costs", "cost and tokens by model at current prices"),
        ("otel-bridge costs --by agent --from 2026-05-01T00:00:00Z", "by agent since a date"),
        ("otel-bridge costs --by day --json", "a daily series for a script"),
    ],
    "latency": [
        ("otel-bridge latency", "p50/p90/p95/p99 of every span kind, by model"),
        ("otel-bridge latency --by agent --kind agent", "agent run latency by agent"),
    ],
    "diff": [
        ("otel-bridge diff 1.4.0 1.5.0", "cost, tokens, latency and error rate per run, with confidence"),
    ],
    "prices": [
        ("otel-bridge prices check", "each model seen and what priced it: override, library or unpriced"),
        ("otel-bridge prices show gpt-4o", "the price rows of a model, with their dates and tiers"),
    ],
    "prices check": [
        ("otel-bridge prices check", "each model seen and its source; unpriced ones first (their calls cost $0)"),
        ("otel-bridge prices check --prices my-prices.yaml", "with your own overrides"),
    ],
    "prices show": [
        ("otel-bridge prices show claude-sonnet-4-5-20250929", "rows that apply, the one in force marked *"),
        ("otel-bridge prices show o3 --at 2025-06-01T00:00:00Z", "the price in force at a date"),
        ("otel-bridge prices show gemini-2.5-pro --input-tokens 300000", "a long prompt's tier"),
    ],
    "prices update": [
        ("otel-bridge prices update", "fetch genai-prices' current data beside the data dir; the next start uses it"),
    ],
    "prices sync": [
        ("otel-bridge prices sync", "model_prices (what Grafana joins) equal to the price table for every model seen"),
        ("otel-bridge prices sync --prices my-prices.yaml", "after editing overrides, with serve stopped"),
    ],
    "schema": [("otel-bridge schema print --cluster prod", "the ClickHouse DDL for a cluster")],
    "schema print": [
        ("otel-bridge schema print", "the DDL the embedded store runs"),
        ("otel-bridge schema print --cluster prod --ttl-days 30", "ON CLUSTER, Replicated and Distributed tables"),
    ],
    "grafana": [
        ("otel-bridge grafana dashboard > otel-bridge.json", "the Grafana dashboard (costs from model_prices)")
    ],
    "grafana dashboard": [
        ("otel-bridge grafana dashboard > otel-bridge.json", "import it, or drop it in a provisioned folder"),
        ("otel-bridge grafana dashboard --database obs", "for tables in another ClickHouse database"),
    ],
    "dead-letters": [("otel-bridge dead-letters list", "what each destination refused, counted")],
    "dead-letters list": [("otel-bridge dead-letters list --data-dir ./.otel-bridge/data", "count per destination")],
    "dead-letters show": [
        ("otel-bridge dead-letters show observatory --limit 5", "the server's message and the refused item"),
    ],
    "dead-letters retry": [
        ("otel-bridge dead-letters retry observatory", "re-send once the destination is fixed"),
        ("otel-bridge dead-letters retry clickhouse --config my-bridge.yaml", "with serve stopped (it owns chDB)"),
    ],
    "dead-letters purge": [("otel-bridge dead-letters purge flightdeck", "delete what you have read and given up on")],
    "config": [("otel-bridge config check my-bridge.yaml", "validate a config file")],
    "config check": [
        ("otel-bridge config check", "the packaged config"),
        ("otel-bridge config check my-bridge.yaml", "every problem listed, one line each; exit 1 if any"),
    ],
}


def epilog(path: str) -> str:
    width = max(len(cmd) for cmd, _ in EXAMPLES[path])
    lines = [f"  {cmd.ljust(width)}   {why}" for cmd, why in EXAMPLES[path]]
    return "examples:\n" + "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def apply(parser: argparse.ArgumentParser, path: str = "") -> list[str]:
    """Give ``parser`` and every sub-command its examples; returns the command paths that have none."""
    missing = []
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if path in EXAMPLES:
        parser.epilog = epilog(path)
    else:
        missing.append(path)
    for name, sub in _subcommands(parser).items():
        missing += apply(sub, f"{path} {name}".strip())
    return missing
