"""The dead-letter file: messages a node skipped under ``on_error: skip``, or dropped through
:meth:`beampipe.Worker.dead_letter`, one JSON line each.

Every node replica appends to the pipeline's file (``dead_letter:``, default
``<pipeline>.dead-letters.jsonl``). Each line is one object::

    {"time": "2026-11-21T10:15:02.123+00:00", "node": "mu", "replica": 0, "stream": "scan1",
     "id": 100, "error": "ValueError: bad point", "traceback": "...", "metadata": {...}}

``metadata`` is the message's metadata (for an event: ``{port: metadata}``); a drop whose reason
is a text has no ``traceback``. A frame sequence
that could not be decoded is recorded as ``{"time", "node", "replica", "upstream", "bytes",
"error"}`` instead, and an id a source never issued (:mod:`beampipe.runtime.gaps`) as
``{"time", "node", "replica", "stream", "id", "error": "missing: ..."}``, a range of them as one
line with ``"last_id"`` too. A line is written
with one ``write`` on a file opened for appending, so lines of concurrent replicas do not mix.
"""

from __future__ import annotations

import datetime
import json
import os
import traceback
from pathlib import Path
from typing import Any

from beampipe.message import Event, Message


def record(
    path: str | Path, node: str, replica: int, item: Message | Event, exc: BaseException | str
) -> None:
    """Append the dead-letter line for ``item``, whose processing raised ``exc`` (or that was
    dropped for the reason ``exc`` gives).

    Raises:
        OSError: the file cannot be written.
    """
    if isinstance(item, Event):
        metadata: Any = {port: m.metadata for port, m in item.messages.items()}
    else:
        metadata = item.metadata
    line = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "node": node,
        "replica": replica,
        "stream": item.stream,
        "id": item.id,
        "error": f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else exc,
        "metadata": metadata,
    }
    if isinstance(exc, BaseException):
        line["traceback"] = "".join(traceback.format_exception(exc))
    _append(path, line)


def record_corrupt(
    path: str | Path, node: str, replica: int, upstream: str, size: int, exc: BaseException
) -> None:
    """Append the line for a frame sequence of ``size`` bytes from ``upstream`` that could not
    be decoded: ``{"time", "node", "replica", "upstream", "bytes", "error"}`` (stream and id are
    unknown, or named in ``error`` when the header could be read).

    Raises:
        OSError: the file cannot be written.
    """
    line = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "node": node,
        "replica": replica,
        "upstream": upstream,
        "bytes": size,
        "error": f"{type(exc).__name__}: {exc}",
    }
    _append(path, line)


def record_missing(
    path: str | Path, node: str, replica: int, stream: str, first: int, last: int, why: str
) -> None:
    """Append the line for ids ``first`` to ``last`` (both included) of ``stream`` that source
    ``node`` never issued: ``"id": first``, and ``"last_id": last`` when the range holds more
    than one id.

    Raises:
        OSError: the file cannot be written.
    """
    line = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "node": node,
        "replica": replica,
        "stream": stream,
        "id": first,
        **({"last_id": last} if last > first else {}),
        "error": f"missing: {why}" if last == first else f"missing: {last - first + 1} ids: {why}",
    }
    _append(path, line)


def _append(path: str | Path, line: dict[str, Any]) -> None:
    data = (json.dumps(line, default=repr) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
