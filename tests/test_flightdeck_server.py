"""Integration tests against a real ``flightdeck serve`` (flightdeck-ai 1.3.0).

Covers: the FlightDeckSender (ingest, dedupe, 400 -> splittable PermanentError,
auth, transport errors), parity of ``otel_bridge.flightdeck_schema.RunEvent`` with
FlightDeck's own validation, and ``release diff --output json`` numbers.
"""

from __future__ import annotations

import copy
import datetime as dt
import socket
import uuid
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError

try:  # works whether or not tests/ becomes a package
    from tests.flightdeck_server import (  # noqa: F401  (fixture re-export)
        FlightDeckCLIError,
        FlightDeckServer,
        flightdeck_server,
        make_run_event,
        running_flightdeck,
    )
except ImportError:  # pragma: no cover - depends on rootdir/sys.path layout
    from flightdeck_server import (  # type: ignore[no-redef]  # noqa: F401
        FlightDeckCLIError,
        FlightDeckServer,
        flightdeck_server,
        make_run_event,
        running_flightdeck,
    )

from otel_bridge.exporters.batch import BatchExporter, PermanentError, RetryableError
from otel_bridge.exporters.flightdeck import FlightDeckSender, parse_retry_after
from otel_bridge.flightdeck_schema import RunEvent

UTC = dt.timezone.utc


def _agent() -> str:
    return f"agent_{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def sender(flightdeck_server: FlightDeckServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLIGHTDECK_LOCAL_API_TOKEN", raising=False)
    s = FlightDeckSender(flightdeck_server.base_url)
    yield s
    s.close()


# --------------------------------------------------------------------------- ingest


def test_valid_batch_shows_up_in_runs(flightdeck_server: FlightDeckServer, sender: FlightDeckSender) -> None:
    agent = _agent()
    rel = flightdeck_server.register_release(agent, "gpt-4o-mini", "v1")
    batch = [
        make_run_event(
            release_id=rel,
            agent_id=agent,
            model="gpt-4o-mini",
            input_tokens=100 * i,
            output_tokens=10 * i,
            latency_ms=50 * i,
            request={"trace_id": f"{i:032x}"},
        )
        for i in range(1, 4)
    ]
    assert all(RunEvent.model_validate(e) for e in batch)
    sender.send(batch)
    assert sender.last_inserted == 3

    runs = flightdeck_server.runs(rel)
    assert sorted(r["run_id"] for r in runs) == sorted(e["run_id"] for e in batch)
    by_id = {r["run_id"]: r for r in runs}
    for e in batch:
        got = by_id[e["run_id"]]
        assert got["usage"]["model"] == e["usage"]["model"]
        assert got["metrics"] == e["metrics"]
        assert got["agent_id"] == agent and got["release_id"] == rel
        assert got["request"]["trace_id"] == e["request"]["trace_id"]
    # filters are server-side
    assert [r["run_id"] for r in flightdeck_server.runs(rel, trace_id=f"{2:032x}")] == [batch[1]["run_id"]]
    assert flightdeck_server.runs(rel, environment="prod") == []


def test_resending_same_run_id_does_not_add_a_run(
    flightdeck_server: FlightDeckServer, sender: FlightDeckSender
) -> None:
    agent = _agent()
    rel = flightdeck_server.register_release(agent, "gpt-4.1-mini", "v1")
    batch = [
        make_run_event(
            release_id=rel, agent_id=agent, model="gpt-4.1-mini", input_tokens=10, output_tokens=5, latency_ms=20
        )
        for _ in range(2)
    ]
    sender.send(batch)
    assert sender.last_inserted == 2
    sender.send(batch)  # exact retry
    assert sender.last_inserted == 0
    changed = copy.deepcopy(batch[0])
    changed["metrics"]["latency_ms"] = 99_999
    sender.send([changed])  # same run_id, different payload: first write wins
    assert sender.last_inserted == 0
    runs = flightdeck_server.runs(rel)
    assert len(runs) == 2
    assert {r["metrics"]["latency_ms"] for r in runs} == {20}


def test_batch_with_one_invalid_event_is_rejected_whole(
    flightdeck_server: FlightDeckServer, sender: FlightDeckSender
) -> None:
    agent = _agent()
    rel = flightdeck_server.register_release(agent, "gpt-4o", "v1")
    batch = [
        make_run_event(release_id=rel, agent_id=agent, model="gpt-4o", input_tokens=1, output_tokens=1)
        for _ in range(3)
    ]
    batch[1]["usage"]["model"]["output_tokens"] = -5
    with pytest.raises(PermanentError) as info:
        sender.send(batch)
    assert info.value.splittable is True
    msg = str(info.value)
    assert "400" in msg and "usage.model.output_tokens" in msg and "greater than or equal to 0" in msg
    assert flightdeck_server.runs(rel) == []  # nothing from the batch was stored

    # the engine bisects the splittable failure: good events land, the bad one is dead-lettered
    dead = flightdeck_server.workspace / f"dead-{agent}.jsonl"
    engine = BatchExporter(sender, max_batch=10, dead_letter=dead, start=False)
    assert engine.offer_many(batch) == 3
    engine.force_flush(timeout=10)
    assert sorted(r["run_id"] for r in flightdeck_server.runs(rel)) == sorted([batch[0]["run_id"], batch[2]["run_id"]])
    lines = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert [x["item"]["run_id"] for x in lines] == [batch[1]["run_id"]]
    assert "output_tokens" in lines[0]["error"]


def test_api_version_other_than_v1_is_a_splittable_400(
    flightdeck_server: FlightDeckServer, sender: FlightDeckSender
) -> None:
    agent = _agent()
    rel = flightdeck_server.register_release(agent, "gpt-4o-mini", "v1")
    ev = make_run_event(release_id=rel, agent_id=agent, model="gpt-4o-mini", api_version="v2")
    with pytest.raises(PermanentError) as info:
        sender.send([ev])
    assert info.value.splittable and "Unsupported api_version" in str(info.value)


def test_run_start_is_a_run_and_blocks_a_later_run_end(
    flightdeck_server: FlightDeckServer, sender: FlightDeckSender
) -> None:
    """run_id is a global primary key: a run_start claims it, a later run_end is dropped."""
    agent = _agent()
    base = flightdeck_server.register_release(agent, "gpt-4o-mini", "base")
    cand = flightdeck_server.register_release(agent, "gpt-4o-mini", "cand")
    run_id = f"run_{uuid.uuid4().hex}"
    start = make_run_event(release_id=cand, agent_id=agent, model="gpt-4o-mini", run_id=run_id, type="run_start")
    end = make_run_event(
        release_id=cand,
        agent_id=agent,
        model="gpt-4o-mini",
        run_id=run_id,
        input_tokens=1000,
        output_tokens=100,
        latency_ms=500,
        success=False,
    )
    sender.send([start])
    sender.send([end])
    assert sender.last_inserted == 0
    runs = flightdeck_server.runs(cand)
    assert [(r["run_id"], r["type"]) for r in runs] == [(run_id, "run_start")]
    other = make_run_event(release_id=base, agent_id=agent, model="gpt-4o-mini", run_id=run_id)
    sender.send([other])  # same run_id under another release: silently dropped too
    assert sender.last_inserted == 0
    sender.send([make_run_event(release_id=base, agent_id=agent, model="gpt-4o-mini", latency_ms=10)])
    d = flightdeck_server.diff(base, cand)
    assert d["samples"]["candidate_runs"] == 1  # the run_start counts as a run
    assert d["metrics"]["candidate_latency_ms_avg"] is None  # its defaults: no latency, success
    assert d["metrics"]["candidate_error_rate"] == 0.0


# ------------------------------------------------------------------------ auth/transport


def test_token_server_requires_bearer(tmp_path) -> None:
    with running_flightdeck(tmp_path / "ws", token="s3cret-token") as fd:
        agent = _agent()
        rel = fd.register_release(agent, "claude-3-5-haiku", "v1")
        ev = make_run_event(release_id=rel, agent_id=agent, model="claude-3-5-haiku", input_tokens=3, output_tokens=4)
        with FlightDeckSender(fd.base_url, token="wrong") as bad:
            with pytest.raises(PermanentError) as info:
                bad.send([ev])
            assert info.value.splittable is False and "401" in str(info.value)
            assert "s3cret" not in str(info.value) and "wrong" not in repr(bad)
        with FlightDeckSender(fd.base_url, token="s3cret-token") as good:
            good.send([ev])
            assert good.last_inserted == 1
        assert [r["run_id"] for r in fd.runs(rel)] == [ev["run_id"]]


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FlightDeckSender(f"http://127.0.0.1:{port}", timeout=2.0) as snd:
        with pytest.raises(RetryableError) as info:
            snd.send([{"run_id": "x"}])
    assert info.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "headers", "kind", "splittable", "retry_after"),
    [
        (429, {"Retry-After": "7"}, RetryableError, None, 7.0),
        (503, {}, RetryableError, None, None),
        (500, {"Retry-After": "soon"}, RetryableError, None, None),
        (400, {}, PermanentError, True, None),
        (422, {}, PermanentError, False, None),
        (404, {}, PermanentError, False, None),
        (403, {}, PermanentError, False, None),
    ],
)
def test_status_classification(status, headers, kind, splittable, retry_after, monkeypatch) -> None:
    monkeypatch.delenv("FLIGHTDECK_LOCAL_API_TOKEN", raising=False)
    monkeypatch.setenv("FLIGHTDECK_BASE_URL", "http://fd.invalid:1/")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, json={"detail": f"boom {status}"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        snd = FlightDeckSender(client=client)
        with pytest.raises(kind) as info:
            snd.send([{"run_id": "r1"}])
    assert f"boom {status}" in str(info.value)
    if kind is RetryableError:
        assert info.value.retry_after == retry_after
    else:
        assert info.value.splittable is splittable
    req = seen[0]
    assert str(req.url) == "http://fd.invalid:1/v1/events"
    assert "authorization" not in req.headers
    assert orjson.loads(req.content) == {"events": [{"run_id": "r1"}]}


def test_token_from_env_and_retry_after_date(monkeypatch) -> None:
    monkeypatch.setenv("FLIGHTDECK_LOCAL_API_TOKEN", "envtok")
    seen: list[httpx.Request] = []
    with httpx.Client(
        transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, json={"inserted": 1}))
    ) as c:
        FlightDeckSender("http://x", client=c).send([{"a": 1}])
    assert seen[0].headers["authorization"] == "Bearer envtok"
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("-3") == 0.0 and parse_retry_after(None) is None


# ------------------------------------------------------------------ schema parity


def _set(path: str, value: Any):
    def mut(ev: dict) -> None:
        *parents, leaf = path.split(".")
        node = ev
        for p in parents:
            node = node[p]
        if value is _DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value

    return mut


_DELETE = object()

# (case id, mutation, expected accepted by FlightDeck)
PARITY_CASES = [
    ("valid", _set("labels.k", "v"), True),
    ("type_run_start", _set("type", "run_start"), True),
    ("type_bogus", _set("type", "span"), False),
    ("no_workspace_id", _set("workspace_id", _DELETE), True),
    ("no_metrics", _set("metrics", _DELETE), True),
    ("no_labels", _set("labels", _DELETE), True),
    ("extra_field_ignored", _set("something_else", {"x": 1}), True),
    ("request_ids", _set("request", {"trace_id": "t", "span_id": "s", "session_id": "c"}), True),
    ("request_not_object", _set("request", "abc"), False),
    *[
        (f"missing_{f}", _set(f, _DELETE), False)
        for f in ("timestamp", "agent_id", "release_id", "run_id", "tenant_id", "task_id", "environment", "usage")
    ],
    *[
        (f"missing_usage.model.{f}", _set(f"usage.model.{f}", _DELETE), False)
        for f in ("provider", "model", "input_tokens", "output_tokens")
    ],
    ("missing_cached_input_tokens", _set("usage.model.cached_input_tokens", _DELETE), True),
    ("missing_usage.model", _set("usage.model", _DELETE), False),
    ("negative_input_tokens", _set("usage.model.input_tokens", -1), False),
    ("negative_cached_tokens", _set("usage.model.cached_input_tokens", -1), False),
    ("float_tokens", _set("usage.model.input_tokens", 10.5), False),
    ("integral_float_tokens", _set("usage.model.input_tokens", 10.0), True),
    ("numeric_string_tokens", _set("usage.model.output_tokens", "12"), True),
    ("negative_latency", _set("metrics.latency_ms", -1), False),
    ("null_latency", _set("metrics.latency_ms", None), True),
    ("success_string_true", _set("metrics.success", "true"), True),
    ("success_garbage", _set("metrics.success", "maybe"), False),
    ("error_type_int", _set("metrics.error_type", 5), False),
    ("tenant_id_int", _set("tenant_id", 5), False),
    ("run_id_null", _set("run_id", None), False),
    ("label_int_value", _set("labels.n", 1), False),
    ("timestamp_garbage", _set("timestamp", "yesterday"), False),
    ("timestamp_unix_seconds", _set("timestamp", 1_700_000_000), True),
    ("timestamp_offset", _set("timestamp", "2026-01-02T03:04:05+05:00"), True),
    ("timestamp_naive", _set("timestamp", "2026-01-02T03:04:05"), True),
    ("timestamp_date_only", _set("timestamp", "2026-01-02"), True),
    ("api_version_v2", _set("api_version", "v2"), False),
    ("tools_ok", _set("usage.tools", [{"tool_name": "search", "invocations": 2, "cost_units": 0.5}]), True),
    ("tools_null", _set("usage.tools", None), False),
    ("tool_missing_name", _set("usage.tools", [{"invocations": 1}]), False),
    ("tool_negative_invocations", _set("usage.tools", [{"tool_name": "t", "invocations": -1}]), False),
    ("tool_negative_cost", _set("usage.tools", [{"tool_name": "t", "cost_units": -0.1}]), False),
]


@pytest.fixture(scope="module")
def parity_release(flightdeck_server: FlightDeckServer) -> tuple[str, str]:
    # Naive timestamps break GET /v1/runs for the release they land in, so parity
    # cases get their own release that is never listed.
    agent = _agent()
    return agent, flightdeck_server.register_release(agent, "gpt-4o-mini", "parity")


@pytest.mark.parametrize(("case", "mutate", "accepted"), PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_schema_parity_with_server(case, mutate, accepted, flightdeck_server: FlightDeckServer, parity_release) -> None:
    from flightdeck.models import RunEvent as FDRunEvent  # test-only: reference implementation

    agent, rel = parity_release
    ev = make_run_event(
        release_id=rel, agent_id=agent, model="gpt-4o-mini", input_tokens=10, output_tokens=2, latency_ms=5
    )
    mutate(ev)

    resp = flightdeck_server.post_events([ev])
    assert resp.status_code in (200, 400), resp.text
    server_ok = resp.status_code == 200
    assert server_ok is accepted, f"{case}: server said {resp.status_code} {resp.text}"

    ours_errors = theirs_errors = None
    try:
        ours = RunEvent.model_validate(ev)
    except ValidationError as exc:
        ours_errors = [(e["loc"], e["type"]) for e in exc.errors()]
    try:
        theirs = FDRunEvent.model_validate(ev)
    except ValidationError as exc:
        theirs_errors = [(e["loc"], e["type"]) for e in exc.errors()]
    assert (ours_errors is None) is accepted
    assert ours_errors == theirs_errors
    if accepted:
        assert ours.to_wire() == theirs.model_dump(mode="json")
    elif ours_errors:
        loc = ".".join(str(p) for p in ours_errors[0][0])
        assert loc in resp.json()["detail"]
    else:  # api_version is checked by the route before model validation
        assert "api_version" in resp.json()["detail"]


def test_envelope_errors_are_422(flightdeck_server: FlightDeckServer) -> None:
    assert flightdeck_server.post_events([]).status_code == 422
    assert flightdeck_server.post_events([1]).status_code == 422  # type: ignore[list-item]


# -------------------------------------------------------------------------- diff


def _expected(events: list[dict]) -> tuple[float, float | None, float]:
    n = len(events)
    cost = sum(FlightDeckServer.cost_of(e) for e in events) / n
    lat = [e["metrics"]["latency_ms"] for e in events if e["metrics"]["latency_ms"] is not None]
    err = sum(1 for e in events if not e["metrics"]["success"]) / n
    return cost, (sum(lat) / len(lat) if lat else None), err


def test_diff_matches_events(flightdeck_server: FlightDeckServer, sender: FlightDeckSender) -> None:
    agent = _agent()
    base = flightdeck_server.register_release(agent, "gpt-4o-mini", "1.0.0")
    cand = flightdeck_server.register_release(agent, "claude-sonnet-4-5", "1.1.0")
    now = dt.datetime.now(UTC)

    def mk(rel, model, i, **kw):
        kw.setdefault("timestamp", now - dt.timedelta(minutes=i + 1))
        return make_run_event(release_id=rel, agent_id=agent, model=model, **kw)

    base_events = [
        mk(base, "gpt-4o-mini", 0, input_tokens=1200, cached_input_tokens=800, output_tokens=300, latency_ms=900),
        mk(base, "gpt-4o-mini", 1, input_tokens=5000, output_tokens=1000, latency_ms=1500),
        mk(
            base,
            "gpt-4o-mini-2024-07-18",
            2,
            input_tokens=10,
            output_tokens=0,
            latency_ms=None,
            success=False,
            error_type="timeout",
        ),
        mk(base, "gpt-4o-mini", 3, type="run_start", input_tokens=7, output_tokens=0),
    ]
    cand_events = [
        mk(
            cand,
            "claude-sonnet-4-5",
            0,
            input_tokens=2000,
            cached_input_tokens=4000,
            output_tokens=500,
            latency_ms=2100,
        ),
        mk(
            cand,
            "claude-sonnet-4-5",
            1,
            input_tokens=300,
            output_tokens=50,
            latency_ms=700,
            success=False,
            error_type="tool_error",
        ),
        mk(cand, "claude-sonnet-4-5-20250929", 2, input_tokens=0, output_tokens=0, latency_ms=100),
    ]
    excluded = [  # outside the 7d window / mis-compared offset / other environment
        mk(
            cand,
            "claude-sonnet-4-5",
            0,
            input_tokens=10**6,
            output_tokens=10**6,
            latency_ms=10**6,
            timestamp=now - dt.timedelta(days=8),
        ),
        mk(cand, "claude-sonnet-4-5", 0, input_tokens=10**6, output_tokens=10**6, latency_ms=10**6, environment="prod"),
    ]
    shifted = mk(cand, "claude-sonnet-4-5", 0, input_tokens=10**6, output_tokens=10**6, latency_ms=10**6)
    # 5 minutes ago written with a +05:00 offset: FlightDeck compares timestamp *strings*,
    # so "…+05:00" local time sorts after "now" and the event falls outside the window.
    shifted["timestamp"] = (now - dt.timedelta(minutes=5)).astimezone(dt.timezone(dt.timedelta(hours=5))).isoformat()
    sender.send(base_events + cand_events + excluded + [shifted])

    d = flightdeck_server.diff(base, cand, window="7d")
    assert set(d) == {"window", "since", "until", "filters", "pricing", "samples", "metrics", "policy"}
    assert d["window"] == "7d" and d["filters"]["environment"] == "local"
    assert d["samples"]["baseline_runs"] == 4 and d["samples"]["candidate_runs"] == 3
    assert d["samples"]["confidence"] == "HIGH"

    b_cost, b_lat, b_err = _expected(base_events)
    c_cost, c_lat, c_err = _expected(cand_events)
    m = d["metrics"]
    assert m["baseline_cost_per_run_usd"] == pytest.approx(b_cost, rel=1e-9)
    assert m["candidate_cost_per_run_usd"] == pytest.approx(c_cost, rel=1e-9)
    assert m["delta_cost_per_run_usd"] == pytest.approx(c_cost - b_cost, rel=1e-9)
    assert m["delta_cost_per_run_pct"] == pytest.approx((c_cost - b_cost) / b_cost, rel=1e-9)
    assert m["baseline_latency_ms_avg"] == pytest.approx(b_lat) and b_lat == 1200.0
    assert m["candidate_latency_ms_avg"] == pytest.approx(c_lat) and c_lat == 2900 / 3
    assert m["baseline_error_rate"] == pytest.approx(b_err) and b_err == 0.25
    assert m["candidate_error_rate"] == pytest.approx(c_err) and c_err == pytest.approx(1 / 3)
    assert m["delta_error_rate"] == pytest.approx(c_err - b_err)

    # hand-check one event against list prices: 1200 in + 800 cached + 300 out on gpt-4o-mini
    assert FlightDeckServer.cost_of(base_events[0]) == pytest.approx((1200 * 0.15 + 800 * 0.075 + 300 * 0.60) / 1e6)
    p = d["pricing"]
    assert p["baseline_model"] == "gpt-4o-mini" and p["candidate_provider"] == "anthropic"
    assert p["pricing_or_model_changed"] is True
    in_b, cached_b, out_b = flightdeck_server.price_of("gpt-4o-mini")
    assert p["prices"]["baseline_input_usd_per_1k_tokens"] == pytest.approx(in_b * 1000)
    assert p["prices"]["baseline_cached_input_usd_per_1k_tokens"] == pytest.approx(cached_b * 1000)
    assert p["prices"]["candidate_output_usd_per_1k_tokens"] == pytest.approx(
        flightdeck_server.price_of("claude-sonnet-4-5")[2] * 1000
    )
    assert d["policy"]["passed"] is True

    # environment filter selects the other slice
    prod = flightdeck_server.diff(base, cand, environment="prod")
    assert prod["samples"] == {**prod["samples"], "baseline_runs": 0, "candidate_runs": 1}


def test_diff_fails_when_event_model_has_no_price(
    flightdeck_server: FlightDeckServer, sender: FlightDeckSender
) -> None:
    agent = _agent()
    base = flightdeck_server.register_release(agent, "gpt-4.1", "a")
    cand = flightdeck_server.register_release(agent, "gpt-4.1", "b")
    sender.send(
        [
            make_run_event(
                release_id=cand,
                agent_id=agent,
                model="gpt-5-unknown",
                provider="openai",
                input_tokens=1,
                output_tokens=1,
            )
        ]
    )
    with pytest.raises(FlightDeckCLIError) as info:
        flightdeck_server.diff(base, cand)
    assert "Pricing table missing model entry" in info.value.stderr
