"""What several benchmarks share: a process's CPU time and peak RSS from /proc, a free port, and
the Markdown table they print."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's own peak resident set (VmHWM), in MiB."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match[1]) / 1024 if match else 0.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, to restart a process on the same address after killing it."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
