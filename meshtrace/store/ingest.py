"""The writer thread's rows: one ExportTraceServiceRequest turned into `spans` rows, with the name
and resource ids cached, the Bloom filters of its attributes updated, and whole traces deleted
for eviction (all inside the caller's transaction)."""

from __future__ import annotations

import collections
import hashlib
import sqlite3
import zlib
from collections.abc import Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from meshtrace.model.otlp_wire import encoded_attributes
from meshtrace.store import batched
from meshtrace.store.schema import BLOOM_BYTES, TAG_BUCKET_NS, bloom_bits, service_name

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)

_Row = tuple[object, ...]
# (service id, bucket) -> the encoded KeyValues of its spans in one request (a set, so each
# distinct attribute is hashed once per request)
_Tags = dict[tuple[int, int], set[bytes]]


class Ingest:
    """The writer thread's state: name caches and the batch -> rows conversion."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.services: dict[str, int] = {}
        self.operations: dict[tuple[int, str, int], int] = {}
        self.resources: dict[tuple[bytes, str, bytes, str], int] = {}
        self.resource_services: dict[bytes, int] = {}  # encoded Resource -> service id
        self.blooms: dict[tuple[int, int], bytearray] = {}  # (service id, bucket) -> filter
        self.reload_names()

    def forget(self) -> None:
        """Drop every cached id: a rollback may have removed the rows they name."""
        self.resources.clear()
        self.reload_names()

    def reload_names(self) -> None:
        self.resource_services.clear()
        self.blooms.clear()
        self.services = {name: sid for sid, name in self.conn.execute("SELECT id, name FROM services")}
        self.operations = {
            (sid, name, kind): oid
            for oid, sid, name, kind in self.conn.execute("SELECT id, service_id, name, kind FROM operations")
        }

    def _service_id(self, name: str) -> int:
        sid = self.services.get(name)
        if sid is None:
            self.conn.execute("INSERT OR IGNORE INTO services (name) VALUES (?)", (name,))
            sid = self.conn.execute("SELECT id FROM services WHERE name = ?", (name,)).fetchone()[0]
            self.services[name] = sid
        return sid

    def _operation_id(self, key: tuple[int, str, int]) -> int:
        self.conn.execute("INSERT OR IGNORE INTO operations (service_id, name, kind) VALUES (?, ?, ?)", key)
        oid: int = self.conn.execute(
            "SELECT id FROM operations WHERE service_id = ? AND name = ? AND kind = ?", key
        ).fetchone()[0]
        self.operations[key] = oid
        return oid

    def _resource_id(self, key: tuple[bytes, str, bytes, str]) -> int:
        rid = self.resources.get(key)
        if rid is None:
            digest = hashlib.blake2b(
                b"\0".join((key[0], key[1].encode(), key[2], key[3].encode())), digest_size=16
            ).digest()
            self.conn.execute(
                "INSERT OR IGNORE INTO resources (digest, resource, resource_schema_url, scope,"
                " scope_schema_url) VALUES (?, ?, ?, ?, ?)",
                (digest, *key),
            )
            rid = self.conn.execute("SELECT id FROM resources WHERE digest = ?", (digest,)).fetchone()[0]
            if len(self.resources) > 100_000:  # bounded: a cache miss only costs a lookup
                self.resources.clear()
            self.resources[key] = rid
        return rid

    def _resource_service_id(self, resource: bytes, rs: ResourceSpans) -> int:
        service_id = self.resource_services.get(resource)
        if service_id is None:
            service_id = self._service_id(service_name(rs))
            if len(self.resource_services) > 10_000:  # bounded: a miss only costs a lookup
                self.resource_services.clear()
            self.resource_services[resource] = service_id
        return service_id

    def write(self, request: ExportTraceServiceRequest, now_ns: int) -> int:
        """Insert every span of `request` that is not stored yet (inside the caller's
        transaction); returns how many were new. Raises ValueError (or SQLite's errors) on a span
        the store cannot hold; the caller rolls back."""
        rows, op_counts, tags = self._rows(request)
        before = self.conn.execute("SELECT coalesce(max(rowid), 0) FROM spans").fetchone()[0]
        inserted = self.conn.executemany(
            "INSERT OR IGNORE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        ).rowcount
        if inserted < len(rows):
            # some were stored already: count the operations of the new rows only
            op_counts = dict(
                self.conn.execute(
                    "SELECT op_id, count(*) FROM spans WHERE rowid > ? GROUP BY op_id", (before,)
                ).fetchall()
            )
        if inserted:
            self.conn.execute(
                "INSERT OR REPLACE INTO batches VALUES ((SELECT max(rowid) FROM spans), ?)", (now_ns,)
            )
        self.conn.executemany(
            "UPDATE operations SET spans = spans + ? WHERE id = ?", [(n, oid) for oid, n in op_counts.items()]
        )
        self._add_tags(tags)
        return inserted

    def _rows(self, request: ExportTraceServiceRequest) -> tuple[list[_Row], dict[int, int], _Tags]:
        """The `spans` rows of `request`, its span count per operation id and its attributes per
        Bloom filter bucket. The spans' ids are cleared (they are in their columns)."""
        rows: list[_Row] = []
        append = rows.append
        op_counts: dict[int, int] = {}
        operations = self.operations
        tags: _Tags = {}
        encode = KeyValue.SerializeToString
        for rs in request.resource_spans:
            resource = rs.resource.SerializeToString()
            service_id = self._resource_service_id(resource, rs)
            for ss in rs.scope_spans:
                rid = self._resource_id(
                    (resource, rs.schema_url, ss.scope.SerializeToString(), ss.schema_url)
                )
                for span in ss.spans:
                    tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                    if len(tid) != 16 or len(sid) != 8 or tid == _ZERO_TRACE_ID or sid == _ZERO_SPAN_ID:
                        # Receivers refuse these (model/validate.py); one that gets here is
                        # dropped and counted by the writer's isolation, never silently skipped.
                        raise ValueError(f"span {span.name!r}: invalid trace or span id")
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    key = (service_id, span.name, span.kind)
                    oid = operations.get(key)
                    if oid is None:
                        oid = self._operation_id(key)
                    op_counts[oid] = op_counts.get(oid, 0) + 1
                    bucket_key = (service_id, start // TAG_BUCKET_NS)
                    seen = tags.get(bucket_key)
                    if seen is None:
                        seen = tags[bucket_key] = set()
                    if span.events:
                        for event in span.events:
                            seen.update(map(encode, event.attributes))
                    if span.links:
                        for link in span.links:
                            seen.update(map(encode, link.attributes))
                    span.ClearField("trace_id")
                    span.ClearField("span_id")
                    span.ClearField("parent_span_id")
                    parent = pid if len(pid) == 8 and any(pid) else None  # else a root span
                    duration = end - start if end > start else 0
                    data = span.SerializeToString()
                    # The span's KeyValues, as bytes, read back from its encoding: the same bytes
                    # as serializing each KeyValue, for half the cost (model/otlp_wire.py).
                    seen.update(encoded_attributes(data))
                    append((tid, sid, parent, service_id, oid, start, duration, span.status.code, rid, data))
        return rows, op_counts, tags

    def _add_tags(self, tags: _Tags) -> None:
        """Set the bits of each bucket's new KeyValues in its filter and write it back."""
        updates = []
        for key, encoded in tags.items():
            bits = self.blooms.get(key)
            if bits is None:
                row = self.conn.execute(
                    "SELECT bits FROM tag_buckets WHERE service_id = ? AND bucket = ?", key
                ).fetchone()
                bits = bytearray(zlib.decompress(row[0]) if row else BLOOM_BYTES)
                if len(self.blooms) > 1024:  # bounded: a miss only costs a read
                    self.blooms.clear()
                self.blooms[key] = bits
            for kv in encoded:
                for bit in bloom_bits(kv):
                    bits[bit >> 3] |= 1 << (bit & 7)
            updates.append((*key, zlib.compress(bits, 1)))
        self.conn.executemany("INSERT OR REPLACE INTO tag_buckets VALUES (?, ?, ?)", updates)

    def evict(self, trace_ids: Sequence[bytes]) -> int:
        """Delete whole traces (inside the caller's transaction); returns spans deleted."""
        op_counts: collections.Counter[int] = collections.Counter()
        for (oid,) in batched.rows_in(
            self.conn, "DELETE FROM spans WHERE trace_id IN ({marks}) RETURNING op_id", trace_ids
        ):
            op_counts[oid] += 1
        self.conn.executemany(
            "UPDATE operations SET spans = spans - ? WHERE id = ?", [(n, oid) for oid, n in op_counts.items()]
        )
        gone = self.conn.execute("DELETE FROM operations WHERE spans <= 0 RETURNING id").fetchall()
        if gone:
            self.conn.execute(
                "DELETE FROM services WHERE id NOT IN (SELECT DISTINCT service_id FROM operations)"
            )
        # A bucket older than its service's oldest span is empty now (later ones keep the bits of
        # deleted spans: that only costs a scan of that minute, never a missed match).
        self.conn.execute(
            "DELETE FROM tag_buckets WHERE bucket < coalesce((SELECT min(start_ns) FROM spans"
            " WHERE service_id = tag_buckets.service_id), ?) / ?",
            (1 << 62, TAG_BUCKET_NS),
        )
        self.reload_names()
        return sum(op_counts.values())
