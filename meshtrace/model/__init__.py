"""The span model, shared by every component and importing none.

OTLP protobuf (`opentelemetry-proto`) is the wire and in-memory model. Converters to and from
OTLP/JSON, Zipkin and Jaeger JSON live beside it, as pure functions.
"""

from meshtrace.model.traces import Traces

__all__ = ["Traces"]
