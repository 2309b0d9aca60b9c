"""The supervisor with real child processes: readiness, restart with backoff, ordered stop."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from meshtrace.runtime import ports
from meshtrace.runtime.supervisor import ProcessSpec, Supervisor

PY = sys.executable


def _spec(name: str, code: str, **kw: object) -> ProcessSpec:
    return ProcessSpec(name=name, argv=[PY, "-c", code], **kw)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_ready_line_and_ordered_stop(tmp_path: Path) -> None:
    order = tmp_path / "order"
    code = (
        "import signal, sys, time\n"
        "name = sys.argv[1] if len(sys.argv) > 1 else ''\n"
        "def bye(*_):\n"
        f"    open({str(order)!r}, 'a').write(NAME + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('meshtrace: thing listening on 127.0.0.1:1234', flush=True)\n"
        "time.sleep(60)\n"
    )
    lines: list[tuple[str, str]] = []

    async def main() -> None:
        sup = Supervisor(lambda n, line: lines.append((n, line)), ready_timeout=20)
        first = await sup.start(_spec("first", "NAME='first'\n" + code, ready=("thing",)))
        second = await sup.start(_spec("second", "NAME='second'\n" + code, ready=("thing",)))
        assert first.listeners["thing"] == ("127.0.0.1", 1234)
        assert second.pid != first.pid
        await sup.stop_all(timeout=10)

    asyncio.run(main())
    assert order.read_text().split() == ["second", "first"]
    assert ("first", "meshtrace: thing listening on 127.0.0.1:1234") in lines


@pytest.mark.e2e
def test_exit_before_ready_is_an_error_with_the_reason() -> None:
    lines: list[tuple[str, str]] = []

    async def main() -> None:
        sup = Supervisor(lambda n, line: lines.append((n, line)), ready_timeout=20)
        with pytest.raises(RuntimeError, match="exited with status 3 before ready"):
            await sup.start(_spec("bad", "print('port taken'); raise SystemExit(3)", ready=("x",)))
        await sup.stop_all()

    asyncio.run(main())
    assert ("bad", "port taken") in lines


@pytest.mark.e2e
def test_crashed_child_is_restarted_and_said_so(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code = f"open({str(runs)!r}, 'a').write('x'); print('meshtrace: c listening on 127.0.0.1:1', flush=True)"
    lines: list[tuple[str, str]] = []

    async def main() -> None:
        sup = Supervisor(lambda n, line: lines.append((n, line)), ready_timeout=20)
        await sup.start(_spec("crashy", code, ready=("c",)))
        for _ in range(100):  # bounded: 10 s
            if runs.exists() and len(runs.read_text()) >= 2:
                break
            await asyncio.sleep(0.1)
        await sup.stop_all()

    asyncio.run(main())
    assert len(runs.read_text()) >= 2
    assert any("restarting in 0.5s (restart #1)" in line for _, line in lines)


@pytest.mark.e2e
def test_tcp_readiness_for_apps_without_ready_lines() -> None:
    # The app prints nothing, so the test picks its port: a free one, released just before.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import socket, time\n"
        "time.sleep(0.3)\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "time.sleep(60)\n"
    )

    async def main() -> None:
        sup = Supervisor(lambda n, line: None, ready_timeout=20)
        await sup.start(_spec("app", code, ready_tcp=("127.0.0.1", port)))
        assert not ports.is_free("127.0.0.1", port)
        await sup.stop_all()

    asyncio.run(main())


def test_port_owner_names_the_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not ports.is_free("127.0.0.1", port)
        owner = ports.owner("127.0.0.1", port)
        assert owner is not None and owner.startswith(f"pid {os.getpid()} ")
    assert ports.is_free("127.0.0.1", port)
    assert ports.owner("127.0.0.1", port) is None
