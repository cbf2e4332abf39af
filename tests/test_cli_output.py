"""The CLI reads well: 120-column snapshots of every table, --wide/--json, help examples, ``otel-bridge doctor``.

Snapshots live in tests/snapshots/; the dates of the generated data set (four days back from today) are replaced
by D0…D3 so they stay stable. Regenerate after an intended change with ``UPDATE_SNAPSHOTS=1 pytest tests/test_cli_output.py``.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from ch_data import BASE, make_dataset
from observatory_sink import SINK_API_KEY, ObservatorySink

from otel_bridge import cli_help, humanize
from otel_bridge.analytics.store import Store, StoreConfig
from otel_bridge.cli import build_parser, main
from otel_bridge.exporters.clickhouse import ClickHouseSender, run_row, spans_items

SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cliout") / "data")
    data = make_dataset(n_traces=12, seed=2)
    with Store.open(StoreConfig(data_dir=path)) as store:
        ClickHouseSender(store).send(spans_items(data.spans) + [("runs", run_row(r)) for r in data.runs])
    return path


def _stable(text: str) -> str:
    for day in range(5):
        text = text.replace((BASE + timedelta(days=day)).strftime("%m-%d "), f"D{day}    ")
    return text


def _snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no snapshot {path}: run with UPDATE_SNAPSHOTS=1 once and review it"
    assert text == path.read_text(), f"{name}: output changed; diff it against {path}"


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("runs", ["runs", "--limit", "14"]),
        ("runs_agents_by_cost", ["runs", "--min-llm-calls", "2", "--order=-total_cost", "--limit", "6"]),
        ("costs", ["costs"]),
        ("costs_by_agent", ["costs", "--by", "agent"]),
        ("latency", ["latency", "--by", "agent"]),
        ("diff", ["diff", "1.0.0", "1.1.0"]),
        ("prices_check", ["prices", "check"]),
    ],
)
def test_tables_at_120_columns(data_dir: str, capsys: pytest.CaptureFixture, name: str, argv: list[str]) -> None:
    assert main([*argv, "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 120
    assert "cache write" not in out or name.startswith("costs")  # an all-zero column is left out of run tables
    _snapshot(name, _stable(out))


def test_wide_and_json_keep_everything(data_dir: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", "--limit", "3", "--data-dir", data_dir, "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert main(["runs", "--limit", "3", "--data-dir", data_dir, "--wide"]) == 0
    wide = capsys.readouterr().out
    for key in ("trace id", "parent run id", "total cached input tokens", "user email"):
        assert key in wide
    assert len(rows[0]["run_id"]) == 36 and rows[0]["run_id"].replace("-", "")[:8] in wide
    assert isinstance(rows[0]["total_cost"], float)


def test_human_numbers() -> None:
    assert humanize.money(0.604801) == "$0.60" and humanize.money(0.00933) == "$0.0093" and humanize.money(0) == "$0"
    assert humanize.money(1234.5) == "$1,234.50" and humanize.money(None) == ""
    assert humanize.count(142658) == "142.7k" and humanize.count(950) == "950" and humanize.count(2_500_000) == "2.5M"
    assert (
        humanize.seconds(1.94) == "1.9 s" and humanize.seconds(0.42) == "420 ms" and humanize.seconds(125) == "2m 05s"
    )
    assert humanize.millis(3_720_000) == "1h 02m" and humanize.percent(0.0625) == "6.2%"
    assert humanize.short_id("df133428-7f1d-8499-9862-d2d6d1ebc94d") == "df133428"
    assert humanize.when("2026-11-26T22:08:03.006Z") == "11-26 22:08:03"


def _helps(parser, path=""):  # noqa: ANN001, ANN202
    yield path, parser.format_help()
    for name, sub in cli_help._subcommands(parser).items():
        yield from _helps(sub, f"{path} {name}".strip())


def test_every_command_has_examples_and_no_markup() -> None:
    parser = build_parser()
    assert cli_help.apply(parser) == []
    helps = dict(_helps(parser))
    assert {"runs", "doctor", "serve", "prices check", "config check", "schema print"} <= set(helps)
    for path, text in helps.items():
        assert "examples:\n  otel-bridge" in text, path
        assert "``" not in text and ":func:" not in text, path


def _config(tmp: Path, *, http: str, grpc: str, obs_url: str = "", obs_key: str = "", fd_url: str = "") -> str:
    cfg = tmp / "bridge.yaml"
    cfg.write_text(f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "{grpc}"}}, http: {{endpoint: "{http}"}}}}}}}}
exporters:
  clickhouse: {{data_dir: "{tmp / "data"}"}}
  observatory: {{url: "{obs_url}", api_key: "{obs_key}", dead_letter: "{tmp / "obs-dead.jsonl"}"}}
  flightdeck: {{url: "{fd_url}", dead_letter: "{tmp / "fd-dead.jsonl"}"}}
""")
    return str(cfg)


def _free() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _doctor(cfg: str, capsys: pytest.CaptureFixture) -> tuple[int, dict[str, dict]]:
    code = main(["doctor", "--config", cfg, "--json", "--timeout", "3"])
    return code, {c["name"]: c for c in orjson.loads(capsys.readouterr().out)}


def test_doctor_all_good(tmp_path: Path, capsys: pytest.CaptureFixture, flightdeck_server) -> None:
    sink = ObservatorySink()
    sink.start()
    try:
        cfg = _config(
            tmp_path,
            http=_free(),
            grpc=_free(),
            obs_url=sink.url,
            obs_key=SINK_API_KEY,
            fd_url=flightdeck_server.base_url,
        )
        code, checks = _doctor(cfg, capsys)
        assert main(["doctor", "--config", cfg]) == 0  # the human report
        human = capsys.readouterr().out
    finally:
        sink.stop()
    assert "0 failed, 0 warning(s)" in human and "✓ exporter flightdeck" in human
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}, [c for c in checks.values() if c["status"] != "ok"]
    assert "credentials accepted" in checks["exporter observatory"]["detail"]
    assert "0 span rows" in checks["clickhouse"]["detail"]


def test_doctor_says_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture, data_dir: str) -> None:
    sink = ObservatorySink(api_key="the-right-key")
    sink.start()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    closed = _free()  # nothing listens there
    try:
        cfg = _config(tmp_path, http=f"127.0.0.1:{busy.getsockname()[1]}", grpc=_free(), obs_url=sink.url,
                      obs_key="a-wrong-key", fd_url=f"http://{closed}")  # fmt: skip
        (tmp_path / "fd-dead.jsonl").write_bytes(
            b'{"exporter": "flightdeck", "error": "HTTP 400: release unknown", "item": {}}\n'
        )
        code, checks = _doctor(cfg, capsys)
        sink.violations.clear()  # the wrong key was the point
    finally:
        sink.stop()
        busy.close()
    assert code == 1
    assert (
        checks["port http"]["status"] == "fail"
        and "receivers.otlp.protocols.http.endpoint" in checks["port http"]["fix"]
    )
    assert (
        checks["exporter flightdeck"]["status"] == "fail" and "unreachable" in checks["exporter flightdeck"]["detail"]
    )
    obs = checks["exporter observatory"]  # the strict sink answers a wrong key with 400 and says why
    assert obs["status"] == "fail" and "authorization" in obs["detail"] and "api_key" in obs["fix"]
    dead = checks["dead letters flightdeck"]
    assert dead["status"] == "warn" and "1 in" in dead["detail"] and "release unknown" in dead["detail"]


def test_doctor_lists_unpriced_models(tmp_path: Path, capsys: pytest.CaptureFixture, data_dir: str) -> None:
    cfg = _config(tmp_path, http=_free(), grpc=_free())
    text = Path(cfg).read_text().replace(str(tmp_path / "data"), data_dir)
    Path(cfg).write_text(text)
    code, checks = _doctor(cfg, capsys)
    assert code == 0 and checks["prices"]["status"] == "warn"
    assert checks["prices"]["detail"] == "1 model(s) without a price, their calls cost $0: mystery-model-1 (4 calls)"
    assert "prices check" in checks["prices"]["fix"]
    assert re.search(r"\d+ span rows", checks["clickhouse"]["detail"])


def test_doctor_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("exporters: {clickhouse: {ttl: 5s}}\n")
    code, checks = _doctor(str(bad), capsys)
    assert code == 1 and checks["config"]["status"] == "fail" and "ttl" in checks["config"]["detail"]
