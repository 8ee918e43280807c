"""Fault injection for tests and drills: corrupt what a node sends, by message count.

Faults are read from the environment variable ``BEAMPIPE_FAULTS`` of the node processes: a JSON
list of objects ``{"node": name, "replica": n (optional, default every replica), "fault":
"corrupt", "every": N}``. ``corrupt`` cuts the last byte off the frames of every ``N``-th data
message the node sends (counted per node replica, from 1), so the receiver sees a frame whose
size does not match its header, as after a truncated transfer. Deterministic: the same run
corrupts the same messages. Nothing is injected when the variable is not set.
"""

from __future__ import annotations

import json
import os
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


def faults_for(node: str, replica: int) -> Corrupt | None:
    """The corruption fault configured for this node replica, if any.

    Raises:
        ValueError: ``BEAMPIPE_FAULTS`` is not a JSON list of fault objects.
    """
    text = os.environ.get(ENV)
    if not text:
        return None
    try:
        entries = json.loads(text)
        for entry in entries:
            if entry["node"] == node and entry.get("replica", replica) == replica:
                if entry["fault"] != "corrupt":
                    raise ValueError(f"unknown fault {entry['fault']!r}")
                return Corrupt(int(entry["every"]))
    except (TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{ENV} is not a JSON list of faults: {exc}") from None
    return None
