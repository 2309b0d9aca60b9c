"""`up`'s run folder: the collector config it writes and one log file per pod, kept after `up`
stops so a crash can be read afterwards; `meshtrace logs` reads them.

Runs live in `<data dir>/runs/<UTC time>-<pid>/` (the data dir of the trace store: `--data-dir`,
else `$MESHTRACE_DATA_DIR`, else `~/.local/share/meshtrace`); the newest KEEP_RUNS are kept.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from meshtrace.accesslog import is_access_log_line
from meshtrace.store.sqlite import default_path

KEEP_RUNS = 10
# What the terminal still shows without `--access-log`: lines that look like trouble, and the
# supervisor's own notes (a child exited, was restarted or killed).
_TROUBLE = re.compile(
    r"\b(warn(ing)?|errors?|critical|traceback|exception|refused|unreachable|failed|nack(ed)?"
    r"|exited with status|killed)\b",
    re.I,
)


def data_dir(given: Path | None) -> Path:
    """Where the trace store keeps traces.db when `up` is not told otherwise."""
    return given if given is not None else default_path().parent


def runs_dir(given: Path | None) -> Path:
    return data_dir(given) / "runs"


def new_run(given: Path | None) -> Path:
    """A fresh run folder (with `logs/`), after pruning all but the newest KEEP_RUNS - 1 runs."""
    root = runs_dir(given)
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in root.iterdir() if p.is_dir())[: -(KEEP_RUNS - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = f"{stamp}-{os.getpid()}"
    for attempt in range(1, 100):  # a second run within the same second in the same process
        run = root / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            run.mkdir()
        except FileExistsError:
            continue
        (run / "logs").mkdir()
        return run
    raise FileExistsError(f"{root / name}: too many runs in one second")


def latest_run(given: Path | None) -> Path | None:
    root = runs_dir(given)
    runs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return runs[-1] if runs else None


def pod_of(process: str) -> tuple[str, str]:
    """`frontend-0/sidecar` -> (`frontend-0`, `sidecar`); `istiod` -> (`istiod`, ``)."""
    pod, _, container = process.partition("/")
    return pod, container


def is_trouble(line: str) -> bool:
    """A line worth a newcomer's attention: a warning or an error, never an access log line."""
    return not is_access_log_line(line) and _TROUBLE.search(line) is not None


class PodLogs:
    """One append-only file per pod (`logs/<pod>.log`; app and sidecar lines prefixed with the
    container's name), plus the last lines in memory to explain a failed start."""

    def __init__(self, run: Path, keep: int = 40) -> None:
        self.folder = run / "logs"
        self._files: dict[str, TextIO] = {}
        self.recent: deque[str] = deque(maxlen=keep)

    def path(self, pod: str) -> Path:
        return self.folder / f"{pod}.log"

    def write(self, process: str, line: str) -> None:
        pod, container = pod_of(process)
        out = self._files.get(pod)
        if out is None:
            out = self._files[pod] = self.path(pod).open("a", encoding="utf-8", buffering=1)
        out.write(f"{container} | {line}\n" if container else line + "\n")
        self.recent.append(f"{process} {line}")

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()


def follow_file(path: Path, emit: Callable[[str], None], follow: bool, poll_s: float = 0.2) -> None:
    """Every line of `path`; with `follow`, then every line appended to it, until interrupted."""
    with path.open(encoding="utf-8", errors="replace") as src:
        while True:
            line = src.readline()
            if line:
                emit(line.rstrip("\n"))
            elif not follow:
                return
            else:
                time.sleep(poll_s)
