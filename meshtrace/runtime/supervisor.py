"""Child processes with readiness, prefixed logs, restart with backoff and ordered shutdown.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only `meshtrace up`,
which then stops the children in reverse start order (apps before the collector, so spans
flush). PR_SET_PDEATHSIG makes the kernel end a child if `up` itself dies without cleaning up:
with SIGKILL, since a SIGTERMed app would try to flush its spans to a collector that died with
`up` and keep retrying for a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meshtrace import ready
from meshtrace.parentdeath import die_with_parent

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


@dataclass
class ProcessSpec:
    name: str  # shown as the log prefix, e.g. "frontend-0/sidecar"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: tuple[str, ...] = ()  # ready-line components to wait for before the next start
    ready_tcp: tuple[str, int] | None = None  # or: ready once this address accepts connections
    restart: bool = True


def meshtrace_argv(*args: str) -> list[str]:
    """The command line that runs `meshtrace ARGS` with this interpreter."""
    return [sys.executable, "-m", "meshtrace", *args]


LogSink = Callable[[str, str], None]  # (process name, line)


class Child:
    def __init__(self, spec: ProcessSpec, log: LogSink) -> None:
        self.spec = spec
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.listeners: dict[str, tuple[str, int]] = {}
        self.restarts = 0
        self.stopping = False
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.spec.env)
        self._ready = asyncio.Event()
        self.proc = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        self.started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read(self.proc))
        if self.spec.ready_tcp is not None:
            self._poller = asyncio.create_task(self._poll_tcp(self.spec.ready_tcp, self._ready))
        elif not self.spec.ready:
            self._ready.set()

    async def _poll_tcp(self, address: tuple[str, int], event: asyncio.Event) -> None:
        """For apps that print no ready line: ready when their port accepts a connection."""
        while self.proc is not None and self.proc.returncode is None:
            try:
                _, writer = await asyncio.open_connection(*address)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            event.set()
            return

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\n")
            parsed = ready.parse(line)
            if parsed is not None:
                self.listeners[parsed[0]] = (parsed[1], parsed[2])
                if self.spec.ready and all(c in self.listeners for c in self.spec.ready):
                    self._ready.set()
            self.log(self.spec.name, line)

    async def wait_ready(self, timeout: float) -> None:
        """Until every ready line was printed; raises if the process exits or time runs out."""
        assert self.proc is not None
        exited = asyncio.create_task(self.proc.wait())
        became_ready = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, became_ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            became_ready.cancel()
            if not exited.done():
                exited.cancel()
        if became_ready in done and self._ready.is_set():
            return
        if exited in done:
            if self._reader is not None:
                await self._reader  # the last lines explain why
            raise RuntimeError(f"{self.spec.name} exited with status {self.proc.returncode} before ready")
        missing = [c for c in self.spec.ready if c not in self.listeners]
        raise TimeoutError(f"{self.spec.name} not ready after {timeout:.0f}s (no ready line for {missing})")

    async def terminate(self, timeout: float) -> None:
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            self.log(self.spec.name, f"did not stop within {timeout:.0f}s: killed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 2)


class Supervisor:
    """Starts children one by one (each waits for its ready lines), restarts crashed ones with
    backoff, and stops them all in reverse order."""

    def __init__(self, log: LogSink, ready_timeout: float = 60.0) -> None:
        self.log = log
        self.ready_timeout = ready_timeout
        self.children: list[Child] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self, spec: ProcessSpec) -> Child:
        child = Child(spec, self.log)
        self.children.append(child)
        await child.spawn()
        await child.wait_ready(self.ready_timeout)
        self._watchers.append(asyncio.create_task(self._watch(child)))
        return child

    async def start_all(self, specs: list[ProcessSpec]) -> list[Child]:
        """Start independent children concurrently (e.g. every replica's app)."""
        children = [Child(s, self.log) for s in specs]
        self.children.extend(children)
        for c in children:
            await c.spawn()
        await asyncio.gather(*(c.wait_ready(self.ready_timeout) for c in children))
        self._watchers.extend(asyncio.create_task(self._watch(c)) for c in children)
        return children

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping or child.stopping or not child.spec.restart:
                if not (self._stopping or child.stopping):
                    self.log(child.spec.name, f"exited with status {code}")
                return
            # A child that ran a while before crashing starts again from the shortest backoff.
            if time.monotonic() - child.started_at > 60:
                child.restarts = 0
            delay = BACKOFF_S[min(child.restarts, len(BACKOFF_S) - 1)]
            child.restarts += 1
            self.log(
                child.spec.name,
                f"exited with status {code}: restarting in {delay:.1f}s (restart #{child.restarts})",
            )
            await asyncio.sleep(delay)
            if self._stopping or child.stopping:
                return
            child.listeners.clear()
            await child.spawn()

    async def stop_all(self, timeout: float = 15.0) -> None:
        self._stopping = True
        for w in self._watchers:
            w.cancel()
        for child in reversed(self.children):
            await child.terminate(timeout)
