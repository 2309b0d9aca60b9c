"""The `file` exporter: one OTLP/JSON `ExportTraceServiceRequest` per line (or, with
`format: proto`, each encoded request prefixed by its 4-byte big-endian length), as the
Collector's file exporter writes. Optional size-based rotation keeps `max_backups` old files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from meshtrace.collector.component import ComponentID, Host, Kind
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.schema import Duration
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces, otlp_json


@dataclass
class Rotation:
    max_megabytes: int = 100
    max_days: int = 0
    max_backups: int = 100
    localtime: bool = False


@dataclass
class FileConfig:
    path: str = ""
    format: Literal["json", "proto"] = "json"
    append: bool = False
    rotation: Rotation | None = None
    flush_interval: Duration = 1.0
    compression: Literal[""] = ""
    group_by: dict[str, Any] = field(
        default_factory=dict, metadata={"warning": "group_by is not supported: one file is written"}
    )

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must be non-empty")
        if self.append and self.rotation is not None:
            raise ValueError("append and rotation cannot be used together")


class FileExporter:
    def __init__(self, id: ComponentID, config: FileConfig) -> None:
        self.id = id
        self.config = config
        self.path = Path(config.path)
        self.metrics = TELEMETRY.exporter(id)
        self._file: IO[bytes] | None = None
        self._size = 0
        self._flusher: asyncio.Task[None] | None = None

    def _open(self, mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, mode)  # noqa: SIM115 - held open for the exporter's life
        self._size = self._file.tell()

    def _rotate(self) -> None:
        """Move the full file aside with a timestamp and keep at most `max_backups` of them."""
        assert self._file is not None and self.config.rotation is not None
        self._file.close()
        now = (
            datetime.datetime.now() if self.config.rotation.localtime else datetime.datetime.now(datetime.UTC)
        )
        backup = self.path.with_name(f"{self.path.stem}-{now:%Y-%m-%dT%H-%M-%S.%f}{self.path.suffix}")
        os.replace(self.path, backup)
        backups = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))
        for old in backups[: max(0, len(backups) - self.config.rotation.max_backups)]:
            old.unlink(missing_ok=True)
        self._open("wb")

    async def consume_traces(self, traces: Traces) -> None:
        if self.config.format == "json":
            pieces = []
            for piece in otlp_json.iter_dumps(traces.message()):
                pieces.append(piece)
                await asyncio.sleep(0)  # a large batch must not stall receivers while it encodes
            pieces.append("\n")
            record = "".join(pieces).encode()
        else:
            encoded = traces.encoded()
            record = len(encoded).to_bytes(4, "big") + encoded
        assert self._file is not None
        rotation = self.config.rotation
        if (
            rotation is not None
            and self._size
            and self._size + len(record) > rotation.max_megabytes * 1024 * 1024
        ):
            self._rotate()
        self._file.write(record)
        self._size += len(record)
        if not self.config.flush_interval:
            self._file.flush()
        self.metrics.sent_spans.add(traces.span_count())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if self._file is not None:
                self._file.flush()

    async def start(self, host: Host) -> None:
        self._open("ab" if self.config.append else "wb")
        if self.config.flush_interval:
            self._flusher = asyncio.create_task(self._flush_periodically())

    async def shutdown(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._file is not None:
            self._file.close()
            self._file = None


factory = ComponentFactory("file", Kind.EXPORTER, FileConfig, lambda id, config, _: FileExporter(id, config))
