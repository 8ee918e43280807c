"""Addresses: what other hosts can connect to, and what a Unix domain socket's path can hold."""

from __future__ import annotations

import os
import socket


def advertised(endpoint: str, host: str | None = None) -> str:
    """``endpoint`` with a wildcard host (``0.0.0.0``, ``*``, ``[::]``) replaced by ``host``
    (default: the environment variable ``BEAMPIPE_HOST``, else this host's name), so that
    processes on other hosts can connect to it."""
    host = host or os.environ.get("BEAMPIPE_HOST") or socket.gethostname()
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"):
        if endpoint.startswith(wildcard):
            return f"tcp://{host}:{endpoint[len(wildcard) :]}"
    return endpoint


IPC_PATH_MAX = 107
"""Bytes of a Unix domain socket's path (``ipc://PATH``) on Linux: ``sun_path`` holds 108,
with the final NUL (104 on macOS)."""


def ipc_path_problem(endpoint: str) -> str | None:
    """What is wrong with ``endpoint`` as an ``ipc://`` address, or ``None`` (also for another
    transport's)."""
    if not endpoint.startswith("ipc://"):
        return None
    size = len(endpoint[len("ipc://") :].encode())
    if size <= IPC_PATH_MAX:
        return None
    return (
        f"the socket path {endpoint} is {size} bytes long, more than the {IPC_PATH_MAX} a Unix "
        "domain socket's path may have"
    )
