"""gRPC instrumentation for apps on grpcio's asyncio API: a CLIENT span per unary call and a
SERVER span per handled call, named `<service>/<method>` with the RPC semantic conventions
(`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`), the trace context carried in
the call's metadata by the global propagator (as HTTP headers are). Messages are bytes: the
caller chooses their encoding (no generated stubs needed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from meshtrace.sdk.context import record_error

RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"
# Semantic conventions: a server span is an error only for these codes (the others are the
# caller's doing); a client span for any code but OK.
SERVER_ERROR_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

tracer = trace.get_tracer("meshtrace.sdk.grpc")
UnaryBehavior = Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


def rpc_attributes(service: str, method: str) -> dict[str, str]:
    return {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: method}


def full_method(service: str, method: str) -> str:
    """The HTTP/2 path of a gRPC method: `/package.Service/Method`."""
    return f"/{service}/{method}"


def _finish(span: Span, code: grpc.StatusCode, details: str | None, server: bool) -> None:
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    if code is not grpc.StatusCode.OK and (not server or code in SERVER_ERROR_CODES):
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}".strip(" :")))


async def unary_call(
    channel: grpc.aio.Channel,
    service: str,
    method: str,
    request: bytes,
    timeout: float,
    metadata: Sequence[tuple[str, str]] = (),
    wait_for_ready: bool | None = None,
) -> bytes:
    """Call a unary method with a CLIENT span; raises grpc.aio.AioRpcError as grpcio does.
    `wait_for_ready`: grpcio's (wait for a connection within `timeout` rather than fail at once
    while the channel reconnects)."""
    with tracer.start_as_current_span(
        f"{service}/{method}",
        kind=SpanKind.CLIENT,
        attributes=rpc_attributes(service, method),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        call = channel.unary_unary(full_method(service, method))  # bytes in, bytes out
        try:
            answer: bytes = await call(
                request,
                timeout=timeout,
                metadata=(*metadata, *carrier.items()),
                wait_for_ready=wait_for_ready,
            )
        except grpc.aio.AioRpcError as err:
            _finish(span, err.code(), err.details(), server=False)
            raise
        _finish(span, grpc.StatusCode.OK, None, server=False)
        return answer


def unary_handler(service: str, method: str, behavior: UnaryBehavior) -> grpc.RpcMethodHandler:
    """A unary method handler (bytes in, bytes out) that runs `behavior` in a SERVER span
    continuing the caller's trace from the call's metadata."""

    async def handle(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        with tracer.start_as_current_span(
            f"{service}/{method}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=rpc_attributes(service, method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                answer = await behavior(request, context)
            except grpc.aio.AbortError:  # context.abort(): the status it set is the answer
                _finish(span, context.code() or grpc.StatusCode.UNKNOWN, context.details(), server=True)
                raise
            except Exception as err:
                record_error(span, err)
                span.set_attribute(RPC_GRPC_STATUS_CODE, grpc.StatusCode.UNKNOWN.value[0])
                raise
            _finish(span, context.code() or grpc.StatusCode.OK, context.details(), server=True)
            return answer

    return grpc.unary_unary_rpc_method_handler(handle)


def generic_service(service: str, methods: dict[str, UnaryBehavior]) -> grpc.GenericRpcHandler:
    """A service without generated code: each unary method by name, traced."""
    handlers: dict[str, Any] = {name: unary_handler(service, name, b) for name, b in methods.items()}
    return grpc.method_handlers_generic_handler(service, handlers)
