"""In-process: GenAI events sent as OTel log records (message content) are correlated with their span."""

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import get_current_span, set_span_in_context

import otel_bridge
from otel_bridge.exporters.batch import BatchExporter
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.pipeline import Pipeline, PipelineOptions


def test_log_record_processor_feeds_chat_events(observatory_sink):
    tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
    exporter = BatchExporter(ObservatorySender(observatory_sink.url, observatory_sink.api_key), interval=0.1)
    pipeline = Pipeline({"observatory": exporter}, PipelineOptions(wait=0.05, max_wait=0.5))
    otel_bridge.install(tracer_provider, logger_provider=logger_provider, pipeline=pipeline)
    tracer, logger = tracer_provider.get_tracer("app"), logger_provider.get_logger("app")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.conversation.id": "c-7",
    }
    with tracer.start_as_current_span("chat gpt-4o", attributes=attrs):
        ctx = set_span_in_context(get_current_span())
        logger.emit(event_name="gen_ai.user.message", body={"content": "where is my parcel?"}, context=ctx)
        logger.emit(
            event_name="gen_ai.choice",
            body={"index": 0, "message": {"role": "assistant", "content": "on its way"}},
            context=ctx,
        )
    tracer_provider.shutdown()
    chats = [(e["role"], e["content"], e["thread_id"]) for e in observatory_sink.events if e["name"] == "chat"]
    assert chats == [("user", "where is my parcel?", "c-7"), ("assistant", "on its way", "c-7")]
    llm_end = next(e for e in observatory_sink.events if e["name"] == "llm_end")
    assert llm_end["input"]["messages"][0]["content"] == "where is my parcel?"
