"""Runs inside the Langflow venv (``record.py`` calls it): prints the two recording flows as Langflow flow JSON.

Built with lfx's own graph API, so nodes, templates and edge handles are exactly what Langflow 1.13 writes:
- "echo": Chat Input → Chat Output;
- "openai": Chat Input → OpenAI (base URL = the fake OpenAI server) → Chat Output;
- "openai_fail": the same with the model the fake server answers with HTTP 500 (the recorded failure).
Usage: make_flows.py <fake_openai_base_url> <model> <failing model>
"""

from __future__ import annotations

import json
import sys

from lfx.components.input_output import ChatInput, ChatOutput
from lfx.components.openai.openai_chat_model import OpenAIModelComponent
from lfx.graph import Graph


def echo() -> dict:
    chat_in, chat_out = ChatInput(), ChatOutput()
    chat_out.set(input_value=chat_in.message_response)
    return Graph(chat_in, chat_out).dump(name="otel-bridge echo", description="Chat Input -> Chat Output")


def openai(base_url: str, model: str) -> dict:
    chat_in, llm, chat_out = ChatInput(), OpenAIModelComponent(), ChatOutput()
    llm.set(input_value=chat_in.message_response, openai_api_base=base_url, api_key="sk-fake-not-secret",
            model_name=model, temperature=0.2, max_retries=0, stream=False)  # fmt: skip
    chat_out.set(input_value=llm.text_response)
    return Graph(chat_in, chat_out).dump(name="otel-bridge openai", description="Chat Input -> OpenAI -> Chat Output")


if __name__ == "__main__":
    flows = {
        "echo": echo(),
        "openai": openai(sys.argv[1], sys.argv[2]),
        "openai_fail": openai(sys.argv[1], sys.argv[3]),
    }
    flows["openai_fail"]["name"] = "otel-bridge openai (failing model)"
    print(json.dumps(flows))
