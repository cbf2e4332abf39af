"""Expected figures for a Langflow recording, read from its monitor answers and from what the fake OpenAI server
answered — never from the receiver's output."""

from __future__ import annotations

from typing import Any

from skillflaw.harness import ROLE, ns, recorded_messages, responses


def flow_names(rec: dict[str, Any]) -> dict[str, str]:
    ((_, flows),) = responses(rec, "/api/v1/flows/")
    return {f["id"]: f["name"] for f in flows}


def _llm_calls(span: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for child in span.get("children") or []:
        if child["type"] == "llm":
            out.append(child)
        out += _llm_calls(child)
    return out


def runs(rec: dict[str, Any], snapshot: str = "exchanges") -> dict[str, dict[str, Any]]:
    """Per Langflow trace id (= OTLP trace id): agent, latency, success, span count, tokens, models, components."""
    names = flow_names(rec)
    details = {q_path.rsplit("/", 1)[1]: body for q_path, body in _details(rec, snapshot)}
    out = {}
    for _, page in responses(rec, "/api/v1/monitor/traces", snapshot):
        for t in page["traces"]:
            d = details[t["id"]]
            calls = [c for s in d["spans"] for c in _llm_calls(s)]
            out[t["id"].replace("-", "")] = {
                "agent": names[t["flowId"]], "latency_ms": t["totalLatencyMs"], "success": t["status"] == "ok",
                "session": t["sessionId"], "spans": 1 + len(d["spans"]) + len(calls),
                "input_tokens": sum(c["tokenUsage"]["promptTokens"] for c in calls if c["tokenUsage"]),
                "output_tokens": sum(c["tokenUsage"]["completionTokens"] for c in calls if c["tokenUsage"]),
                "models": sorted({c["modelName"] for c in calls if c["modelName"]}),
                "components": sorted(s["name"] for s in d["spans"]),
                "failed_components": sorted(s["name"] for s in d["spans"] if s["status"] == "error"),
                "start_ns": ns(t["startTime"]),
            }  # fmt: skip
    return out


def _details(rec: dict[str, Any], snapshot: str) -> list[tuple[str, Any]]:
    return [(e["request"]["path"], e["response"]["body"]) for e in rec[snapshot]
            if e["request"]["path"].startswith("/api/v1/monitor/traces/") and e["response"]["status"] == 200]  # fmt: skip


def counts(rec: dict[str, Any], snapshot: str = "exchanges") -> dict[str, int]:
    """Items per kind the server holds: what a first poll imports."""
    tx = {t["id"] for _, page in responses(rec, "/api/v1/monitor/transactions", snapshot) for t in page["items"]}
    builds = {b["build_id"] for _, body in responses(rec, "/api/v1/monitor/builds", snapshot)
              for entries in body["vertex_builds"].values() for b in entries}  # fmt: skip
    return {"runs": len(runs(rec, snapshot)), "transactions": len(tx), "builds": len(builds),
            "messages": len(recorded_messages(rec, snapshot))}  # fmt: skip


def chats(rec: dict[str, Any], snapshot: str = "exchanges") -> dict[str, dict[str, Any]]:
    """Per message id: the chat event it must become (an error message is the assistant's turn)."""
    out = {}
    for mid, m in recorded_messages(rec, snapshot).items():
        usage = (m.get("properties") or {}).get("usage") or {}
        out[mid] = {"role": ROLE.get(m["sender"], "assistant" if m.get("category") == "error" else None),
                    "content": m["text"], "thread_id": m["session_id"], "ns": ns(m["timestamp"]),
                    "usage": {k: v for k, v in usage.items() if v is not None}}  # fmt: skip
    return out


def fake_openai_tokens(rec: dict[str, Any]) -> tuple[int, int]:
    """Prompt and completion tokens of every call the fake OpenAI server answered with 200."""
    calls = [c for c in rec["expected"]["openai_calls"] if c["status"] == 200]
    return sum(c["prompt_tokens"] for c in calls), sum(c["completion_tokens"] for c in calls)
