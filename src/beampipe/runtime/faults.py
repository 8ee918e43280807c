"""Fault injection for tests and drills: corrupt what a node sends, or kill the node, by count.

Faults are read from the environment variable ``BEAMPIPE_FAULTS`` of the node processes: a JSON
list of objects ``{"node": name, "replica": n (optional, default every replica), "incarnation":
k (optional, default 0: the first process; ``k`` its ``k``-th restarted successor), "fault":
...}``:

* ``{"fault": "corrupt", "every": N}`` cuts the last byte off the frames of every ``N``-th data
  message the node sends (counted per node replica, from 1), so the receiver sees a frame whose
  size does not match its header, as after a truncated transfer;
* ``{"fault": "kill", "after": N}`` kills the node process with SIGKILL (as the kernel's
  out-of-memory killer would) once it has received ``N`` messages and processed the last of
  them (a source: once it has sent ``N`` messages). Only the process of the entry's incarnation
  is killed (by default the first, not its restarted successors): a replica killed at every
  start has one entry per incarnation.

Deterministic: the same run injects the same faults at the same messages. Nothing is injected
when the variable is not set.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from typing import Any

ENV = "BEAMPIPE_FAULTS"


@dataclass
class Corrupt:
    """Corrupt every ``every``-th data message sent."""

    every: int
    count: int = 0

    def apply(self, frames: list[Any]) -> list[Any]:
        self.count += 1
        if self.count % self.every:
            return frames
        last = bytes(memoryview(frames[-1]).cast("B"))
        return [*frames[:-1], last[:-1]]


@dataclass
class Faults:
    """The faults of one node process (none by default)."""

    corrupt: Corrupt | None = None
    kill_after: int = 0
    """Kill the process after this many messages received (0: never)."""

    @staticmethod
    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def faults_for(node: str, replica: int, incarnation: int = 0) -> Faults:
    """The faults configured for this node replica's ``incarnation``-th process.

    Raises:
        ValueError: ``BEAMPIPE_FAULTS`` is not a JSON list of fault objects.
    """
    faults = Faults()
    text = os.environ.get(ENV)
    if not text:
        return faults
    try:
        for entry in json.loads(text):
            if entry["node"] != node or entry.get("replica", replica) != replica:
                continue
            if entry.get("incarnation", 0) != incarnation:
                continue
            if entry["fault"] == "corrupt":
                faults.corrupt = Corrupt(int(entry["every"]))
            elif entry["fault"] == "kill":
                faults.kill_after = int(entry["after"])
            else:
                raise ValueError(f"{ENV}: unknown fault {entry['fault']!r}")
    except (TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{ENV} is not a JSON list of faults: {exc}") from None
    return faults
