"""ErrorBasedSampler: the seed's rule, on the SDK's Sampler interface and inside a real provider."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, TraceIdRatioBased

from meshtrace.sdk import ErrorBasedSampler


def test_error_attribute_true_uses_error_sampler() -> None:
    sampler = ErrorBasedSampler(ALWAYS_OFF)
    assert (
        sampler.should_sample(None, 1, "x", attributes={"error": True}).decision is Decision.RECORD_AND_SAMPLE
    )
    assert sampler.should_sample(None, 1, "x", attributes={"error": False}).decision is Decision.DROP
    assert sampler.should_sample(None, 1, "x", attributes=None).decision is Decision.DROP


def test_only_a_boolean_counts_as_error() -> None:
    # Like Go's AsBool: a string "true" is not a boolean attribute.
    sampler = ErrorBasedSampler(ALWAYS_OFF)
    assert sampler.should_sample(None, 1, "x", attributes={"error": "true"}).decision is Decision.DROP


def test_otherwise_delegates_to_default() -> None:
    assert (
        ErrorBasedSampler(ALWAYS_ON, ALWAYS_OFF).should_sample(None, 1, "x").decision
        is Decision.RECORD_AND_SAMPLE
    )
    assert (
        ErrorBasedSampler(ALWAYS_ON, ALWAYS_OFF)
        .should_sample(None, 1, "x", attributes={"error": True})
        .decision
        is Decision.DROP
    )


def test_description_names_both_samplers() -> None:
    text = ErrorBasedSampler(ParentBased(TraceIdRatioBased(0.1))).get_description()
    assert text.startswith("ErrorBasedSampler{default=ParentBased") and "error=AlwaysOnSampler" in text


def test_in_a_provider_only_error_spans_are_kept_at_zero_rate() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ErrorBasedSampler(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("Database.SelectUsers"):
        pass
    with tracer.start_as_current_span("Database.SelectUsers", attributes={"error": True}):
        pass
    # The limit: an error found after the start does not change the decision.
    with tracer.start_as_current_span("Database.SelectUsers") as span:
        span.set_attribute("error", True)
    spans = exporter.get_finished_spans()
    assert len(spans) == 1 and spans[0].attributes == {"error": True}
    provider.shutdown()
