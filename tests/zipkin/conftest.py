"""A running `meshtrace collector` with the zipkin receiver on port 0 -> [processors] -> file
exporter, and the OTLP it wrote, read back as protobuf messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshtrace.model import otlp_json
from meshtrace.model.attributes import as_python


def attrs(attributes: list[KeyValue]) -> dict[str, Any]:
    return {kv.key: as_python(kv.value) for kv in attributes}


@dataclass
class Written:
    """One span as the file exporter wrote it, with its resource and scope."""

    resource: dict[str, Any]
    scope: tuple[str, str]
    span: Span


@dataclass
class ZipkinCollector:
    proc: Any  # conftest.MeshtraceProcess
    out: Path

    @property
    def address(self) -> str:
        return self.proc.address("zipkin")

    def url(self, path: str = "/api/v2/spans") -> str:
        return f"http://{self.address}{path}"

    def written(self) -> list[Written]:
        found: list[Written] = []
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                if line.strip():
                    for rs in otlp_json.loads(line).resource_spans:
                        for ss in rs.scope_spans:
                            found.extend(
                                Written(
                                    attrs(list(rs.resource.attributes)), (ss.scope.name, ss.scope.version), s
                                )
                                for s in ss.spans
                            )
        return found

    def wait_until(self, done: Callable[[list[Written]], bool], timeout: float = 15.0) -> list[Written]:
        """The spans written, once `done` says so (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.written()
            if done(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_for(self, want: int, timeout: float = 15.0) -> list[Written]:
        """The spans written, once there are at least `want` (or the timeout passed)."""
        return self.wait_until(lambda found: len(found) >= want, timeout)


@pytest.fixture
def zipkin_collector(meshtrace_process: Any, tmp_path: Path) -> Callable[..., ZipkinCollector]:
    """`zipkin_collector(processors={...}, receiver={...})` starts one and waits for its ready line."""

    def start(
        processors: dict[str, Any] | None = None, receiver: dict[str, Any] | None = None
    ) -> ZipkinCollector:
        out = tmp_path / "out.jsonl"
        config = {
            "receivers": {"zipkin": {"endpoint": "127.0.0.1:0", **(receiver or {})}},
            "processors": processors or {},
            "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
            "service": {
                "pipelines": {
                    "traces": {
                        "receivers": ["zipkin"],
                        "processors": list(processors or {}),
                        "exporters": ["file"],
                    }
                },
                "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
            },
        }
        path = tmp_path / "collector.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = meshtrace_process(["collector", "--config", str(path)])
        proc.wait_for_listeners("zipkin")
        return ZipkinCollector(proc, out)

    return start
