"""The analytics sub-commands: JSON output has the query functions' keys; schema print renders cluster DDL."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest
from ch_data import make_dataset

from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.commands import register
from otel_bridge.exporters.clickhouse import ClickHouseSender, run_row, spans_items


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-bridge")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("chcli") / "data")
    data = make_dataset(n_traces=12, seed=2)
    with Store.open(StoreConfig(data_dir=path)) as store:  # the writer closes before the CLI opens the dir
        ClickHouseSender(store).send(spans_items(data.spans) + [("runs", run_row(r)) for r in data.runs])
    return path


def test_runs_json(data_dir: str, capsys: pytest.CaptureFixture) -> None:
    assert (
        _run(["runs", "--data-dir", data_dir, "--json", "--status", "success", "--tags", "beta,eu", "--limit", "500"])
        == 0
    )
    rows = orjson.loads(capsys.readouterr().out)
    assert rows and all(r["status"] == "success" and {"beta", "eu"} & set(r["tags"]) for r in rows)
    assert set(rows[0]) == {
        "run_id", "trace_id", "parent_run_id", "type", "name", "agent", "model", "status", "latency_s", "cost",
        "prompt_tokens", "completion_tokens", "user_email", "tags", "start_time", "end_time",
        "total_input_tokens", "total_cached_input_tokens", "total_cache_write_tokens", "total_output_tokens",
        "total_reasoning_tokens", "total_tokens", "total_cost", "llm_calls", "tool_calls", "errors",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["costs", "--by", "agent"], "agent"),
        (["latency", "--by", "kind"], "kind"),
        (["diff", "1.0.0", "1.1.0"], "metric"),
        (["prices", "check"], "model"),
    ],
)
def test_commands_json(data_dir: str, capsys: pytest.CaptureFixture, argv: list[str], key: str) -> None:
    assert _run([*argv, "--data-dir", data_dir, "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert rows and all(key in r for r in rows)


def test_table_output_and_errors(data_dir: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert _run(["costs", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "cost at current prices" in out and "───" in out  # a rich table, 120 columns when piped
    bad = tmp_path / "prices.yaml"
    bad.write_text("providers: {x: {models: {m: {input: 1}}}}\n")
    assert _run(["costs", "--data-dir", data_dir, "--prices", str(bad)]) == 2
    assert "providers.x.models.m.output: required" in capsys.readouterr().err


def test_schema_print(capsys: pytest.CaptureFixture) -> None:
    assert _run(["schema", "print", "--cluster", "prod"]) == 0
    out = capsys.readouterr().out
    assert "ON CLUSTER `prod`" in out and "ReplicatedReplacingMergeTree" in out and "Distributed(" in out
    assert _run(["schema", "print"]) == 0
    assert "ON CLUSTER" not in capsys.readouterr().out
