"""Addresses that other hosts can connect to."""

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
