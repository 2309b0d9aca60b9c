"""A child process that ends when its parent does, even a SIGKILLed parent (Linux's parent-death
signal, `prctl(PR_SET_PDEATHSIG)`; elsewhere the child outlives a parent that dies uncleanly).

Used by `meshtrace up` for the processes it runs (before exec) and by the collector for its
JSON-decoding process (as the pool's initializer)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when `parent` (its parent's pid) goes away.

    SIGKILL, not SIGTERM: a SIGTERMed app would try to flush its spans to a collector that died
    with `up` and keep retrying for a minute. Safe before exec: no lookup that forks (libc is
    named, not found with ctypes.util)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before prctl ran: the signal would then never come.
    if os.getppid() != parent:
        os._exit(1)
