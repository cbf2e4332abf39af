"""Config: good files load to the expected values, bad files give exactly the lines stored next to them."""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from otel_bridge import config as cfgmod
from otel_bridge.config import (
    BridgeConfig,
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    register,
    split_endpoint,
)

DATA = Path(__file__).parent / "testdata" / "config"
ROOT = Path(__file__).parent.parent
VENDOR_ENV = (
    "FLOWX_OBSERVATORY_API_URL",
    "FLOWX_OBSERVATORY_API_KEY",
    "FLOWX_OBSERVATORY_APP_ID",
    "FLIGHTDECK_BASE_URL",
    "FLIGHTDECK_LOCAL_API_TOKEN",
    "FLIGHTDECK_WORKSPACE_ID",
    "FLIGHTDECK_AGENT_ID",
    "FLIGHTDECK_RELEASE_ID",
    "FLIGHTDECK_TENANT_ID",
    "FLIGHTDECK_TASK_ID",
    "FLIGHTDECK_ENVIRONMENT",
    "FLIGHTDECK_EMIT_RUN_START",
    "OTEL_BRIDGE_TOKEN",
    "OTEL_BRIDGE_GRPC_ENDPOINT",
    "OTEL_BRIDGE_HTTP_ENDPOINT",
    "OTEL_BRIDGE_DATA_DIR",
    "OTEL_BRIDGE_CLICKHOUSE_HOST",
    "OTEL_BRIDGE_CLICKHOUSE_PORT",
    "OTEL_BRIDGE_CLICKHOUSE_USER",
    "OTEL_BRIDGE_CLICKHOUSE_PASSWORD",
    "OTEL_BRIDGE_LOG_LEVEL",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The packaged config reads these; the developer's shell must not change what the tests see."""
    for name in VENDOR_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------- good configs


def test_empty_config_is_all_defaults() -> None:
    cfg = parse_config("")
    assert cfg == BridgeConfig()
    otlp = cfg.receivers.otlp
    assert otlp.protocols.grpc.endpoint == "127.0.0.1:4317"
    assert otlp.protocols.grpc.max_recv_msg_size == 16 * 1024 * 1024
    assert otlp.protocols.http.endpoint == "127.0.0.1:4318"
    assert otlp.auth.bearer_token_value == ""
    assert (cfg.processors.runs.wait, cfg.processors.runs.max_wait, cfg.processors.runs.max_traces) == (
        5.0,
        30.0,
        10_000,
    )
    ch = cfg.exporters.clickhouse
    assert ch.embedded and ch.data_dir == "./.otel-bridge/data" and ch.port == 8123
    assert (ch.ttl_days, ch.text_ttl_days, ch.text_limit) == (90, 30, 4096)
    assert (ch.batch.max_batch, ch.batch.interval, ch.batch.max_queue) == (20_000, 5.0, 200_000)
    assert (cfg.exporters.observatory.batch.max_batch, cfg.exporters.observatory.batch.max_queue) == (100, 20_000)
    assert cfg.exporters.flightdeck.dead_letter == ""  # default: <data_dir>/dead-letters/flightdeck.jsonl
    assert cfg.exporters.observatory.batch.max_elapsed == 3600.0
    assert cfg.service.pipelines.traces.processors == ["runs", "observatory", "flightdeck", "redact"]
    assert cfg.service.telemetry.log_level == "info"
    assert cfg.enabled_exporters() == ["clickhouse"]


def test_minimal() -> None:
    cfg = load_config(DATA / "good_minimal.yaml")
    assert cfg.exporters.clickhouse.data_dir == "/var/lib/otel-bridge"
    assert cfg.processors.runs == BridgeConfig().processors.runs


def test_full() -> None:
    cfg = load_config(DATA / "good_full.yaml")
    otlp = cfg.receivers.otlp
    assert otlp.protocols.grpc.max_recv_msg_size == 4 * 1024 * 1024
    assert otlp.protocols.http.max_request_body_size == 512 * 1024
    assert split_endpoint(otlp.protocols.http.endpoint) == ("::", 14318)
    assert otlp.auth.bearer_token_value == "s3cret-token" and otlp.auth.insecure_allow_plaintext_token
    grpc_tls, http_tls = otlp.protocols.grpc.tls, otlp.protocols.http.tls
    assert (grpc_tls.client_ca_file, grpc_tls.reload_interval, grpc_tls.min_version) == (
        "/etc/otel-bridge/tls/clients-ca.pem",
        3600.0,
        "1.2",
    )
    assert (http_tls.cert_file, http_tls.key_file, http_tls.client_ca_file, http_tls.min_version) == (
        "/etc/otel-bridge/tls/server.pem",
        "/etc/otel-bridge/tls/server.key",
        "",
        "1.3",
    )
    assert cfg.exporters.observatory.tls.cert_file == "/etc/otel-bridge/tls/client.pem"
    assert cfg.exporters.flightdeck.tls.insecure_skip_verify
    runs = cfg.processors.runs
    assert (runs.wait, runs.max_wait, runs.max_traces) == (0.5, 90.0, 500)
    fd = cfg.processors.flightdeck
    assert fd.release_map == {"support-agent@1.4.2": "rel_support_142", "support-agent@1.5.0": "rel_support_150"}
    assert (fd.workspace_id, fd.tenant_id, fd.environment, fd.emit_run_start) == ("ws_team", "acme", "production", True)
    assert (cfg.processors.redact.secrets, cfg.processors.redact.pii) == (False, True)
    ch = cfg.exporters.clickhouse
    assert (ch.port, ch.username, ch.password_value, ch.database, ch.create_schema) == (
        9000,
        "bridge",
        "ch-password",
        "agents",
        False,
    )
    assert (ch.ttl_days, ch.text_ttl_days, ch.text_limit) == (365, None, 0)
    assert (ch.batch.max_batch, ch.batch.interval, ch.batch.max_queue) == (5000, 0.25, 50_000)
    assert cfg.exporters.observatory.api_key_value == "obs-key"
    assert cfg.exporters.flightdeck.token_value == "fd-token"
    assert cfg.service.pipelines.traces.exporters == ["flightdeck", "clickhouse"]
    assert cfg.enabled_exporters() == ["flightdeck", "clickhouse"]  # observatory has a url but is not in the pipeline
    assert cfg.service.telemetry.log_level == "debug"


def test_server_and_cluster() -> None:
    server = load_config(DATA / "good_server.yaml").exporters.clickhouse
    assert not server.embedded
    assert (server.host, server.port, server.secure, server.password_value) == (
        "clickhouse.internal",
        8443,
        True,
        "ch-secret",
    )
    assert (server.database, server.cluster, server.ttl_days, server.text_ttl_days) == ("otel_bridge_prod", "", 30, 7)
    assert (server.tls.ca_file, server.tls.key_file) == (
        "/etc/otel-bridge/tls/clickhouse-ca.pem",
        "/etc/otel-bridge/tls/client.key",
    )
    cluster = load_config(DATA / "good_cluster.yaml").exporters.clickhouse
    assert (cluster.host, cluster.cluster, cluster.port) == ("10.0.0.5", "analytics_cluster", 8123)
    assert (cluster.batch.max_batch, cluster.batch.interval, cluster.batch.max_queue) == (50_000, 2.0, 1_000_000)


def test_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TEST_BRIDGE_HOST",
        "TEST_UNSET",
        "TEST_UNSET_NO_DEFAULT",
        "TEST_EMIT",
        "NOT_EXPANDED",
        "TEST_OBSERVATORY_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_BRIDGE_PORT", "14318")
    monkeypatch.setenv("TEST_BRIDGE_TOKEN", "tok")
    monkeypatch.setenv("TEST_RELEASE", "42")
    monkeypatch.setenv("TEST_CH_PORT", "9440")
    monkeypatch.setenv("TEST_FLIGHTDECK_URL", "http://127.0.0.1:8080")
    cfg = load_config(DATA / "good_env.yaml")
    assert cfg.receivers.otlp.protocols.http.endpoint == "127.0.0.1:14318"  # default for one, value for the other
    assert cfg.receivers.otlp.auth.bearer_token_value == "tok"
    fd = cfg.processors.flightdeck
    assert (fd.release_id, fd.task_id, fd.environment, fd.emit_run_start) == ("rel_42", "", "staging", False)
    assert cfg.processors.observatory.app_id == "price-$5-42"
    assert cfg.exporters.clickhouse.port == 9440
    assert cfg.exporters.clickhouse.password_value == "${env:NOT_EXPANDED}"  # $$ escapes, no expansion after it
    assert cfg.enabled_exporters() == ["clickhouse", "flightdeck"]


def test_env_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}

    def get(text: str) -> str:
        return parse_config(
            f"processors: {{observatory: {{app_id: '{text}'}}}}", environ=env
        ).processors.observatory.app_id

    assert get("${env:SET}") == "v"
    assert get("${env:SET:-d}") == "v"
    assert get("${env:MISSING:-d}") == "d"
    assert get("${env:MISSING}") == ""
    assert get("${env:EMPTY:-d}") == ""  # as in the collector: the default is for unset variables only
    assert get("${env:MISSING:-a:b}") == "a:b"
    assert get("a$$b$$$${env:SET}") == "a$b$${env:SET}"
    assert get("cost $5") == "cost $5"  # a lone $ is left alone


def test_env_never_expands_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("processors:\n  ${env:NAME}: {}\n", environ={"NAME": "runs"})
    assert info.value.errors == [
        "processors.${env:NAME}: unknown processor, expected one of runs, observatory, flightdeck, redact"
    ]


def test_data_dir_override() -> None:
    cfg = load_config(DATA / "good_minimal.yaml", data_dir="/tmp/elsewhere")
    assert cfg.exporters.clickhouse.data_dir == "/tmp/elsewhere"
    assert cfg.processors == load_config(DATA / "good_minimal.yaml").processors


# ---------------------------------------------------------------- bad configs


BAD = sorted(DATA.glob("bad_*.yaml"))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_exact_errors(path: Path) -> None:
    expected = path.with_suffix(".errors").read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == expected
    assert str(info.value) == f"{path}:\n" + "\n".join(f"  {line}" for line in expected)
    for line in info.value.errors:  # one line each, lower-case apart from the quoted values
        message = re.sub(r'"[^"]*"', "", line.split(": ", 1)[1])
        assert "\n" not in line and message == message.lower()


def test_every_bad_file_has_its_errors() -> None:
    assert len(BAD) >= 10
    assert {p.stem for p in DATA.glob("bad_*.errors")} == {p.stem for p in BAD}


def test_all_errors_in_one_file_are_reported() -> None:
    errors = (DATA / "bad_values.errors").read_text().splitlines()
    assert len(errors) == 14
    assert len({e.split(":")[0] for e in errors}) == 14


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DATA / "does_not_exist.yaml")
    assert info.value.errors == ["cannot read the file: no such file or directory"]


def test_brief_examples() -> None:
    cases = {
        "exporters: {clickhouse: {batch: {interval: fast}}}": 'exporters.clickhouse.batch.interval: expected a duration like "1s" or "500ms", got "fast"',
        "receivers: {otlp: {protocols: {grpc: {endpoint: nope}}}}": 'receivers.otlp.protocols.grpc.endpoint: expected host:port, got "nope"',
        "service: {pipelines: {traces: {exporters: [clickhouse, kafka]}}}": 'service.pipelines.traces.exporters[1]: unknown exporter "kafka"',
        "receivers: {otlp: {protocols: {http: {endpoint: '0.0.0.0:4318'}}}}": "receivers.otlp.auth.bearer_token: required when binding a non-loopback address (0.0.0.0:4318) without mutual tls (tls.client_ca_file)",
    }
    for text, line in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert info.value.errors == [line]
        assert str(info.value) == f"<string>:\n  {line}"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "[::1]"])
def test_loopback_needs_no_token(host: str) -> None:
    parse_config(f"receivers: {{otlp: {{protocols: {{http: {{endpoint: '{host}:4318'}}}}}}}}")


def test_token_with_tls_allows_any_address() -> None:
    tls = "tls: {cert_file: s.pem, key_file: s.key}"
    cfg = parse_config(
        f"receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '0.0.0.0:4317', {tls}}}}}, auth: {{bearer_token: t}}}}}}"
    )
    assert cfg.receivers.otlp.protocols.grpc.endpoint == "0.0.0.0:4317"
    assert cfg.receivers.otlp.protocols.grpc.tls.cert_file == "s.pem"


def test_token_in_clear_needs_tls_or_the_explicit_opt_out() -> None:
    text = "receivers: {otlp: {protocols: {grpc: null, http: {endpoint: '10.0.0.7:4318'}}, auth: {bearer_token: t%s}}}"
    with pytest.raises(ConfigError) as info:
        parse_config(text % "")
    (line,) = info.value.errors
    assert line.startswith(
        "receivers.otlp.protocols.http.tls: required to receive the bearer token on a non-loopback address (10.0.0.7:4318)"
    )
    assert (
        "configure tls" in line and "receivers.otlp.auth.insecure_allow_plaintext_token: true" in line
    )  # both ways out
    assert parse_config(
        text % ", insecure_allow_plaintext_token: true"
    ).receivers.otlp.auth.insecure_allow_plaintext_token


def test_mutual_tls_makes_the_token_optional() -> None:
    mtls = "tls: {cert_file: s.pem, key_file: s.key, client_ca_file: clients.pem}"
    cfg = parse_config(
        f"receivers: {{otlp: {{protocols: {{grpc: null, http: {{endpoint: '0.0.0.0:4318', {mtls}}}}}}}}}"
    )
    assert cfg.receivers.otlp.protocols.http.tls.client_ca_file == "clients.pem"
    assert cfg.receivers.otlp.auth.bearer_token_value == ""
    with pytest.raises(ConfigError) as info:  # tls without client certificates authenticates nobody
        parse_config(
            "receivers: {otlp: {protocols: {grpc: null, http: {endpoint: '0.0.0.0:4318', tls: {cert_file: s, key_file: k}}}}}"
        )
    assert info.value.errors == [
        "receivers.otlp.auth.bearer_token: required when binding a non-loopback address (0.0.0.0:4318) "
        "without mutual tls (tls.client_ca_file)"
    ]


def test_tls_defaults() -> None:
    cfg = parse_config("receivers: {otlp: {protocols: {http: {tls: {cert_file: s.pem, key_file: s.key}}}}}")
    tls = cfg.receivers.otlp.protocols.http.tls
    assert (tls.min_version, tls.reload_interval, tls.client_ca_file) == ("1.2", 0.0, "")
    assert cfg.receivers.otlp.protocols.grpc.tls is None  # plaintext unless configured
    for ex in (cfg.exporters.clickhouse, cfg.exporters.observatory, cfg.exporters.flightdeck):
        assert (ex.tls.ca_file, ex.tls.cert_file, ex.tls.key_file, ex.tls.insecure_skip_verify) == ("", "", "", False)


def test_grpc_can_be_disabled() -> None:
    assert parse_config("receivers: {otlp: {protocols: {grpc: null}}}").receivers.otlp.protocols.grpc is None


# ---------------------------------------------------------------- helpers, immutability, secrets


def test_durations_and_sizes() -> None:
    assert [parse_duration(t) for t in ("500ms", "5s", "2m", "1h", "90d", "1h30m", "1.5s", "250us")] == [
        0.5,
        5.0,
        120.0,
        3600.0,
        90 * 86400.0,
        5400.0,
        1.5,
        0.00025,
    ]
    assert [parse_size(v) for v in ("512KiB", "16MiB", "1GiB", 1024, "2048", "1MB", "10B")] == [
        512 * 1024,
        16 * 1024**2,
        1024**3,
        1024,
        2048,
        1_000_000,
        10,
    ]
    for bad in ("", "5", "5 s", "-1s", "1y", 5, None):
        with pytest.raises(ValueError):
            parse_duration(bad)  # type: ignore[arg-type]
    for bad in ("16 megs", "-1", "1PiB", True, -5, None):
        with pytest.raises(ValueError):
            parse_size(bad)  # type: ignore[arg-type]


def test_parse_is_pure_and_repeatable() -> None:
    text = (DATA / "good_full.yaml").read_text()
    data = yaml.safe_load(text)
    before = copy.deepcopy(data)
    assert parse_config(text) == parse_config(text)
    assert BridgeConfig.model_validate(data) == parse_config(text)
    assert data == before  # validation never writes into its input
    cfg = parse_config(text)
    with pytest.raises(ValidationError):  # frozen models
        cfg.exporters.clickhouse.port = 1  # type: ignore[misc]


def test_secrets_not_in_repr() -> None:
    cfg = load_config(DATA / "good_full.yaml")
    for text in (repr(cfg), str(cfg), repr(cfg.exporters), cfg.model_dump_json()):
        for secret in ("s3cret-token", "ch-password", "obs-key", "fd-token"):
            assert secret not in text


def test_secret_values_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("exporters: {flightdeck: {token: 123456789}}")
    assert info.value.errors == ["exporters.flightdeck.token: expected a string, got a value that is not shown"]


# ---------------------------------------------------------------- the packaged default


def test_default_config_without_vendor_env(clean_env: pytest.MonkeyPatch) -> None:
    cfg = load_config()
    assert cfg.enabled_exporters() == ["clickhouse"]
    assert cfg.receivers.otlp.protocols.http.endpoint == "127.0.0.1:4318"
    assert cfg.exporters.clickhouse.embedded
    assert cfg.processors.flightdeck.workspace_id == "ws_local"
    assert (ROOT / "config" / "bridge.yaml").resolve() == cfgmod.default_config_path().resolve()


def test_default_config_with_vendor_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLOWX_OBSERVATORY_API_URL", "https://observatory.example.com")
    clean_env.setenv("FLOWX_OBSERVATORY_API_KEY", "obs-key")
    clean_env.setenv("FLIGHTDECK_BASE_URL", "http://127.0.0.1:8080")
    clean_env.setenv("FLIGHTDECK_LOCAL_API_TOKEN", "fd-token")
    clean_env.setenv("FLIGHTDECK_RELEASE_ID", "rel_7")
    clean_env.setenv("FLIGHTDECK_EMIT_RUN_START", "true")
    cfg = load_config(data_dir="/tmp/d")
    assert cfg.enabled_exporters() == ["clickhouse", "observatory", "flightdeck"]
    assert cfg.exporters.observatory.api_key_value == "obs-key"
    assert cfg.exporters.flightdeck.token_value == "fd-token"
    assert (cfg.processors.flightdeck.release_id, cfg.processors.flightdeck.emit_run_start) == ("rel_7", True)
    assert cfg.exporters.clickhouse.data_dir == "/tmp/d"


def test_default_config_exposed_needs_token_and_tls(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_BRIDGE_HTTP_ENDPOINT", "0.0.0.0:4318")
    with pytest.raises(ConfigError) as info:
        load_config()
    assert [e.split(":")[0] for e in info.value.errors] == ["receivers.otlp.auth.bearer_token"]
    clean_env.setenv("OTEL_BRIDGE_TOKEN", "t")
    with pytest.raises(ConfigError) as info:  # the packaged config has no certificate: the token would go in clear
        load_config()
    assert [e.split(":")[0] for e in info.value.errors] == ["receivers.otlp.protocols.http.tls"]


# ---------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="otel-bridge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_config_check_ok(capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch) -> None:
    path = str(DATA / "good_full.yaml")
    assert _cli(["config", "check", path]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{path}: ok", "enabled exporters: flightdeck, clickhouse"]
    assert out.err == ""
    assert _cli(["config", "check"]) == 0  # the packaged default
    assert capsys.readouterr().out.splitlines()[1] == "enabled exporters: clickhouse"


def test_config_check_errors(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "bad_values.yaml"
    assert _cli(["config", "check", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert lines[0] == f"{path}:"
    assert [line.strip() for line in lines[1:]] == path.with_suffix(".errors").read_text().splitlines()


# ---------------------------------------------------------------- OpenTelemetry Collector examples


def test_collector_configs_parse() -> None:
    plain = yaml.safe_load((ROOT / "config" / "otelcol.yaml").read_text())
    exporter = plain["exporters"]["otlp/bridge"]
    assert exporter["endpoint"] == "${env:OTEL_BRIDGE_ENDPOINT:-127.0.0.1:4317}" and exporter["tls"]["insecure"] is True
    assert exporter["sending_queue"]["enabled"] and exporter["retry_on_failure"]["enabled"]
    assert {"traces", "logs"} <= set(plain["service"]["pipelines"])
    for pipeline in plain["service"]["pipelines"].values():
        assert pipeline["exporters"] == ["otlp/bridge"] and "batch" in pipeline["processors"]

    lb = yaml.safe_load((ROOT / "config" / "otelcol-loadbalancing.yaml").read_text())
    exporter = lb["exporters"]["loadbalancing"]
    assert exporter["routing_key"] == "traceID"
    assert len(exporter["resolver"]["static"]["hostnames"]) >= 2
    assert "otlp" in exporter["protocol"]
    for pipeline in lb["service"]["pipelines"].values():
        assert pipeline["exporters"] == ["loadbalancing"]
    for doc in (plain, lb):  # every component a pipeline names is defined
        for pipeline in doc["service"]["pipelines"].values():
            for kind in ("receivers", "processors", "exporters"):
                assert set(pipeline[kind]) <= set(doc[kind])
