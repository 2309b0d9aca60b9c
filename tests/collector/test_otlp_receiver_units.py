"""The otlp receiver's decoding core, fuzzed: any body is a batch (plus the spans refused from it)
or a PermanentError (HTTP 400 / INVALID_ARGUMENT), never a crash; and the file exporter's rotation."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.collector.component import ComponentID, PermanentError
from meshtrace.collector.exporters.file import FileConfig, FileExporter, Rotation
from meshtrace.collector.receivers.otlp.receiver import decode_json, decode_protobuf
from meshtrace.model import Traces


def valid_request(spans: int) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        ss.spans.add(name=f"s{i}", trace_id=b"\x01" * 16, span_id=(i + 1).to_bytes(8, "big"))
    return req.SerializeToString()


@settings(max_examples=examples(200), deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda n, cut: valid_request(n)[:cut], st.integers(0, 5), st.integers(0, 400)),
    )
)
def test_fuzz_protobuf_bodies(body: bytes) -> None:
    try:
        traces, refused = decode_protobuf(body)
    except PermanentError:
        return
    sent = ExportTraceServiceRequest.FromString(body)
    assert traces.span_count() + refused.spans == sum(
        len(ss.spans) for rs in sent.resource_spans for ss in rs.scope_spans
    )
    if not refused.spans:
        assert traces.encoded() == body  # forwarded as sent, never re-encoded


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_json_bodies(body: bytes) -> None:
    with contextlib.suppress(PermanentError):
        decode_json(body)


def test_file_exporter_rotates_and_keeps_max_backups(tmp_path: Path) -> None:
    async def main() -> None:
        config = FileConfig(
            path=str(tmp_path / "spans.jsonl"), rotation=Rotation(max_megabytes=1, max_backups=2)
        )
        exporter = FileExporter(ComponentID("file"), config)
        await exporter.start(None)  # type: ignore[arg-type]
        batch = Traces.from_bytes(valid_request(2000))
        for _ in range(12):  # ~200 kB of JSON each
            await exporter.consume_traces(batch)
        await exporter.shutdown()

    asyncio.run(main())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "spans.jsonl" in files
    backups = [f for f in files if f.startswith("spans-")]
    assert len(backups) == 2
    for name in files:
        assert (tmp_path / name).stat().st_size <= 1024 * 1024
