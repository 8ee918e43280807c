"""The I0 monitor of a frame: a 0-d data item or a numeric metadata key, looked up in the
frame's message, then in the other parts of its event (a counter port of the same trigger)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

import beampipe

__all__ = ["MonitorMissing", "monitor_value"]


class MonitorMissing(LookupError):
    """A frame has no usable monitor value: none of the messages holds it, or it is not a
    single finite number > 0. The message says why; the frame is a dead letter."""


def monitor_value(name: str, messages: Iterable[beampipe.Message], missing: Iterable[str]) -> float:
    """The value of monitor ``name`` (float), from the first of ``messages`` that holds it: a
    data item of one value (any shape of size 1, real numeric dtype) or a metadata key whose
    value is an int or float.

    Args:
        name: the data name or metadata key.
        messages: the frame's message first, then the event's other parts.
        missing: the event's ports that had not delivered (named in the error).

    Raises:
        MonitorMissing: no message holds ``name``, or its value is not one finite number > 0
            (a frame divided by it would be infinite or NaN).
    """
    seen: list[str] = []
    for msg in messages:
        value = _lookup(msg, name)
        if value is None:
            seen.extend([*msg.data, *msg.metadata])
            continue
        if not (math.isfinite(value) and value > 0):
            raise MonitorMissing(f"monitor {name!r} is {value}: not a finite number > 0")
        return value
    waiting = list(missing)
    why = (
        f"; the event's part from port(s) {', '.join(map(repr, waiting))} did not arrive"
        if waiting
        else ""
    )
    raise MonitorMissing(
        f"no monitor {name!r} in the data or metadata (there: "
        f"{', '.join(dict.fromkeys(seen)) or 'nothing'}){why}"
    )


def _lookup(msg: beampipe.Message, name: str) -> float | None:
    value = msg.data.get(name)
    if value is not None:
        if isinstance(value, bytes) or value.dtype.kind not in "biuf" or value.size != 1:
            what = "bytes" if isinstance(value, bytes) else f"{value.dtype} {value.shape}"
            raise MonitorMissing(f"monitor {name!r} is {what}, not one number")
        return float(np.asarray(value).reshape(()))
    value = msg.metadata.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
