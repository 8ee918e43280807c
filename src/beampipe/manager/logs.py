"""The node logs of a deployed pipeline: which files a replica's processes wrote, their last
lines, and following them while the pipeline runs (``beampipe logs [--follow]``)."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from beampipe.manager.service import FOLLOW_INTERVAL, _read_json
from beampipe.manager.store import FINAL, PipelineRecord
from beampipe.manager.supervisor import DEPLOYMENT


def log_files(record: PipelineRecord, node: str, replica: int) -> list[Path]:
    """The log files of one node replica, oldest process first.

    Raises:
        HTTPException 404: no such node, or no log of that replica (yet).
    """
    deployment = _read_json(Path(record.dir) / DEPLOYMENT) or {}
    nodes = list((deployment.get("pipeline") or {}).get("nodes", {}))
    if node not in nodes:
        raise HTTPException(
            404, f"pipeline {record.id} has no node {node!r} (nodes: {', '.join(nodes)})"
        )
    logs = Path(record.dir) / "logs"
    prefix = f"{node}.{replica}."
    found = []
    for path in logs.glob("*.log") if logs.is_dir() else []:
        rest = path.name[len(prefix) : -len(".log")]
        if path.name.startswith(prefix) and (rest == "" or rest.isdigit()):
            found.append((int(rest or 0), path))
    if not found:
        raise HTTPException(404, f"no log of node {node!r} replica {replica} (yet)")
    return [path for _, path in sorted(found)]


def follow_log(
    record: PipelineRecord,
    node: str,
    replica: int,
    tail: int | None,
    refresh: Callable[[PipelineRecord], tuple[PipelineRecord, Any, Any]],
) -> Iterator[bytes]:
    """The replica's log from the last ``tail`` lines (all if None) on, going on with the
    lines written later (and with a restarted process's new log) until the pipeline has
    finished (``refresh``: the manager's :meth:`~beampipe.manager.service.Manager.refresh`)."""
    path = log_files(record, node, replica)[-1]
    with contextlib.ExitStack() as files:
        f = files.enter_context(open(path, "rb"))
        yield b"".join(tail_lines(f, tail))
        checked = 0.0
        while True:
            chunk = f.read()
            if chunk:
                yield chunk
                continue
            newest = log_files(record, node, replica)[-1]
            if newest != path:
                path = newest
                files.close()
                f = files.enter_context(open(path, "rb"))
                continue
            if time.monotonic() - checked > 1.0:
                checked = time.monotonic()
                record, _, _ = refresh(record)
                if record.state in FINAL:
                    yield f.read()
                    return
            time.sleep(FOLLOW_INTERVAL)


def tail_lines(f: Any, lines: int | None) -> list[bytes]:
    """The last ``lines`` lines of the open file ``f`` (all if None), read to its end."""
    if lines is None:
        return [f.read()]
    return list(deque(f, maxlen=lines)) if lines > 0 else []
