"""Who holds a port: so `up` can say "127.0.0.1:8080 is in use by pid 1234 (nginx)" instead of
a bare EADDRINUSE. Reads /proc (Linux); answers None where it cannot tell."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from pathlib import Path

_LISTEN = "0A"


def is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listening_inodes(host: str, port: int) -> set[str]:
    inodes: set[str] = set()
    wanted = {ipaddress.ip_address(host), ipaddress.ip_address("0.0.0.0")}
    for table in ("/proc/net/tcp",):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                addr_hex, port_hex = local.split(":")
                if state != _LISTEN or int(port_hex, 16) != port:
                    continue
                addr = ipaddress.ip_address(bytes.fromhex(addr_hex)[::-1])
                if addr in wanted:
                    inodes.add(inode)
    return inodes


def owner(host: str, port: int) -> str | None:
    """'pid N (command line)' of the process listening on host:port, if /proc tells."""
    inodes = _listening_inodes(host, port)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") in targets:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                        return f"pid {pid} ({cmd[:120]})"
    return "another process (its owner is not visible to this user)"
