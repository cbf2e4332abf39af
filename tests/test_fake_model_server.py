"""The fake model server the fixtures are generated against (tests/fixtures/gen/): over loopback, every protocol
spells the same recorded figures its own way, agent plans drive the tool loop, and the reference fixtures'
numbers are still what it serves without a plan."""

from __future__ import annotations

import http.client
import json
import sys

import pytest
from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES.parent / "gen"))
from fake_openai import FakeOpenAI  # noqa: E402

PLAN = (
    'Be brief.\nFIXTURE-PLAN {"name": "t", "steps": [{"tool": "get_weather", "args": {"city": "Paris"}}], '
    '"final": "Sunny."}'
)


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def _post(s: FakeOpenAI, path: str, body, chunked: bool = False) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
    data = json.dumps(body).encode()
    if chunked:
        conn.putrequest("POST", path)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(data), 7):
            piece = data[i : i + 7]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
    else:
        conn.request("POST", path, data, {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


# Each protocol: (path, first request, follow-up carrying one tool result, how it spells input / output).
PROTOCOLS = {
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": PLAN}]},
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": PLAN}, {"role": "tool", "tool_call_id": "x", "content": "18C"}],
        },
    ),
    "anthropic": (
        "/v1/messages",
        {"model": "claude-sonnet-4-5", "system": PLAN, "messages": []},
        {
            "model": "claude-sonnet-4-5",
            "system": PLAN,
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "18C"}]}],
        },
    ),
    "gemini": (
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {"systemInstruction": {"parts": [{"text": PLAN}]}, "contents": []},
        {
            "systemInstruction": {"parts": [{"text": PLAN}]},
            "contents": [{"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}],
        },
    ),
    "bedrock": (
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
        {"system": [{"text": PLAN}], "messages": []},
        {"system": [{"text": PLAN}], "messages": [{"role": "user", "content": [{"toolResult": {}}]}]},
    ),
}


def _as_served(api: str, u: dict) -> tuple[int, int, int, int, int]:
    """(prompt incl. cache, cache read, cache write, completion incl. reasoning, reasoning) from a usage block."""
    if api == "openai":
        return (
            u["prompt_tokens"],
            u["prompt_tokens_details"]["cached_tokens"],
            0,
            u["completion_tokens"],
            u["completion_tokens_details"]["reasoning_tokens"],
        )
    if api == "anthropic":
        r, w = u["cache_read_input_tokens"], u["cache_creation_input_tokens"]
        return u["input_tokens"] + r + w, r, w, u["output_tokens"], 0
    if api == "gemini":
        thoughts = u.get("thoughtsTokenCount", 0)
        assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"] + thoughts
        return (
            u["promptTokenCount"],
            u.get("cachedContentTokenCount", 0),
            0,
            u["candidatesTokenCount"] + thoughts,
            thoughts,
        )
    r, w = u["cacheReadInputTokens"], u["cacheWriteInputTokens"]
    assert u["totalTokens"] == u["inputTokens"] + r + w + u["outputTokens"]
    return u["inputTokens"] + r + w, r, w, u["outputTokens"], 0


@pytest.mark.parametrize("api", sorted(PROTOCOLS))
def test_a_plan_drives_the_tool_loop_and_usage_is_recorded_as_served(server, api):
    path, first, follow = PROTOCOLS[api]
    assert _post(server, path, first)[0] == 200
    assert _post(server, path, follow, chunked=True)[0] == 200
    tool_call, final = server.records
    assert [t["name"] for t in tool_call["tool_calls"]] == ["get_weather"] and final["tool_calls"] == []
    assert (tool_call["step"], final["step"]) == (0, 1)
    for r in (tool_call, final):
        assert _as_served(api, r["usage_as_served"]) == (
            r["prompt_tokens"],
            r["cached_tokens"],
            r["cache_write_tokens"],
            r["completion_tokens"],
            r["reasoning_tokens"],
        )
    if api in ("anthropic", "bedrock"):  # Claude caching: the first call writes what the next one reads
        assert tool_call["cache_write_tokens"] == final["cached_tokens"] > 0


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/messages", "/v1beta/models/fail-model:generateContent", "/model/fail-model/converse"],
)
def test_fail_model_is_a_500_in_every_protocol(server, path):
    status, _ = _post(server, path, {"model": "fail-model", "messages": []})
    assert status == 500 and server.records[0]["status"] == 500


def test_without_a_plan_the_reference_numbers_are_served(server):
    """The reference fixtures were generated from these answers: they must not move."""
    msgs = [{"role": "user", "content": "What's the weather in Paris?"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    _post(server, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": msgs, "tools": tools})
    _post(
        server, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": msgs + [{"role": "tool", "content": "x"}]}
    )
    _post(
        server,
        "/v1/chat/completions",
        {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "messages": msgs},
    )
    fields = (
        "request_model",
        "response_model",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "streamed",
        "finish_reason",
    )
    expected = json.loads((FIXTURES / "openai_v2.expected.json").read_text())["calls"][:3]
    assert [{f: r[f] for f in fields} for r in server.records] == [{f: c[f] for f in fields} for c in expected]


def test_the_fake_collector_keeps_protobuf_and_refuses_json(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("POST", "/v1/traces", b"\x0a\x00", {"Content-Type": "application/x-protobuf"})
    assert conn.getresponse().status == 200
    assert _post(server, "/v1/traces", {"resourceSpans": []})[0] == 415
    assert server.otlp_traces == [b"\x0a\x00"]
