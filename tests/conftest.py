"""Shared test fixtures: run a `meshtrace` command as a real process and find its ports from the
ready lines it prints (README.md, Commands), never from guessed port numbers.

Every test is `unit` or `e2e` (docs/testing.md). e2e tests start processes: a `meshtrace`
command, a browser, a tool such as promtool. A test is e2e when it is marked `e2e` or uses a
fixture that requests `starts_processes` (as `meshtrace_process` does); every other test is unit,
and a unit test that starts a process fails, naming the marker it lacks, so the split cannot
drift."""

from __future__ import annotations

import multiprocessing.process
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from meshtrace import ready
from meshtrace.bench import faults

REPO = Path(__file__).resolve().parent.parent
# Test modules import tests/fuzzing.py (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def starts_processes() -> None:
    """Requested by every fixture that starts a process: the tests using them are e2e."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "starts_processes" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
        elif item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.unit)


class _ProcessStarted(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test must not start a process (its speed is `make unit`'s promise): it fails here,
    naming the marker it needs, instead of being counted as unit."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise _ProcessStarted(
            f"{request.node.nodeid} starts a process: mark it `pytest.mark.e2e` (or use an e2e fixture)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


SHARED = REPO.parent / "shared"
SEED_MANIFESTS = SHARED / "seed" / "manifests"


class MeshtraceProcess:
    """A running `python -m meshtrace ...` (or another `module`); stdout and stderr are merged and
    kept in `lines`."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        module: str = "meshtrace",
    ) -> None:
        self.args = args
        # Proxy variables of the machine are not inherited: tests talk to loopback only, and a
        # test that wants a proxy (the sidecar's outbound listener) sets its own.
        full_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.listeners: dict[str, tuple[str, int]] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _pump(self, timeout: float) -> bool:
        """Take one line (waiting up to `timeout`); False when the output has ended."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if line is None:
            return False
        self.lines.append(line)
        parsed = ready.parse(line)
        if parsed is not None:
            self.listeners[parsed[0]] = (parsed[1], parsed[2])
        return True

    def wait_for_listeners(self, *components: str, timeout: float = 30.0) -> dict[str, tuple[str, int]]:
        """Block until every named component has printed its ready line."""
        deadline = time.monotonic() + timeout
        while not all(c in self.listeners for c in components):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no ready line for {components} in {timeout}s:\n" + self.output())
            if not self._pump(0.1) and not all(c in self.listeners for c in components):
                raise RuntimeError(f"process exited ({self.proc.poll()}) before ready:\n" + self.output())
        return self.listeners

    def wait_for_line(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if needle in line:
                    return line
            seen = len(self.lines)
            if not self._pump(0.1):
                break
        raise TimeoutError(f"{needle!r} not printed:\n" + self.output())

    def address(self, component: str) -> str:
        host, port = self.listeners[component]
        return f"{host}:{port}"

    def output(self) -> str:
        while self._pump(0):
            if self._queue.empty():
                break
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the process and wait; kill its whole session if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        while self._pump(0):
            if self._queue.empty():
                break
        return self.proc.returncode


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is `pid` now (read from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the command name may hold spaces and parentheses: fields follow the last ')'
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


@pytest.fixture
def meshtrace_process(starts_processes: None) -> Iterator[type[MeshtraceProcess]]:
    """Factory fixture: `p = meshtrace_process(["collector", ...])`; every process is stopped at the end."""
    started: list[MeshtraceProcess] = []

    class _Tracked(MeshtraceProcess):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield _Tracked
    for p in reversed(started):
        p.stop()


@pytest.fixture
def seed_manifests() -> Path:
    if not SEED_MANIFESTS.is_dir():
        pytest.skip("../shared/seed/manifests not present")
    return SEED_MANIFESTS


@pytest.fixture
def default_collector_args() -> list[str]:
    """`collector` arguments that run the built-in default config (otlp + zipkin -> memory_limiter
    -> batch -> store, with query and health_check) with every listener on a free port."""
    return faults.default_collector_args()


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """`wait_until(check, what, timeout=15.0)`: poll `check` until it returns something truthy and
    return that; TimeoutError naming `what` when it never does."""

    def wait(check: Callable[[], Any], what: str = "condition", timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    return wait


@pytest.fixture
def collector_metric() -> Callable[..., float]:
    """`collector_metric(proc, name, **labels)`: the sum of a collector's self-metric series
    `name` whose labels include `labels`, scraped from its `metrics` listener."""

    def read(proc: MeshtraceProcess, name: str, **labels: str) -> float:
        text = requests.get(f"http://{proc.address('metrics')}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if family.name == name and labels.items() <= sample.labels.items()
        )

    return read


@pytest.fixture
def mesh_yaml() -> Callable[..., str]:
    """`mesh_yaml(collector, percentage, services={"backend": 8080}, literal_tags={})`: an
    IstioOperator whose `otel` provider is `collector`:4317, a mesh-wide Telemetry sampling
    `percentage` (with `literal_tags` as customTags) and a Service per name -> port (targetPort
    8080, selector app=name), as one multi-document YAML."""

    def build(
        collector: str,
        percentage: float,
        services: Mapping[str, int] = {"backend": 8080},
        literal_tags: Mapping[str, str] = {},
    ) -> str:
        tags = "".join(
            f"      {name}:\n        literal:\n          value: {value}\n"
            for name, value in literal_tags.items()
        )
        docs = [
            f"""\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: control-plane
  namespace: istio-system
spec:
  meshConfig:
    extensionProviders:
    - name: otel
      opentelemetry:
        service: {collector}
        port: 4317
""",
            f"""\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: otel
    randomSamplingPercentage: {percentage}
"""
            + ("    customTags:\n" + tags if tags else ""),
        ]
        docs += [
            f"""\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: {port}
    targetPort: 8080
"""
            for name, port in services.items()
        ]
        return "---\n".join(docs)

    return build


class BareHost:
    """A collector Host with no extensions or exporters: only its admission control, for tests
    that start one component in-process."""

    def __init__(self) -> None:
        from meshtrace.collector.admission import Admission

        self.gate = Admission()

    def get_extension(self, id: object) -> None:
        return None

    def get_exporter(self, id: object) -> None:
        return None

    def admission(self) -> Any:
        return self.gate


@pytest.fixture
def bare_host() -> BareHost:
    return BareHost()


@pytest.fixture
def demo_without_backend_sidecar(tmp_path: Path) -> Path:
    """The built-in demo's manifests with the backend opted out of injection (pod annotation
    `sidecar.istio.io/inject: "false"`), in a folder of their own."""
    from meshtrace.runtime.plan import DEFAULT_MANIFESTS

    folder = tmp_path / "manifests"
    folder.mkdir()
    labels = "        app: backend\n        version: v1\n"
    for manifest in DEFAULT_MANIFESTS.iterdir():
        text = manifest.read_text()
        if manifest.name == "40-apps.yaml":
            assert labels in text
            text = text.replace(labels, labels + "      annotations: {sidecar.istio.io/inject: 'false'}\n", 1)
        (folder / manifest.name).write_text(text)
    return folder
