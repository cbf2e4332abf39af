"""The recogniser's tables: which attribute, in which convention, means what (read by ``semconv.recognise``).

Precedence wherever two conventions name the same thing: OTel GenAI current > GenAI deprecated > OpenInference >
OpenLLMetry > framework spellings (Strands, Google ADK, pydantic-ai) > Vercel AI SDK ``ai.*``. Sources:
- GenAI registry: https://github.com/open-telemetry/semantic-conventions-genai/blob/main/model/gen-ai/registry.yaml
- OpenInference: https://github.com/Arize-ai/openinference/blob/main/spec/semantic_conventions.md
- OpenLLMetry: opentelemetry-semantic-conventions-ai (``SpanAttributes``, ``TraceloopSpanKindValues``)
- Strands ``strands/telemetry/tracer.py``; Google ADK ``google/adk/telemetry``; pydantic-ai ``usage.py``;
  OpenAI Agents ``opentelemetry-instrumentation-openai-agents-v2``; Semantic Kernel ``model_diagnostics``;
  Vercel AI SDK ``@ai-sdk/otel`` ``legacy-open-telemetry.ts``.
Adding a producer means adding rows here, never a branch in the recogniser.
"""

from __future__ import annotations

# gen_ai.operation.name → kind. The registry's well-known values, then the frameworks' own names. A name not
# here is never an LLM call (DESIGN decision 14): it becomes agent, tool or chain by what it carries, and is
# counted by name (``semconv.unknown_operations``) so new ones surface on /metrics.
GENAI_OPERATION_KIND = {
    # registry (semantic-conventions-genai)
    "chat": "llm",
    "generate_content": "llm",
    "text_completion": "llm",
    "embeddings": "embedding",
    "retrieval": "retriever",
    "create_agent": "agent",
    "invoke_agent": "agent",
    "execute_tool": "tool",
    "invoke_workflow": "chain",
    "plan": "chain",
    "search_memory": "retriever",
    "create_memory": "chain",
    "update_memory": "chain",
    "upsert_memory": "chain",
    "delete_memory": "chain",
    "create_memory_store": "chain",
    "delete_memory_store": "chain",
    # older and vendor spellings of model calls
    "completion": "llm",
    "chat.completions": "llm",  # Semantic Kernel before 1.38
    "chat.streaming_completions": "llm",
    "text.completions": "llm",
    "text.streaming_completions": "llm",
    "transcription": "llm",  # OpenAI Agents instrumentation: audio model calls
    "speech_generation": "llm",
    "embedding": "embedding",
    "rerank": "retriever",  # Vercel AI SDK 7 (@ai-sdk/otel)
    # framework steps: not model calls
    "execute_event_loop_cycle": "chain",  # Strands
    "invoke_swarm": "chain",  # Strands multi-agent; run roots (RUN_ROOT_OPERATIONS)
    "invoke_graph": "chain",
    "agent_step": "chain",  # Vercel AI SDK 7
    "handoff": "chain",
    "agent_handoff": "chain",  # OpenAI Agents instrumentation
    "guardrail": "chain",
    "guardrail_check": "chain",
}
# Operations that start a run like a workflow (DESIGN decision 4): a multi-agent orchestration is one run.
RUN_ROOT_OPERATIONS = frozenset({"invoke_workflow", "workflow", "invoke_swarm", "invoke_graph"})

OPENINFERENCE_KIND = {
    "LLM": "llm",
    "EMBEDDING": "embedding",
    "CHAIN": "chain",
    "TOOL": "tool",
    "AGENT": "agent",
    "RETRIEVER": "retriever",
    "RERANKER": "retriever",
    "GUARDRAIL": "chain",
    "EVALUATOR": "chain",
}
TRACELOOP_KIND = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
LLM_REQUEST_TYPE = {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "retriever"}
# Vercel AI SDK ``ai.operationId``: the call wraps one ``do*`` span per model call (the SDK itself maps the
# wrappers to invoke_agent in its GenAI integration); their aggregated usage is not billed again.
VERCEL_OPERATION_KIND = {
    "ai.generateText": "agent",
    "ai.streamText": "agent",
    "ai.generateObject": "agent",
    "ai.streamObject": "agent",
    "ai.generateText.doGenerate": "llm",
    "ai.streamText.doStream": "llm",
    "ai.generateObject.doGenerate": "llm",
    "ai.streamObject.doStream": "llm",
    "ai.embed": "chain",
    "ai.embedMany": "chain",
    "ai.embed.doEmbed": "embedding",
    "ai.embedMany.doEmbed": "embedding",
    "ai.rerank": "chain",
    "ai.rerank.doRerank": "retriever",
    "ai.toolCall": "tool",
}
# The kind attributes in the order ``semconv._kind`` consults them, with their tables.
KIND_TABLES = (
    ("openinference.span.kind", OPENINFERENCE_KIND),
    ("traceloop.span.kind", TRACELOOP_KIND),
    ("llm.request.type", LLM_REQUEST_TYPE),
    ("ai.operationId", VERCEL_OPERATION_KIND),
)
OPERATION_KEY = "gen_ai.operation.name"
# An unknown operation name is an agent only when it invokes one ("invoke_<something>", the GenAI naming scheme)
# and names it: frameworks stamp a default agent name on every span (the OpenAI Agents instrumentation's
# "unknown" turn spans carry gen_ai.agent.name "OpenAI Agent"), so a name alone does not make an agent.
INVOKE_PREFIXES = ("invoke_", "create_")
# A span naming none of the kind attributes is a tool if it names a tool call, an agent if it names an agent
# (pydantic-ai before 2026-04: ``running tool`` / ``agent run``), an LLM call if it names a provider.
TOOL_EVIDENCE = ("gen_ai.tool.name", "gen_ai.tool.call.id")
AGENT_EVIDENCE = ("gen_ai.agent.name", "gen_ai.agent.id")
LLM_EVIDENCE = ("gen_ai.system", "gen_ai.provider.name")

# Provider spellings seen across conventions → the GenAI registry's ``gen_ai.provider.name`` values.
PROVIDER_ALIASES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "anthropic": "anthropic",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "google": "gcp.gemini",
    "gemini": "gcp.gemini",
    "google.generative-ai": "gcp.gemini",
    "google.vertex": "gcp.vertex_ai",
    "google-vertex": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex_ai": "gcp.vertex_ai",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "amazon-bedrock": "aws.bedrock",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}
# Values of the provider attributes that name a framework, not the model provider (issue 9): kept as
# ``AgentSpan.framework``; the provider comes from another attribute, the wrapped span or the model name.
FRAMEWORKS = {
    "gcp.vertex.agent": "google-adk",
    "strands-agents": "strands-agents",
    "langchain": "langchain",
    "crewai": "crewai",
    "semantic_kernel": "semantic-kernel",
    "pydantic-ai": "pydantic-ai",
    "openai_agents": "openai-agents",
}
# Instrumentation scopes that identify a framework when no attribute does (prefix → framework).
FRAMEWORK_SCOPES = (
    ("gcp.vertex.agent", "google-adk"),
    ("strands.telemetry", "strands-agents"),
    ("pydantic-ai", "pydantic-ai"),
    ("semantic_kernel", "semantic-kernel"),
    ("openinference.instrumentation.google_adk", "google-adk"),
    ("openinference.instrumentation.crewai", "crewai"),
    ("openinference.instrumentation.langchain", "langchain"),
    ("openinference.instrumentation.openai_agents", "openai-agents"),
    ("opentelemetry.instrumentation.openai_agents", "openai-agents"),
    ("ai", "vercel-ai"),
)
# Model name → provider, when no attribute names the provider (a hosted id like ``us.anthropic.claude-…`` on
# Bedrock carries its vendor after a region prefix; the provider is then the host, aws.bedrock).
MODEL_PROVIDERS = (
    ("anthropic.", "aws.bedrock"),
    ("us.anthropic.", "aws.bedrock"),
    ("eu.anthropic.", "aws.bedrock"),
    ("apac.anthropic.", "aws.bedrock"),
    ("amazon.", "aws.bedrock"),
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("chatgpt-", "openai"),
    ("text-embedding-", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gcp.gemini"),
    ("models/gemini", "gcp.gemini"),
    ("mistral", "mistral_ai"),
    ("grok", "x_ai"),
    ("deepseek", "deepseek"),
    ("command", "cohere"),
)

# Each field: attribute keys in precedence order.
# model = response model over request model (GenAI), then OpenInference's names (which hold the response model).
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "embedding.model_name")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "ai.model.provider")
INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
)
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
)
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",  # Anthropic's spelling; Strands
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.details.cache_read_tokens",  # pydantic-ai
    "ai.usage.inputTokenDetails.cacheReadTokens",
    "ai.usage.cachedInputTokens",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.cache_write_input_tokens",  # Strands (Bedrock's cacheWriteInputTokens)
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.details.cache_write_tokens",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.reasoning_tokens",
    "gen_ai.usage.experimental.reasoning_tokens",  # Google ADK before 2.3
    "gen_ai.usage.details.reasoning_tokens",
    "ai.usage.outputTokenDetails.reasoningTokens",
    "ai.usage.reasoningTokens",
)
TOTAL_TOKEN_KEYS = (
    "llm.usage.total_tokens",
    "llm.token_count.total",
    "gen_ai.usage.total_tokens",
    "ai.usage.totalTokens",
)
# Keys whose producer reports the part outside the total it belongs to, when no total says otherwise: ADK
# writes Gemini's thoughts_token_count here while its output_tokens holds only the visible candidates.
EXCLUSIVE_KEYS = frozenset({"gen_ai.usage.experimental.reasoning_tokens"})
CONVERSATION_KEYS = ("gen_ai.conversation.id", "traceloop.association.properties.conversation_id")
SESSION_KEYS = ("session.id", "traceloop.association.properties.session_id", "gen_ai.session.id")
USER_KEYS = ("user.id", "enduser.id", "traceloop.association.properties.user_id")
EMAIL_KEYS = ("user.email", "enduser.email", "traceloop.association.properties.user_email")
TRACELOOP_PROPS = "traceloop.association.properties."
# AgentSpan field ← attribute keys in precedence order. Text fields take non-empty strings, token fields
# non-negative integers (or digit strings); anything else is skipped (token fields list it in ``skipped``).
TEXT_FIELDS = {
    "response_model": ("gen_ai.response.model", "ai.response.model"),
    "request_model": ("gen_ai.request.model", "ai.model.id"),
    "openinference_model": ("llm.model_name", "embedding.model_name"),
    "provider": PROVIDER_KEYS,
    "agent_id": ("gen_ai.agent.id",),
    "agent_name": ("gen_ai.agent.name", "agent.name", "ai.telemetry.functionId"),
    "workflow_name": ("gen_ai.workflow.name", "traceloop.workflow.name"),
    "tool_name": ("gen_ai.tool.name", "tool.name", "ai.toolCall.name"),
    "tool_call_id": ("gen_ai.tool.call.id", "tool_call.id", "tool.id", "ai.toolCall.id"),
    "tool_type": ("gen_ai.tool.type",),
    "conversation_id": CONVERSATION_KEYS,
    "session_id": SESSION_KEYS,
    "user_id": USER_KEYS,
    "user_email": EMAIL_KEYS,
    "entity": ("traceloop.entity.name",),
    "graph_node": ("graph.node.id",),  # OpenInference: an AGENT span's node in the agent graph (CrewAI: the role)
    "error_type": ("error.type",),
}
TOKEN_FIELDS = {
    "input_tokens": INPUT_TOKEN_KEYS,
    "cached_input_tokens": CACHE_READ_KEYS,
    "cache_write_tokens": CACHE_WRITE_KEYS,
    "output_tokens": OUTPUT_TOKEN_KEYS,
    "reasoning_tokens": REASONING_KEYS,
    "total_tokens": TOTAL_TOKEN_KEYS,
}
KIND_KEYS = (OPERATION_KEY, *(key for key, _ in KIND_TABLES), *LLM_EVIDENCE)
# Attribute prefixes that look like GenAI data: what ``inspect --explain`` lists when the recogniser ignored it.
GENAI_PREFIXES = ("gen_ai.", "llm.", "ai.", "traceloop.", "openinference.", "embedding.", "tool.", "agent.")
