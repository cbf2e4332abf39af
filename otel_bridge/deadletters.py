"""``otel-bridge dead-letters list|show|retry|purge``: what a destination refused for good, or what still failed
after ``batch.max_elapsed`` of retries, one JSONL file per destination (issue 10's delivery ledger).

Each line is ``{"exporter", "time", "error", "item"}``; ``item`` is what the exporter was handed (an Observatory
event, a FlightDeck RunEvent, or a ClickHouse ``[table, row]``). ``retry`` re-sends the items through the
destination's own sender, bisecting as the engine does, and keeps in the file only what is still refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from otel_bridge.exporters.batch import PermanentError, RetryableError

DESTINATIONS = ("observatory", "flightdeck", "clickhouse")


def entries(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of a dead-letter file; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            yield entry


def _rewrite(path: Path, kept: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"".join(orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS) + b"\n" for e in kept))
    os.replace(tmp, path)


def _item(name: str, raw: Any) -> Any:
    """A dead-lettered item as its sender takes it (ClickHouse rows become their dataclass again)."""
    if name != "clickhouse":
        return raw
    from otel_bridge.exporters.rows import ROW_TYPES

    table, row = raw
    cls = ROW_TYPES[table]
    if isinstance(row, dict):
        return table, cls.from_dict(row)
    return table, cls.of(*row)


def _send(sender: Any, batch: list[tuple[dict, Any]], kept: list[dict]) -> bool:
    """Deliver ``(entry, item)`` pairs, bisecting on a permanent failure; False when the destination is down."""
    try:
        sender.send([item for _, item in batch])
        return True
    except PermanentError as exc:
        if len(batch) > 1:
            mid = len(batch) // 2
            return _send(sender, batch[:mid], kept) and _send(sender, batch[mid:], kept)
        kept.append({**batch[0][0], "error": str(exc)})
        return True
    except RetryableError:
        return False


def retry(sender: Any, name: str, path: Path, batch_size: int = 100) -> tuple[int, int]:
    """Re-send a destination's dead letters; returns (delivered, still dead). Stops at the first retryable
    failure (the destination is down) and keeps everything not yet delivered."""
    pending = list(entries(path))
    kept: list[dict[str, Any]] = []
    delivered = 0
    for i in range(0, len(pending), batch_size):
        chunk = []
        for e in pending[i : i + batch_size]:
            try:
                chunk.append((e, _item(name, e.get("item"))))
            except (KeyError, TypeError, ValueError) as exc:
                kept.append({**e, "error": f"unreadable dead letter: {exc}"})
        before = len(kept)
        if not _send(sender, chunk, kept):
            del kept[before:]  # the destination is down: keep the whole chunk (a re-send is at-least-once)
            kept.extend(e for e, _ in chunk)
            kept.extend(pending[i + batch_size :])
            break
        delivered += len(chunk) - (len(kept) - before)
    _rewrite(path, kept)
    return delivered, len(kept)


# ---------------------------------------------------------------------------------------------- CLI


def _paths(cfg: Any) -> dict[str, Path]:
    from otel_bridge.pipeline import dead_letter_path

    return {name: Path(dead_letter_path(cfg, name)) for name in DESTINATIONS}


def _run(args: Any) -> int:
    from otel_bridge.config import load_config

    cfg = load_config(args.config, data_dir=args.data_dir)
    paths = _paths(cfg)
    names = [args.destination] if getattr(args, "destination", None) else list(DESTINATIONS)
    if args.dl_command == "list":
        for name in names:
            n = sum(1 for _ in entries(paths[name]))
            print(f"{name:<12} {n:>8}  {paths[name]}")
        return 0
    if args.dl_command == "show":
        for name in names:
            for e in list(entries(paths[name]))[: args.limit]:
                item = orjson.dumps(e.get("item"), option=orjson.OPT_NON_STR_KEYS).decode()
                print(f"{name}\t{e.get('error', '')}\t{item[:200]}")
        return 0
    if args.dl_command == "purge":
        for name in names:
            if paths[name].exists():
                _rewrite(paths[name], [])
                print(f"{name}: purged")
        return 0
    from otel_bridge.pipeline import sender_for

    status = 0
    for name in names:
        if not paths[name].exists() or name not in cfg.enabled_exporters():
            continue
        sender = sender_for(cfg, name)
        try:
            delivered, left = retry(sender, name, paths[name])
        finally:
            sender.close()
        print(f"{name}: {delivered} delivered, {left} still dead-lettered")
        status = status or (1 if left else 0)
    return status


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dead-letters", help="list, show, retry or purge what destinations refused")
    sub = parser.add_subparsers(dest="dl_command", required=True)
    for command, help_text in (
        ("list", "count the dead letters per destination"),
        ("show", "print dead letters: destination, the server's message, the item"),
        ("retry", "re-send them (stop `serve` first for clickhouse: it owns the chDB directory)"),
        ("purge", "delete them"),
    ):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("destination", nargs="?", choices=DESTINATIONS)
        p.add_argument("--config", help="bridge YAML (default: the packaged one)")
        p.add_argument("--data-dir", help="the data directory (dead letters are under <data_dir>/dead-letters)")
        if command == "show":
            p.add_argument("--limit", type=int, default=20)
        p.set_defaults(func=_run)
