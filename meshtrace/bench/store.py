"""`meshtrace bench store`: the embedded trace store at scale.

1. Fill a store with `--spans` synthetic mesh spans (4-span traces spread over the last 24 h),
   written straight through `TraceStore` (the same writer thread the exporter uses).
2. Start a real `meshtrace collector` (otlp gRPC -> store as in the default config, query extension) on that
   database and send `--ingest-spans` more over OTLP/gRPC: spans/s wall-clock and spans per
   CPU-second of the collector process (= per core), and its RSS.
3. Query latency over HTTP against that collector: trace by id, several searches, api_v3 trace
   summaries and SPM series (the Monitor tab's), p50/p99.
4. Bytes on disk per span.
5. The engine comparison behind the choice of SQLite: the same rows inserted into SQLite and
   DuckDB, then point lookups by trace id and a service/time search (`--engine-rows`, 0 skips).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import queue
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace import ready
from meshtrace.query.spm import timestamp
from meshtrace.store import StoreFullError, TraceStore
from meshtrace.store.synthetic import BACKEND, mesh_traces

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
DAY_NS = 24 * 3600 * 10**9


def copies(
    template: ExportTraceServiceRequest, count: int, rng: random.Random, start_ns: int, span_ns: int
) -> Iterator[bytes]:
    """`count` encoded copies of `template` with fresh trace ids, spread from `start_ns` over
    `span_ns` (cheap: only ids and timestamps change)."""
    base = min(
        s.start_time_unix_nano for rs in template.resource_spans for ss in rs.scope_spans for s in ss.spans
    )
    work = ExportTraceServiceRequest()
    work.CopyFrom(template)
    for i in range(count):
        offset = start_ns + (span_ns * i) // max(count, 1) - base
        fresh: dict[bytes, bytes] = {}
        for rs, orig_rs in zip(work.resource_spans, template.resource_spans, strict=True):
            for ss, orig_ss in zip(rs.scope_spans, orig_rs.scope_spans, strict=True):
                for span, orig in zip(ss.spans, orig_ss.spans, strict=True):
                    tid = fresh.get(orig.trace_id)
                    if tid is None:
                        tid = fresh[orig.trace_id] = rng.randbytes(16)
                    span.trace_id = tid
                    span.start_time_unix_nano = orig.start_time_unix_nano + offset
                    span.end_time_unix_nano = orig.end_time_unix_nano + offset
        yield work.SerializeToString()


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def fill(path: Path, spans: int, now_ns: int) -> tuple[float, int]:
    """Write `spans` spans straight into the store at `path`; (spans/s, spans written). Payloads are
    generated in chunks outside the timed part, so the rate is the store's alone."""
    template = mesh_traces(500, 0, 10**6, seed=7)
    per = span_count(template)
    batches = max(1, spans // per)
    store = TraceStore(path, max_bytes=0, retention_s=0)
    store.open()
    generated = copies(template, batches, random.Random(1), now_ns - DAY_NS, DAY_NS - 60 * 10**9)
    elapsed = 0.0
    try:
        while chunk := list(itertools.islice(generated, 50)):
            started = time.perf_counter()
            for payload in chunk:
                while True:
                    try:
                        store.write(payload)
                        break
                    except StoreFullError:
                        time.sleep(0.01)
            store.flush(timeout=3600)
            elapsed += time.perf_counter() - started
    finally:
        store.close()
    return batches * per / elapsed, batches * per


class Collector:
    """A `meshtrace collector` subprocess; ports come from its ready lines."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshtrace", "collector", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ports: dict[str, tuple[str, int]] = {}
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait(self, *components: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not all(c in self.ports for c in components):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise click.ClickException(f"collector not ready (exit {self.proc.poll()})")
            with contextlib.suppress(queue.Empty):
                parsed = ready.parse(self.lines.get(timeout=0.2))
                if parsed:
                    self.ports[parsed[0]] = (parsed[1], parsed[2])

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB."""
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
            if ":" in line
        )
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def collector_config(path: Path, db: Path) -> None:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {"store": {"path": str(db), "max_bytes": 0, "retention": "0s"}},
        "extensions": {"query": {"endpoint": "127.0.0.1:0"}},
        "service": {
            "extensions": ["query"],
            # As the default config: no batch processor, the store groups concurrent requests.
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["store"]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }
    path.write_text(json.dumps(config))  # JSON is YAML


def stored_rowid(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT coalesce(max(rowid), 0) FROM spans").fetchone()[0])


def ingest(collector: Collector, db: Path, spans: int, now_ns: int) -> tuple[float, float, int]:
    """Send `spans` over OTLP/gRPC (4 requests in flight); (spans/s, spans per CPU-second, sent)."""
    import grpc

    template = mesh_traces(128, 0, 10**6, seed=3)  # 512 spans, the SDK's default export size
    per = span_count(template)
    payloads = list(copies(template, max(1, spans // per), random.Random(2), now_ns - 60 * 10**9, 50 * 10**9))
    sent = len(payloads) * per
    host, port = collector.ports["otlp-grpc"]
    before = stored_rowid(db)
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        export = channel.unary_unary(EXPORT_METHOD, request_serializer=bytes, response_deserializer=bytes)
        cpu0, t0 = collector.cpu_seconds(), time.perf_counter()
        pending: list[tuple[Any, bytes]] = []
        for payload in payloads:
            pending.append((export.future(payload, timeout=60), payload))
            while len(pending) >= 4:
                future, body = pending.pop(0)
                try:
                    future.result()
                except grpc.RpcError as exc:  # refused under pressure: retry, as an SDK would
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                        raise
                    time.sleep(0.05)
                    pending.append((export.future(body, timeout=60), body))
        for future, _ in pending:
            future.result()
        deadline = time.monotonic() + 120
        while (stored := stored_rowid(db) - before) < sent and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed, cpu = time.perf_counter() - t0, collector.cpu_seconds() - cpu0
    if stored < sent:
        raise click.ClickException(f"only {stored} of {sent} spans were stored")
    return sent / elapsed, sent / max(cpu, 1e-9), sent


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def latency(collector: Collector, paths: Callable[[int], str], n: int) -> tuple[float, float]:
    host, port = collector.ports["query"]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    samples = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            conn.request("GET", paths(i))
            response = conn.getresponse()
            body = response.read()
            samples.append((time.perf_counter() - t0) * 1000)
            if response.status != 200:
                raise click.ClickException(f"{paths(i)}: {response.status} {body[:200]!r}")
    finally:
        conn.close()
    return percentiles(samples)


def sample_trace_ids(db: Path, n: int) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        top = conn.execute("SELECT max(rowid) FROM spans").fetchone()[0] or 1
        rng = random.Random(5)
        rows = [
            conn.execute(
                "SELECT trace_id FROM spans WHERE rowid >= ? LIMIT 1", (rng.randint(1, top),)
            ).fetchone()
            for _ in range(n)
        ]
    return [r[0].hex() for r in rows if r]


# The engine comparison's table (the store's indexed columns and span bytes) and its search.
ENGINE_DDL = (
    "CREATE TABLE spans (trace_id BLOB, span_id BLOB, parent_id BLOB, service_id INTEGER,"
    " start_ns BIGINT, duration_ns BIGINT, status INTEGER, data BLOB)"
)
ENGINE_SEARCH = (
    "SELECT trace_id FROM spans WHERE service_id = ? AND start_ns BETWEEN ? AND ?"
    " ORDER BY start_ns DESC LIMIT 20"
)
EngineResult = tuple[str, str, str, str, str]


def engine_rows(rows_count: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """About `rows_count` span rows (ids, service, start, duration, status, span bytes)."""
    template = mesh_traces(250, 0, 10**6, seed=11)
    rows: list[tuple[Any, ...]] = []
    for payload in copies(template, max(1, rows_count // 1000), rng, time.time_ns() - DAY_NS, DAY_NS):
        request = ExportTraceServiceRequest.FromString(payload)
        for service_id, rs in enumerate(request.resource_spans):
            for ss in rs.scope_spans:
                for s in ss.spans:
                    duration = s.end_time_unix_nano - s.start_time_unix_nano
                    rows.append(
                        (
                            s.trace_id,
                            s.span_id,
                            s.parent_span_id or None,
                            service_id % 2,
                            s.start_time_unix_nano,
                            duration,
                            s.status.code,
                            s.SerializeToString(),
                        )
                    )
    return rows


def compare_engines(rows_count: int) -> list[EngineResult]:
    """Insert rows/s, by-id p50 ms, search p50 ms, bytes/row for SQLite and DuckDB on the same rows."""
    rng = random.Random(9)
    rows = engine_rows(rows_count, rng)
    ids = [r[0] for r in rng.sample(rows, min(200, len(rows)))]
    window = (time.time_ns() - 3600 * 10**9, time.time_ns())
    with tempfile.TemporaryDirectory() as tmp:
        results = [sqlite_engine(Path(tmp) / "s.db", rows, ids, window)]
        if importlib.util.find_spec("duckdb") is None:  # a test extra, not a dependency
            return [*results, ("duckdb", "not installed", "", "", "")]
        results.append(duckdb_engine(Path(tmp) / "d.duckdb", rows, ids, window))
    return results


def sqlite_engine(
    path: Path, rows: list[tuple[Any, ...]], ids: list[bytes], window: tuple[int, int]
) -> EngineResult:
    """The rows into SQLite as the store sets it up (WAL, 64 MiB cache, its two indexes)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute(ENGINE_DDL)
    conn.execute("CREATE INDEX a ON spans (trace_id, span_id)")
    conn.execute("CREATE INDEX b ON spans (service_id, start_ns)")
    t0 = time.perf_counter()
    for i in range(0, len(rows), 2000):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[i : i + 2000])
        conn.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - t0)
    by_id = _timed(
        lambda i: conn.execute("SELECT data FROM spans WHERE trace_id = ?", (ids[i],)).fetchall(),
        len(ids),
    )
    found = _timed(lambda i: conn.execute(ENGINE_SEARCH, (i % 2, *window)).fetchall(), 50)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    conn.close()
    return ("sqlite", f"{rate:,.0f}", f"{by_id:.3f}", f"{found:.3f}", f"{size / len(rows):.0f}")


def duckdb_engine(
    path: Path, rows: list[tuple[Any, ...]], ids: list[bytes], window: tuple[int, int]
) -> EngineResult:
    """The same rows into DuckDB (no index it could use for lookups: they scan zone maps)."""
    import duckdb

    duck = duckdb.connect(str(path))
    duck.execute(ENGINE_DDL)
    # DuckDB's Python executemany runs one INSERT per row (~1k rows/s): a multi-row VALUES
    # statement is its fastest path without pandas/pyarrow.
    chunk = 500
    statement = "INSERT INTO spans VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * chunk)
    t0 = time.perf_counter()
    whole = len(rows) - len(rows) % chunk
    for i in range(0, whole, chunk):
        duck.execute(statement, [x for row in rows[i : i + chunk] for x in row])
    rate = whole / (time.perf_counter() - t0)
    by_id = _timed(
        lambda i: duck.execute("SELECT data FROM spans WHERE trace_id = ?", (ids[i],)).fetchall(),
        len(ids),
    )
    found = _timed(lambda i: duck.execute(ENGINE_SEARCH, (i % 2, *window)).fetchall(), 50)
    duck.execute("CHECKPOINT")
    duck.close()
    size = path.stat().st_size
    return ("duckdb", f"{rate:,.0f}", f"{by_id:.3f}", f"{found:.3f}", f"{size / max(whole, 1):.0f}")


def _timed(fn: Callable[[int], object], n: int) -> float:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [title, line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    return "\n".join(out)


def query_paths(ids: list[str], queries: int) -> list[tuple[str, Callable[[int], str], int]]:
    """The measured queries over the last hour: (name, the path of request i, requests)."""
    end_us = time.time_ns() // 1000
    hour = f"&start={end_us - 3600 * 10**6}&end={end_us}"
    tags = urllib.parse.quote(json.dumps({"error": "true"}))
    rare = urllib.parse.quote(json.dumps({"http.response.status_code": "404"}))
    op = urllib.parse.quote("SELECT items")
    v3_hour = "&query.startTimeMin={}&query.startTimeMax={}".format(
        *(urllib.parse.quote(timestamp(us * 1000)) for us in (end_us - 3600 * 10**6, end_us))
    )
    search = f"/api/traces?service={BACKEND}&limit=20{hour}"

    def spm_path(i: int, lookback_s: int) -> str:
        return (
            f"/api/metrics/latencies?service={BACKEND}&quantile=0.95&groupByOperation=true"
            f"&endTs={end_us // 1000 - i}&lookback={lookback_s * 1000}&step=60000&ratePer=600000"
        )

    return [
        ("trace by id", lambda i: f"/api/traces/{ids[i % len(ids)]}", queries),
        ("search service, limit 20, 1h", lambda i: search, queries),
        ("search service+operation, limit 20, 1h", lambda i: f"{search}&operation={op}", queries),
        ("search error=true, limit 20, 1h", lambda i: f"{search}&tags={tags}", queries),
        ("search no match (tag on no span), limit 20, 1h", lambda i: f"{search}&tags={rare}", queries),
        ("search minDuration=50ms, limit 20, 1h", lambda i: f"{search}&minDuration=50ms", queries),
        (
            "api_v3 trace-summaries, all services, depth 20, 1h",
            lambda i: f"/api/v3/trace-summaries?query.searchDepth=20{v3_hour}",
            queries,
        ),
        # SPM: each request a new endTs, so none is answered from the shared-scan cache
        ("SPM latencies p95 by operation, 1h lookback, step 1m", lambda i: spm_path(i, 3600), queries),
        (
            "SPM latencies p95 by operation, 24h lookback, step 1m",
            lambda i: spm_path(i, 24 * 3600),
            max(3, queries // 10),
        ),
    ]


def measure_queries(collector: Collector, db: Path, queries: int) -> list[tuple[str, tuple[float, float]]]:
    """(name, (p50, p99) ms) of each query in `query_paths`, over HTTP, one after the other."""
    ids = sample_trace_ids(db, queries)
    return [(name, latency(collector, path, n)) for name, path, n in query_paths(ids, queries)]


@click.command()
@click.option(
    "--spans", default=1_000_000, show_default=True, help="Spans stored before the queries are measured."
)
@click.option("--ingest-spans", default=200_000, show_default=True, help="Spans sent through the collector.")
@click.option("--queries", default=300, show_default=True, help="Requests per query type.")
@click.option("--engine-rows", default=50_000, show_default=True, help="Rows for SQLite vs DuckDB (0 skips).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Keep the database here.")
def store(spans: int, ingest_spans: int, queries: int, engine_rows: int, data_dir: Path | None) -> None:
    """Store ingest rate through the collector, query latency at SPANS stored, bytes/span, RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        work = data_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        db = work / "traces.db"
        if db.exists():
            raise click.ClickException(f"{db} exists: give an empty --data-dir")
        now_ns = time.time_ns()
        load = os.getloadavg()[0]
        click.echo(f"filling {spans:,} spans into {db} ...", err=True)
        fill_rate, filled = fill(db, max(0, spans - ingest_spans), now_ns)
        config = work / "collector.yaml"
        collector_config(config, db)
        collector = Collector(config)
        try:
            collector.wait("otlp-grpc", "query")
            click.echo(f"sending {ingest_spans:,} spans through the collector ...", err=True)
            rate, per_cpu, sent = ingest(collector, db, ingest_spans, now_ns)
            rss, peak = collector.memory_mib()
            click.echo("measuring queries ...", err=True)
            measured = measure_queries(collector, db, queries)
        finally:
            collector.stop()
        total = filled + sent
        disk = sum(p.stat().st_size for p in work.glob("traces.db*"))
        click.echo(f"\nmeshtrace bench store (load average {load:.1f} on {os.cpu_count()} cores at start)\n")
        click.echo(
            table(
                "ingest",
                ("what", "value"),
                [
                    ("straight into the store, one writer thread (spans/s)", f"{fill_rate:,.0f}"),
                    ("through the collector, OTLP/gRPC (spans/s)", f"{rate:,.0f}"),
                    ("through the collector per CPU-second (spans/s/core)", f"{per_cpu:,.0f}"),
                    ("collector RSS now / peak (MiB)", f"{rss:.0f} / {peak:.0f}"),
                    ("spans stored", f"{total:,}"),
                    ("bytes on disk per span", f"{disk / max(total, 1):.0f}"),
                ],
            )
        )
        click.echo()
        click.echo(
            table(
                f"query latency over HTTP at {total:,} spans (ms)",
                ("query", "p50", "p99"),
                [(name, f"{p50:.1f}", f"{p99:.1f}") for name, (p50, p99) in measured],
            )
        )
        if engine_rows:
            click.echo()
            click.echo(
                table(
                    f"engines, {engine_rows:,} span rows",
                    ("engine", "insert rows/s", "by id p50 ms", "search p50 ms", "bytes/row"),
                    compare_engines(engine_rows),
                )
            )
