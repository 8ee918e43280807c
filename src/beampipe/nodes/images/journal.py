"""The checkpoint of ``image_files`` in watch mode: what it sent and what was acknowledged, so
that a restarted process sends again only what was not acknowledged (docs/reliability.md).

An append-only file of JSON lines (``Source.state_file``, in the run's directory), each written
with one ``write`` (a killed process leaves whole lines, at most a torn last one, which is
ignored):

* ``{"start": stream, "meta": {...}}``: the stream's :class:`~beampipe.StreamStart` metadata;
* ``{"id": id, "stream": stream, "file": path, "frame": i}``: id ``id`` of ``stream`` is frame
  ``i`` of ``path`` (written when the frame was read, before it is sent);
* ``{"acked": stream, "ids": [[a, b], ...]}``: those ids were acknowledged downstream (written
  at most :data:`FLUSH_EVERY` seconds after they were);
* ``{"end": stream, "last": id}``: the stream's end was acknowledged downstream;
* ``{"dropped": path}``: the file went to the dead-letter file (not tried again).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FLUSH_EVERY", "Journal", "StreamRecord"]

FLUSH_EVERY = 0.05
"""Seconds: acknowledgements are written at most this long after they came."""


@dataclass
class StreamRecord:
    """What the journal says of one stream."""

    meta: dict[str, Any] | None = None
    frames: dict[int, tuple[str, int]] = field(default_factory=dict)
    """``{id: (file, frame index in it)}``."""
    acked: set[int] = field(default_factory=set)
    ended: int | None = None
    """The last id, once the stream's end was acknowledged."""

    @property
    def next_id(self) -> int:
        return max(self.frames, default=0) + 1


class Journal:
    """Reads the journal at ``path`` (if it exists) and appends to it; ``path`` None keeps it
    in memory only (outside a pipeline run)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.streams: dict[str, StreamRecord] = defaultdict(StreamRecord)
        self.dropped: set[str] = set()
        """Files that went to the dead-letter file."""
        self._pending: dict[str, list[int]] = defaultdict(list)
        self._since = 0.0
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the torn last line of a killed process
                continue
            if "start" in entry:
                self.streams[entry["start"]].meta = entry["meta"]
            elif "id" in entry:
                record = self.streams[entry["stream"]]
                record.frames[entry["id"]] = (entry["file"], entry["frame"])
            elif "acked" in entry:
                acked = self.streams[entry["acked"]].acked
                for a, b in entry["ids"]:
                    acked.update(range(a, b + 1))
            elif "end" in entry:
                self.streams[entry["end"]].ended = entry["last"]
            elif "dropped" in entry:
                self.dropped.add(entry["dropped"])

    def files(self) -> dict[str, int]:
        """Every file with frames in the journal: how many of its frames (from its first) have
        ids."""
        out: dict[str, int] = {}
        for record in self.streams.values():
            for path, frame in record.frames.values():
                out[path] = max(out.get(path, 0), frame + 1)
        return out

    def start(self, stream: str, meta: dict[str, Any]) -> None:
        self.streams[stream].meta = meta
        self._write({"start": stream, "meta": meta})

    def assign(self, stream: str, msg_id: int, path: str, frame: int) -> None:
        """Id ``msg_id`` of ``stream`` is frame ``frame`` of ``path``."""
        self.streams[stream].frames[msg_id] = (path, frame)
        self._write({"id": msg_id, "stream": stream, "file": path, "frame": frame})

    def acked(self, stream: str, msg_id: int) -> None:
        """Id ``msg_id`` of ``stream`` was acknowledged (written by :meth:`flush`)."""
        self.streams[stream].acked.add(msg_id)
        if not self._pending:
            self._since = time.monotonic()
        self._pending[stream].append(msg_id)

    def ended(self, stream: str, last_id: int) -> None:
        self.flush()
        self.streams[stream].ended = last_id
        self._write({"end": stream, "last": last_id})

    def drop(self, path: str) -> None:
        """``path`` went to the dead-letter file."""
        self.dropped.add(path)
        self._write({"dropped": path})

    def flush(self, due: bool = False) -> None:
        """Write the pending acknowledgements (``due``: only if :data:`FLUSH_EVERY` has passed
        since the first of them)."""
        if not self._pending or (due and time.monotonic() - self._since < FLUSH_EVERY):
            return
        pending, self._pending = self._pending, defaultdict(list)
        for stream, ids in pending.items():
            self._write({"acked": stream, "ids": _ranges(sorted(ids))})

    def _write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        data = (json.dumps(entry, default=repr) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def _ranges(ids: list[int]) -> list[list[int]]:
    """Sorted ids as ``[[first, last], ...]`` runs."""
    out: list[list[int]] = []
    for i in ids:
        if out and out[-1][1] + 1 == i:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out
