"""Recognition of the three conventions (GenAI, OpenInference, OpenLLMetry) from real SDK spans, their OTLP protobuf
encoding and hand-written OTLP/JSON; messages; decoding edge cases; errors."""

from __future__ import annotations

import json
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from otel_bridge.messages import Message, ToolCall
from otel_bridge.semconv import CACHE_READ_KEYS, CACHE_WRITE_KEYS, REASONING_KEYS, recognise, recognise_trace, run_id
from otel_bridge.semconv_tables import EXCLUSIVE_KEYS
from otel_bridge.spans import (
    DecodeError,
    logs_from_otlp_json,
    logs_from_otlp_proto,
    span_from_sdk,
    spans_from_otlp_json,
    spans_from_otlp_proto,
)

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider(resource=Resource.create({"service.name": "svc"}))
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("test", "1.0")
TRACE, SPAN, SPAN2 = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00f067aa0ba902b7"


def finished(build) -> list:
    EXPORTER.clear()
    build()
    return list(EXPORTER.get_finished_spans())


def bridge(readable: list, path: str) -> list:
    if path == "sdk":
        return [span_from_sdk(s) for s in readable]
    decoded = spans_from_otlp_proto(encode_spans(readable).SerializeToString())
    assert decoded.rejected == 0
    return decoded.items


def one(attrs: dict, path: str = "sdk", events: tuple = (), status: Status | None = None):
    def build():
        with TRACER.start_as_current_span("op", attributes=attrs, record_exception=False) as s:
            for name, ev_attrs in events:
                s.add_event(name, ev_attrs)
            if status is not None:
                s.set_status(status)

    return recognise(bridge(finished(build), path)[0])


@pytest.fixture(params=["sdk", "proto"])
def path(request):
    return request.param


def jv(v) -> dict:
    """A Python value as an OTLP/JSON AnyValue (int64 as a string, as the spec writes it)."""
    if isinstance(v, list):
        return {"arrayValue": {"values": [jv(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": jv(x)} for k, x in v.items()]}}
    kind = {bool: "boolValue", int: "intValue", float: "doubleValue", str: "stringValue"}[type(v)]
    return {kind: str(v) if kind == "intValue" else v}


def jdoc(*spans: dict, key: str = "resourceSpans", scopes: str = "scopeSpans", leaf: str = "spans") -> dict:
    res = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    return {key: [{"resource": res, scopes: [{"scope": {"name": "s", "version": "2"}, leaf: list(spans)}]}]}


def jspan(span_id: str = SPAN, attrs: dict | None = None, **fields) -> dict:
    attributes = [{"key": k, "value": jv(v)} for k, v in (attrs or {}).items()]
    return {"traceId": TRACE, "spanId": span_id, "name": "op", "kind": 1, "attributes": attributes, **fields}


# ------------------------------------------------------------------------------------------- 1. kind, operation

KIND_CASES = [
    *[({"gen_ai.operation.name": op}, kind, op) for op, kind in [
        ("chat", "llm"), ("text_completion", "llm"), ("generate_content", "llm"), ("embeddings", "embedding"),
        ("retrieval", "retriever"), ("create_agent", "agent"), ("invoke_agent", "agent"),
        ("invoke_workflow", "chain"), ("execute_tool", "tool")]],
    ({"openinference.span.kind": "TOOL"}, "chain", "tool"),  # names no tool: a step (an Agents-SDK handoff)
    *[({"openinference.span.kind": oi, "tool.name": "t"}, kind, op) for oi, kind, op in [
        ("LLM", "llm", "llm"), ("EMBEDDING", "embedding", "embedding"), ("CHAIN", "chain", "chain"),
        ("TOOL", "tool", "tool"), ("AGENT", "agent", "agent"), ("RETRIEVER", "retriever", "retriever"),
        ("RERANKER", "retriever", "reranker"), ("GUARDRAIL", "chain", "guardrail"), ("PROMPT", "other", None)]],
    *[({"traceloop.span.kind": tl, "traceloop.entity.name": "e"}, kind, tl) for tl, kind in [
        ("workflow", "chain"), ("task", "chain"), ("agent", "agent"), ("tool", "tool")]],
    *[({"llm.request.type": rt}, kind, rt) for rt, kind in [
        ("chat", "llm"), ("completion", "llm"), ("embedding", "embedding"), ("rerank", "retriever")]],
    ({"gen_ai.system": "openai"}, "llm", None),
    ({"http.request.method": "GET", "url.full": "https://example.com/"}, "other", None),
    ({"gen_ai.operation.name": "chat", "openinference.span.kind": "TOOL"}, "llm", "chat"),  # GenAI first
]  # fmt: skip


@pytest.mark.parametrize(("attrs", "kind", "operation"), KIND_CASES)
def test_kind_and_operation(attrs, kind, operation, path):
    a = one(attrs, path)
    assert (a.kind, a.operation) == (kind, operation)


@pytest.mark.parametrize(("attrs", "root"), [
    ({"gen_ai.operation.name": "invoke_agent"}, True), ({"gen_ai.operation.name": "create_agent"}, False),
    ({"gen_ai.operation.name": "invoke_workflow"}, True), ({"traceloop.span.kind": "workflow"}, True),
    ({"traceloop.span.kind": "task"}, False), ({"openinference.span.kind": "AGENT"}, True),
    ({"gen_ai.operation.name": "chat"}, False),
])  # fmt: skip
def test_is_run_root_kind(attrs, root):
    assert one(attrs).is_run_root_kind is root


# ------------------------------------------------------------------------------------------- 2. precedence

TOKENS_ALL = {"gen_ai.usage.input_tokens": 7, "gen_ai.usage.prompt_tokens": 8, "llm.token_count.prompt": 9,
              "gen_ai.usage.output_tokens": 3, "gen_ai.usage.completion_tokens": 4, "llm.token_count.completion": 5}  # fmt: skip
WITHOUT_CURRENT = {
    k: v for k, v in TOKENS_ALL.items() if k not in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
}


@pytest.mark.parametrize(("attrs", "want"), [
    ({"gen_ai.response.model": "r", "gen_ai.request.model": "q", "llm.model_name": "oi"}, {"model": "r", "request_model": "q"}),
    ({"gen_ai.request.model": "q", "llm.model_name": "oi"}, {"model": "q", "request_model": "q"}),
    ({"llm.model_name": "oi", "openinference.span.kind": "LLM"}, {"model": "oi", "request_model": None}),
    ({"embedding.model_name": "emb", "openinference.span.kind": "EMBEDDING"}, {"model": "emb"}),
    ({"gen_ai.provider.name": "Anthropic", "gen_ai.system": "openai", "llm.provider": "cohere"}, {"provider": "anthropic"}),
    ({"gen_ai.system": "mistralai", "llm.provider": "openai", "llm.system": "cohere"}, {"provider": "mistral_ai"}),
    ({"llm.provider": "vertexai", "llm.system": "openai"}, {"provider": "gcp.vertex_ai"}),
    ({"llm.system": "azure"}, {"provider": "azure.ai.openai"}),
    ({"gen_ai.system": "aws"}, {"provider": "aws.bedrock"}),
    ({"gen_ai.provider.name": "Acme"}, {"provider": "acme"}),
    (TOKENS_ALL, {"input_tokens": 7, "output_tokens": 3}),
    (WITHOUT_CURRENT, {"input_tokens": 8, "output_tokens": 4}),
    ({"llm.token_count.prompt": 9, "llm.token_count.completion": 5}, {"input_tokens": 9, "output_tokens": 5}),
    *[({"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 1000, key: 42},
       {field: 42, "input_tokens": 1000, "output_tokens": 1000 + (42 if key in EXCLUSIVE_KEYS else 0)})
      for keys, field in ((CACHE_READ_KEYS, "cached_input_tokens"), (CACHE_WRITE_KEYS, "cache_write_tokens"),
                          (REASONING_KEYS, "reasoning_tokens")) for key in keys],
    (dict(zip(CACHE_READ_KEYS + CACHE_WRITE_KEYS + REASONING_KEYS, range(1, 100), strict=False)),
     {"cached_input_tokens": 1, "cache_write_tokens": 1 + len(CACHE_READ_KEYS),
      "reasoning_tokens": 1 + len(CACHE_READ_KEYS) + len(CACHE_WRITE_KEYS)}),
])  # fmt: skip
def test_precedence(attrs, want, path):
    a = one(attrs, path)
    assert {k: getattr(a, k) for k in want} == want


# ------------------------------------------------------------------------------------------- 3. normalisation


@pytest.mark.parametrize(("inp", "read", "write", "out", "reasoning", "expected"), [
    (100, 400, 50, 10, 30, (550, 40)),  # exclusive (Anthropic style): parts added
    (550, 400, 50, 40, 30, (550, 40)),  # inclusive: unchanged
    (450, 400, 50, 30, 30, (450, 30)),  # all cached / all reasoning, inclusive: unchanged
    (100, 400, None, 10, None, (500, 10)),
])  # fmt: skip
def test_token_normalisation(inp, read, write, out, reasoning, expected, path):
    attrs = {"gen_ai.usage.input_tokens": inp, "gen_ai.usage.cache_read.input_tokens": read,
             "gen_ai.usage.cache_creation.input_tokens": write, "gen_ai.usage.output_tokens": out,
             "gen_ai.usage.reasoning.output_tokens": reasoning}  # fmt: skip
    a = one({k: v for k, v in attrs.items() if v is not None}, path)
    assert (a.input_tokens, a.output_tokens) == expected
    assert (a.cached_input_tokens, a.cache_write_tokens, a.reasoning_tokens) == (read, write, reasoning)


# ------------------------------------------------------------------------------------------- 4. malformed values

BASE = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai"}


@pytest.mark.parametrize(("bad", "field", "value"), [
    ({"gen_ai.usage.input_tokens": -5}, "input_tokens", None),
    ({"gen_ai.usage.input_tokens": "twelve"}, "input_tokens", None),
    ({"gen_ai.usage.input_tokens": "-12"}, "input_tokens", None),
    ({"gen_ai.usage.output_tokens": True}, "output_tokens", None),
    ({"gen_ai.usage.input_tokens": -1, "llm.token_count.prompt": 5}, "input_tokens", 5),  # next convention used
])  # fmt: skip
def test_malformed_tokens_skipped(bad, field, value, path):
    a = one(BASE | bad, path)
    assert getattr(a, field) == value
    assert a.skipped == [next(iter(bad))]
    assert (a.kind, a.model, a.provider) == ("llm", "gpt-4o", "openai")


@pytest.mark.parametrize(("bad", "key"), [
    ({"gen_ai.input.messages": "not json ["}, "gen_ai.input.messages"),
    ({"gen_ai.input.messages": '{"role": "user"}'}, "gen_ai.input.messages"),
    ({"metadata": "{oops"}, "metadata"),
])  # fmt: skip
def test_malformed_content_skipped(bad, key, path):
    a = one(BASE | bad | {"gen_ai.usage.input_tokens": 3}, path)
    assert a.input_messages == [] and a.metadata == {}
    assert a.skipped == [key]
    assert (a.kind, a.model, a.input_tokens) == ("llm", "gpt-4o", 3)


# ------------------------------------------------------------------------------------------- 5. context


def nested(*levels: dict) -> dict:
    def build(i: int = 0):
        if i < len(levels):
            with TRACER.start_as_current_span(f"s{i}", attributes=levels[i]):
                build(i + 1)

    return {a.name: a for a in recognise_trace(bridge(finished(build), "proto"))}


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner", "gen_ai.conversation.id": "c-1",
         "session.id": "s-1", "user.id": "u-1"}  # fmt: skip
CHAT = {"gen_ai.operation.name": "chat"}
INNER = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder", "gen_ai.conversation.id": "c-2"}


@pytest.mark.parametrize(("levels", "want"), [
    ((AGENT, {"http.request.method": "POST"}, CHAT), ("planner", "planner", "c-1", "s-1", "u-1")),  # through a plain span
    ((AGENT, INNER, CHAT | {"user.id": "u-own"}), ("coder", "coder", "c-2", "s-1", "u-own")),  # nearest agent; own kept
    ((AGENT, {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "asst_1"}, CHAT),
     ("asst_1", None, "c-1", "s-1", "u-1")),  # an agent's identity is never half its parent's
])  # fmt: skip
def test_context_inheritance(levels, want):
    got = nested(*levels)
    a = got["s2"]
    assert (a.agent, a.agent_name, a.conversation_id, a.session_id, a.user_id) == want
    assert (got["s1"].agent, got["s1"].conversation_id) == (want[0], want[2])  # the middle span too


# ------------------------------------------------------------------------------------------- 6. messages

GENAI_IN = [
    {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}]},
]  # fmt: skip
GENAI_OUT = [{"role": "assistant", "parts": [{"type": "text", "content": "It is rainy."}], "finish_reason": "stop"}]
GENAI_SYS = [{"type": "text", "content": "Be brief."}]
GENAI_EXPECTED = (
    [Message("system", "Be brief."), Message("user", "Weather in Paris?"),
     Message("assistant", None, [ToolCall("call_1", "get_weather", '{"city":"Paris"}')]),
     Message("tool", "rainy", [], "call_1")],
    [Message("assistant", "It is rainy.")],
)  # fmt: skip


def genai_content(structured: bool) -> dict:
    enc = (lambda v: v) if structured else json.dumps
    return {"gen_ai.input.messages": enc(GENAI_IN), "gen_ai.output.messages": enc(GENAI_OUT),
            "gen_ai.system_instructions": enc(GENAI_SYS)}  # fmt: skip


@pytest.mark.parametrize("source", ["sdk-json-string", "proto-json-string", "otlp-json-structured"])
def test_genai_current_messages(source):
    if source == "otlp-json-structured":
        a = recognise(spans_from_otlp_json(jdoc(jspan(attrs=genai_content(True)))).items[0])
    else:
        a = one(genai_content(False), source.split("-")[0])
    assert (a.input_messages, a.output_messages) == GENAI_EXPECTED
    assert (a.input_text, a.output_text, a.skipped) == ("Weather in Paris?", "It is rainy.", [])


CHOICE = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello!"}}
OI, OI_OUT = "llm.input_messages.", "llm.output_messages.0.message."
OPENINFERENCE = {
    OI + "0.message.role": "system", OI + "0.message.content": "Be brief.", OI + "1.message.role": "user",
    OI + "1.message.contents.0.message_content.type": "text", OI + "1.message.contents.0.message_content.text": "Weather",
    OI + "1.message.contents.1.message_content.text": "in Paris?", OI_OUT + "role": "assistant",
    OI_OUT + "tool_calls.0.tool_call.id": "call_1", OI_OUT + "tool_calls.0.tool_call.function.name": "get_weather",
    OI_OUT + "tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
}  # fmt: skip
OPENLLMETRY = {
    "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Hi", "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.content": "Hello", "gen_ai.completion.0.tool_calls.0.id": "c1",
    "gen_ai.completion.0.tool_calls.0.name": "lookup", "gen_ai.completion.0.tool_calls.0.arguments": '{"q":1}',
}  # fmt: skip
EVENTS = (("gen_ai.system.message", {"content": "Be kind."}), ("gen_ai.user.message", {"content": "Hi"}),
          ("gen_ai.choice", {"gen_ai.event.content": json.dumps(CHOICE)}))  # fmt: skip
STRANDS_EVENTS = (
    ("gen_ai.user.message", {"content": '[{"text": "Weather?"}]'}),
    ("gen_ai.assistant.message", {"content": json.dumps([{"toolUse": {"toolUseId": "t1", "name": "get_weather",
                                                                      "input": {"city": "Paris"}}}])}),
    ("gen_ai.tool.message", {"content": json.dumps([{"toolResult": {"toolUseId": "t1", "status": "success",
                                                                    "content": [{"json": {"c": 18}}, {"text": "ok"}]}}])}),
    ("gen_ai.choice", {"finish_reason": "end_turn", "message": '[{"text": "18°C"}]'}),
)  # fmt: skip


@pytest.mark.parametrize(("attrs", "events", "inputs", "outputs", "texts"), [
    (CHAT, EVENTS, [Message("system", "Be kind."), Message("user", "Hi")], [Message("assistant", "Hello!")],
     ("Hi", "Hello!")),  # deprecated GenAI span events
    ({"openinference.span.kind": "LLM"} | OPENINFERENCE, (),
     [Message("system", "Be brief."), Message("user", "Weather\nin Paris?")],
     [Message("assistant", None, [ToolCall("call_1", "get_weather", '{"city": "Paris"}')])], ("Weather\nin Paris?", None)),
    ({"llm.request.type": "chat"} | OPENLLMETRY, (), [Message("user", "Hi")],
     [Message("assistant", "Hello", [ToolCall("c1", "lookup", '{"q":1}')])], ("Hi", "Hello")),
    ({"gen_ai.prompt": "Say hi", "gen_ai.completion": "hi"}, (), [Message("user", "Say hi")],
     [Message("assistant", "hi")], ("Say hi", "hi")),  # deprecated GenAI strings
    ({"input.value": "raw in", "output.value": "raw out", "gen_ai.prompt.0.content": "Hi"}, (),
     [Message("user", "Hi")], [], ("raw in", "raw out")),  # input.value/output.value win for the texts
    (CHAT, STRANDS_EVENTS,
     [Message("user", "Weather?"), Message("assistant", None, [ToolCall("t1", "get_weather", '{"city":"Paris"}')]),
      Message("tool", '{"c":18}\nok', [], "t1")],
     [Message("assistant", "18°C")], ("Weather?", "18°C")),  # Converse content blocks as JSON text (Strands)
    (CHAT, (("gen_ai.user.message", {"content": '[{"note": "not blocks"}]'}),),
     [Message("user", '[{"note": "not blocks"}]')], [], ('[{"note": "not blocks"}]', None)),  # JSON stays text
    ({"openinference.span.kind": "LLM", OI + "0.message.role": "human", OI + "0.message.content": "Hi",
      OI_OUT + "role": "model", OI_OUT + "content": "Hello"}, (),
     [Message("user", "Hi")], [Message("assistant", "Hello")], ("Hi", "Hello")),  # provider names for roles
])  # fmt: skip
def test_messages(attrs, events, inputs, outputs, texts, path):
    a = one(attrs, path, events)
    assert (a.input_messages, a.output_messages, (a.input_text, a.output_text), a.skipped) == (
        inputs,
        outputs,
        texts,
        [],
    )


# ------------------------------------------------------------------------------------------- 7. OTLP/JSON, protobuf


@pytest.mark.parametrize("kind", [3, "3", "SPAN_KIND_CLIENT"])
@pytest.mark.parametrize("code", [2, "STATUS_CODE_ERROR"])
def test_otlp_json_encoding(kind, code):
    attrs = [
        {"key": "n_str", "value": {"intValue": "12"}}, {"key": "n_num", "value": {"intValue": 12}},
        {"key": "arr", "value": jv(["a", 1, True])}, {"key": "kv", "value": jv({"x": {"y": 0.5}})},
        {"key": "raw", "value": {"bytesValue": "aGk="}}, {"key": "snake", "value": {"string_value": "s"}},
    ]  # fmt: skip
    span = {"trace_id": TRACE.upper(), "span_id": SPAN, "parent_span_id": SPAN2, "name": "op", "kind": kind,
            "startTimeUnixNano": "1700000000000000000", "end_time_unix_nano": 1700000000250000000,
            "status": {"code": code, "message": "boom"}, "attributes": attrs,
            "events": [{"name": "e", "timeUnixNano": 5, "attributes": []}]}  # fmt: skip
    d = spans_from_otlp_json(json.dumps(jdoc(span)).encode())
    assert (d.rejected, d.error) == (0, None)
    s = d.items[0]
    assert (s.trace_id, s.span_id, s.parent_span_id, s.kind, s.status_code) == (TRACE, SPAN, SPAN2, 3, 2)
    assert dict(s.attributes) == {
        "n_str": 12,
        "n_num": 12,
        "arr": ["a", 1, True],
        "kv": {"x": {"y": 0.5}},
        "raw": b"hi",
        "snake": "s",
    }
    assert (s.resource, s.scope_name, s.scope_version, s.events[0].time_ns) == ({"service.name": "svc"}, "s", "2", 5)
    a = recognise(s)
    assert (a.latency_ms, a.error, a.error_message) == (250.0, True, "boom")


@pytest.mark.parametrize(("parent", "flags", "local_root"), [
    (None, 0, True), (SPAN2, 0, False), (SPAN2, 0x100, False), (SPAN2, 0x300, True), (SPAN2, "768", True),
])  # fmt: skip
def test_otlp_json_flags_local_root(parent, flags, local_root):
    span = jspan(flags=flags) | ({"parentSpanId": parent} if parent else {})
    assert spans_from_otlp_json(jdoc(span)).items[0].local_root is local_root


def test_sdk_and_protobuf_remote_parent(path):
    remote = SpanContext(int(TRACE, 16), int(SPAN2, 16), is_remote=True, trace_flags=TraceFlags(1))
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))

    def build():
        with TRACER.start_as_current_span("server", context=ctx):
            with TRACER.start_as_current_span("inner"):
                pass

    spans = {s.name: s for s in bridge(finished(build), path)}
    assert (spans["server"].parent_span_id, spans["server"].local_root, spans["inner"].local_root) == (
        SPAN2,
        True,
        False,
    )


@pytest.mark.parametrize(("trace_id", "message"), [
    ("abc123", "traceId must be 32 hex characters"), ("zz" * 16, "traceId must be hex"),
    ("0" * 32, "traceId must not be all zeros"),
])  # fmt: skip
def test_otlp_json_bad_trace_id_rejected(trace_id, message):
    d = spans_from_otlp_json(jdoc(jspan("1" * 16), jspan("2" * 16) | {"traceId": trace_id}, jspan("3" * 16)))
    assert [s.span_id for s in d.items] == ["1" * 16, "3" * 16]
    assert d.rejected == 1 and d.error.startswith("spans[1]: " + message)


@pytest.mark.parametrize("body", [
    b"not json", b"{", b"[]", b'"x"', b'{"resourceSpans": {}}', b'{"resourceSpans": [1]}',
    b'{"resourceSpans": [{"scopeSpans": [1]}]}', b'{"resourceSpans": [{"scopeSpans": [{"spans": 5}]}]}',
])  # fmt: skip
def test_unreadable_json_body(body):
    with pytest.raises(DecodeError):
        spans_from_otlp_json(body)
    with pytest.raises(DecodeError):
        logs_from_otlp_json(body.replace(b"Spans", b"Logs").replace(b"spans", b"logRecords"))


@pytest.mark.parametrize("decode", [spans_from_otlp_proto, logs_from_otlp_proto])
@pytest.mark.parametrize("body", [b"\x0a\x05ab", b"\xff\xff\xff\xff", b"\x0a\x02\x0a"])  # truncated / bad tag
def test_protobuf_garbage(decode, body):
    with pytest.raises(DecodeError):
        decode(body)


def test_protobuf_short_trace_id_rejected():
    def build():
        for name in ("a", "bad", "c"):
            with TRACER.start_as_current_span(name):
                pass

    req = encode_spans(finished(build))
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = bytes(range(1, 9))
    d = spans_from_otlp_proto(req.SerializeToString())
    assert ([s.name for s in d.items], d.rejected) == (["a", "c"], 1)
    assert "'bad'" in d.error and "trace_id" in d.error


def test_logs_from_otlp_json_attach_to_span():
    records = [
        {"traceId": TRACE, "spanId": SPAN, "timeUnixNano": "7", "eventName": "gen_ai.choice", "body": jv(CHOICE)},
        {"trace_id": TRACE, "span_id": SPAN, "observedTimeUnixNano": 8, "body": jv({"content": "Hi"}),
         "attributes": [{"key": "event.name", "value": jv("gen_ai.user.message")}]},
        {"timeUnixNano": "9", "eventName": "other"},
    ]  # fmt: skip
    d = logs_from_otlp_json(jdoc(*records, key="resourceLogs", scopes="scopeLogs", leaf="logRecords"))
    assert [(r.event_name, r.time_ns, r.trace_id) for r in d.items] == [
        ("gen_ai.choice", 7, TRACE),
        ("gen_ai.user.message", 8, TRACE),
        ("other", 9, None),
    ]
    (a,) = recognise_trace(spans_from_otlp_json(jdoc(jspan(attrs=CHAT))).items, d.items)
    assert (a.input_messages, a.output_messages) == ([Message("user", "Hi")], [Message("assistant", "Hello!")])


def test_logs_from_otlp_proto():
    records = [
        LogRecord(time_unix_nano=7, event_name="gen_ai.choice", trace_id=bytes.fromhex(TRACE),
                  span_id=bytes.fromhex(SPAN), body=AnyValue(string_value=json.dumps(CHOICE))),
        LogRecord(observed_time_unix_nano=8, body=AnyValue(string_value="Hi"),
                  attributes=[KeyValue(key="event.name", value=AnyValue(string_value="gen_ai.user.message"))]),
    ]  # fmt: skip
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])
    d = logs_from_otlp_proto(req.SerializeToString())
    assert [(r.event_name, r.time_ns, r.trace_id, r.span_id, r.body) for r in d.items] == [
        ("gen_ai.choice", 7, TRACE, SPAN, json.dumps(CHOICE)),
        ("gen_ai.user.message", 8, None, None, "Hi"),
    ]


# ------------------------------------------------------------------------------------------- 8. run_id, as_dict

AS_DICT_KEYS = [
    "trace_id", "span_id", "parent_span_id", "kind", "operation", "name", "agent", "agent_id", "model", "provider",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens", "tool_name",
    "tool_call_id", "conversation_id", "session_id", "user_id", "user_email", "service_name", "service_version",
    "environment", "start_ns", "end_ns", "latency_ms", "status", "error_type", "tags", "framework", "billed_in",
]  # fmt: skip


def test_run_id_and_as_dict():
    d = spans_from_otlp_json(jdoc(jspan(SPAN, attrs=CHAT), jspan(SPAN2, attrs=CHAT)))
    a, b = (recognise(s) for s in d.items)
    assert a.run_id == recognise(d.items[0]).run_id == run_id(TRACE, SPAN) != b.run_id
    assert str(uuid.UUID(a.run_id)) == a.run_id
    out = a.as_dict()
    assert list(out) == AS_DICT_KEYS
    assert (out["trace_id"], out["kind"], out["service_name"], out["status"], out["latency_ms"]) == (
        TRACE,
        "llm",
        "svc",
        "ok",
        0.0,
    )
    json.dumps(out)  # serialisable as is


# ------------------------------------------------------------------------------------------- 9. errors


@pytest.mark.parametrize(("attrs", "events", "status", "expected"), [
    ({}, (), None, (False, "ok", None, None)),
    ({}, (), Status(StatusCode.ERROR, "boom"), (True, "error", None, "boom")),
    ({"error.type": "timeout"}, (), None, (True, "error", "timeout", None)),
    # A handled exception (record_exception without an ERROR status) is not a failure ...
    ({}, (("exception", {"exception.type": "ValueError", "exception.message": "bad"}),), None,
     (False, "ok", None, None)),
    # ... an unhandled one is, and its event names the type and message.
    ({}, (("exception", {"exception.type": "ValueError", "exception.message": "bad"}),), Status(StatusCode.ERROR),
     (True, "error", "ValueError", "bad")),
    ({"error.type": "<class 'openai.RateLimitError'>"}, (), Status(StatusCode.ERROR), (True, "error", "openai.RateLimitError", None)),
])  # fmt: skip
def test_errors(attrs, events, status, expected, path):
    a = one(CHAT | attrs, path, events, status)
    assert (a.error, a.status, a.error_type, a.error_message) == expected


def test_plain_text_system_instructions_and_zero_id_logs():
    from otel_bridge.spans import BridgeSpan, logs_from_otlp_json

    s = BridgeSpan("ab" * 16, "cd" * 8, None, "chat", 3, 0, 1, 0, "", {
        "gen_ai.operation.name": "chat", "gen_ai.system_instructions": "be brief",
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]'})  # fmt: skip
    a = recognise(s)
    assert [(m.role, m.content) for m in a.input_messages] == [
        ("system", "be brief"),
        ("user", "hi"),
    ] and a.skipped == []
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {"logRecords": [{"traceId": "0" * 32, "spanId": "0" * 16, "eventName": "x", "timeUnixNano": "1"}]}
                ]
            }
        ]
    }
    (record,) = logs_from_otlp_json(doc).items
    assert (record.trace_id, record.span_id) == (None, None)


def test_run_id_is_an_rfc9562_uuid():
    import uuid

    u = uuid.UUID(run_id("ab" * 16, "cd" * 8))
    assert u.version == 8 and u.variant == uuid.RFC_4122
