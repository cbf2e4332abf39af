"""The ``otel-bridge`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from otel_bridge import commands


def _inspect(args: argparse.Namespace) -> int:
    from otel_bridge import inspect

    try:
        spans = inspect.agent_spans(Path(p) for p in args.files)
    except inspect.InspectError as exc:
        print(f"otel-bridge inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        inspect.print_json_lines(spans)
    else:
        inspect.print_table(spans)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-bridge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show the agent spans in OTLP protobuf or JSON files")
    p.add_argument("files", nargs="+", help="OTLP ExportTraceServiceRequest (or *.logs.*) files, .pb or .json")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_inspect)

    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
