"""The fake server's OpenAI Responses API (tests/fixtures/gen/fake_responses.py), which the OpenAI Agents SDK
fixtures are generated against: over loopback, the plan in ``instructions`` drives the tool loop through
``function_call_output`` items, usage is served in the Responses spelling and recorded normalised, and a token
count is answered but never recorded as a model call."""

from __future__ import annotations

import http.client
import json
import sys

import pytest
from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES.parent / "gen"))
from fake_openai import FakeOpenAI  # noqa: E402

PLAN = (
    'Route.\nFIXTURE-PLAN {"name": "triage", "steps": [{"tool": "transfer_to_weather_agent", "args": {}}, '
    '{"tool": "get_weather", "args": {"city": "Paris"}}], "final": "Sunny."}'
)
USER = {"role": "user", "content": "Weather in Paris?"}


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def _post(s: FakeOpenAI, path: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
    conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def _request(n_results: int) -> dict:
    items = [USER]
    for i in range(n_results):
        items += [
            {"type": "function_call", "call_id": f"c{i}", "name": "t", "arguments": "{}"},
            {"type": "function_call_output", "call_id": f"c{i}", "output": "ok"},
        ]
    return {"model": "gpt-4o-mini", "instructions": PLAN, "input": items}


def _check_usage(usage: dict, record: dict) -> None:
    """Served in the Responses spelling; recorded normalised (prompt incl. cached, completion incl. reasoning)."""
    assert usage["input_tokens"] == record["prompt_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == record["cached_tokens"]
    assert usage["output_tokens"] == record["completion_tokens"]
    assert usage["output_tokens_details"]["reasoning_tokens"] == record["reasoning_tokens"]
    assert usage["total_tokens"] == record["prompt_tokens"] + record["completion_tokens"]
    assert record["usage_as_served"] == usage and record["api"] == "openai-responses"


def test_the_plan_drives_the_tool_loop_through_function_call_outputs(server):
    answers = [_post(server, "/v1/responses", _request(k)) for k in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    calls = [body["output"][0] for _, body in answers[:2]]
    assert [(c["type"], c["name"], c["arguments"]) for c in calls] == [
        ("function_call", "transfer_to_weather_agent", "{}"),
        ("function_call", "get_weather", '{"city":"Paris"}'),
    ]
    assert [c["call_id"] for c in calls] == ["call_triage_1_1", "call_triage_2_1"]
    final = answers[2][1]["output"][0]
    assert final["type"] == "message" and final["content"][0]["text"] == "Sunny."
    assert [r["operation"] for r in server.records] == ["chat"] * 3
    assert [[t["id"] for t in r["tool_calls"]] for r in server.records] == [
        ["call_triage_1_1"],
        ["call_triage_2_1"],
        [],
    ]
    for (_, body), record in zip(answers, server.records, strict=True):
        assert body["model"] == record["response_model"] == "gpt-4o-mini-2024-07-18"
        _check_usage(body["usage"], record)
    assert server.records[0]["cached_tokens"] == 0 and server.records[2]["reasoning_tokens"] > 0


def test_a_token_count_is_answered_but_is_no_model_call(server):
    status, count = _post(server, "/v1/responses/input_tokens", _request(1))
    assert status == 200 and count["object"] == "response.input_tokens"
    _, answer = _post(server, "/v1/responses", _request(1))
    assert count["input_tokens"] == answer["usage"]["input_tokens"]  # what the call it precedes is billed
    status, plain = _post(server, "/v1/responses/input_tokens", {"model": "gpt-4o-mini", "input": [USER]})
    assert status == 200 and plain["input_tokens"] > 0  # no plan: counted from the text
    assert [r["operation"] for r in server.records] == ["input_tokens", "chat", "input_tokens"]


def test_failures_are_clear(server):
    status, body = _post(server, "/v1/responses", {"model": "fail-model", "instructions": PLAN, "input": [USER]})
    assert status == 500 and body["error"]["type"] == "server_error"
    assert server.records[-1]["status"] == 500 and server.records[-1]["prompt_tokens"] is None
    status, body = _post(server, "/v1/responses", {**_request(0), "stream": True})
    assert status == 400 and "stream" in body["error"]["message"]
    status, body = _post(server, "/v1/responses", {"model": "gpt-4o-mini", "input": [USER]})
    assert status == 400 and "FIXTURE-PLAN" in body["error"]["message"]
    assert len(server.records) == 1
