"""The otel-bridge command line: serve, demo, doctor, inspect and the analytics commands."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from otel_bridge import cli_help, commands, config, deadletters, doctor, grafana


def _inspect(args: argparse.Namespace) -> int:
    from otel_bridge import inspect

    try:
        spans = inspect.agent_spans(Path(p) for p in args.files)
    except inspect.InspectError as exc:
        print(f"otel-bridge inspect: {exc}", file=sys.stderr)
        return 2
    if args.explain:
        inspect.print_explain(spans, as_json=args.json)
    elif args.json:
        inspect.print_json_lines(spans)
    else:
        inspect.print_table(spans)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from otel_bridge.analytics.store import StoreError
    from otel_bridge.config import ConfigError, load_config
    from otel_bridge.serve import serve

    try:
        cfg = load_config(args.config, data_dir=args.data_dir)
        logging.getLogger().setLevel(cfg.service.telemetry.log_level.upper() if not args.verbose else "DEBUG")
        serve(cfg)
    except ConfigError as exc:
        print(f"otel-bridge serve: invalid config {exc}", file=sys.stderr)
        return 1
    except (StoreError, OSError, ValueError) as exc:
        print(f"otel-bridge serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from otel_bridge.demo import run_demo

    try:
        return run_demo(args.config, args.data_dir, args.runs)
    except ValueError as exc:  # e.g. an https server the demo's plaintext tour cannot verify
        print(f"otel-bridge demo: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-bridge", description=cli_help.DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show the agent spans in OTLP protobuf or JSON files")
    p.add_argument("files", nargs="+", help="OTLP ExportTraceServiceRequest (or *.logs.*) files, .pb or .json")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--explain",
        action="store_true",
        help="per span: the attributes that decided kind, model, provider "
        "and tokens, which span was billed, and the GenAI-looking attributes that were ignored",
    )
    p.set_defaults(func=_inspect)

    p = sub.add_parser("serve", help="run the OTLP receivers, the pipeline and the HTTP API")
    p.add_argument("--config", help="pipeline YAML (default: the packaged config/bridge.yaml)")
    p.add_argument("--data-dir", help="embedded chDB directory (default ./.otel-bridge/data)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("demo", help="the 30-second tour: synthetic agent traffic → serve → cost and latency tables")
    p.add_argument("--config", help="config for the server the demo starts when none runs")
    p.add_argument("--data-dir", help="embedded chDB directory (default ./.otel-bridge/data)")
    p.add_argument("--runs", type=int, default=60, help="agent runs per release (default 60)")
    p.set_defaults(func=_demo)

    doctor.register(sub)
    commands.register(sub)
    config.register(sub)
    grafana.register(sub)
    deadletters.register(sub)
    cli_help.apply(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # one line per request
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
