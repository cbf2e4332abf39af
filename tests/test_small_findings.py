"""The smaller findings of issue 10: a whitespace-only bearer token, a non-numeric latency, dead letters and the
data dir readable by their owner only."""

from __future__ import annotations

import pytest
from delivery_helpers import service
from fastapi.testclient import TestClient

from otel_bridge.config import ConfigError, parse_config


def test_whitespace_only_bearer_token_is_refused():
    with pytest.raises(ConfigError) as info:
        parse_config('receivers: {otlp: {auth: {bearer_token: "   "}}}')
    assert info.value.errors == [
        "receivers.otlp.auth.bearer_token: is only whitespace; set a real token or leave it empty"
    ]
    cfg = parse_config('receivers: {otlp: {auth: {bearer_token: " tok "}}}')
    assert cfg.receivers.otlp.auth.bearer_token_value == "tok"


def test_report_with_a_non_numeric_latency_is_a_400_and_the_data_dir_is_owner_only(tmp_path):
    svc = service(tmp_path)
    try:
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
        assert svc.spooled.spool.dir.stat().st_mode & 0o777 == 0o700
        with TestClient(svc.app(), raise_server_exceptions=False) as c:
            event = {
                "name": "llm_end",
                "type": "llm",
                "run_id": "01HX",
                "timestamp": "2026-11-30T00:00:00Z",
                "latency": "abc",
            }
            r = c.post("/api/report", json={"events": [event]})
            assert r.status_code == 400 and "latency" in r.json()["detail"]
            r = c.post("/api/report", json={"events": [{**event, "latency": 0.25}]})
            assert r.status_code == 200 and r.json() == {"inserted": 1}
    finally:
        svc.stop(10)
