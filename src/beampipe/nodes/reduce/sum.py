"""General-purpose reducers: ``use: sum``.

``sum`` adds up the numeric arrays of every message of a stream (detector frames into a sum
image, scan points into totals), whichever upstream replica produced them, and counts the
messages. It is a :class:`beampipe.Reducer`: it runs as one process, and emits every ``every``
messages and/or ``interval`` seconds and at the end of each stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import beampipe
from beampipe.nodes.columns import numeric

__all__ = ["Sum"]


@dataclass
class _Sums:
    """The running sums of one stream: ``{data name: accumulator}`` and the messages folded."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    count: int = 0
    max_id: int = 0


class Sum(beampipe.Reducer):
    """Sum of the numeric arrays of every message of a stream, and the number of messages.

    Input: messages whose data hold numeric arrays (any shape; 0-d for scan points). The names
    summed are ``fields`` or, when ``fields`` is null, every numeric (bool, integer, float,
    complex) array of the stream's first message; ``bytes`` and other entries are ignored. Every
    later message of the stream must hold each of these names with the same shape (other names
    are ignored).

    Sums are accumulated in place (``np.add(..., out=...)``), one accumulator per name and
    stream, in **float64** (complex128 for complex input): a float64 sum of uint16/uint32 frames
    is exact up to 2**53 counts per pixel and never wraps around, unlike an integer accumulator
    of the input's own dtype; integer inputs therefore come out as float64.

    Output, per stream (stream name kept; id = the highest id folded so far, which with several
    upstream replicas need not be the last message to arrive): every ``every``
    messages, every ``interval`` seconds (checked as messages arrive) and once at the end of the
    stream:

    * data: ``{name: sum}`` (the shape of the input arrays) and ``count`` (int64, 0-d, the
      messages folded so far);
    * metadata: ``count`` (int), ``final`` (bool: the end-of-stream result), and ``signal`` (the
      summed name) when exactly one name is summed, so the NeXus writer plots it.

    Raises:
        MissingColumn: (a ``KeyError``) a message lacks a summed name; names stream, id and
            field, and the names present.
        ValueError: a shape differs from the stream's first message; a summed name is
            ``count``; no numeric array to sum.
        TypeError: a summed entry is ``bytes`` or not numeric, or complex after a real start.
    """

    class Params(beampipe.ReducerParams):
        """``fields``: the data names to sum (null: every numeric array of the first message)."""

        fields: list[str] | None = None

    params: Sum.Params

    def start(self, group: str, metadata: dict[str, Any]) -> _Sums:
        return _Sums()

    def reduce(self, state: _Sums, msg: beampipe.Message) -> _Sums:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        if state.count == 0:
            state.sums = self._first(msg, where)
        else:
            for name, acc in state.sums.items():
                value = numeric(msg, name, where, kinds="biufc")
                if value.shape != acc.shape:
                    raise ValueError(
                        f"{where}: field {name!r} has shape {value.shape}, "
                        f"the stream's sum {acc.shape}"
                    )
                if value.dtype.kind == "c" and acc.dtype.kind != "c":
                    raise TypeError(
                        f"{where}: field {name!r} is complex, the stream's first message was real"
                    )
                np.add(acc, value, out=acc)
        state.count += 1
        state.max_id = max(state.max_id, msg.id)
        return state

    def result(self, group: str, state: _Sums, final: bool) -> beampipe.Message:
        # The accumulators keep changing after an intermediate emission, and the message may sit
        # in a send buffer (zero-copy): send copies. The final state is dropped: send it as is.
        data: dict[str, Any] = {k: a if final else a.copy() for k, a in state.sums.items()}
        data["count"] = np.array(state.count, dtype=np.int64)
        metadata: dict[str, Any] = {"count": state.count, "final": final}
        if len(state.sums) == 1:
            metadata["signal"] = next(iter(state.sums))
        return beampipe.Message(data=data, metadata=metadata, id=state.max_id)

    def _first(self, msg: beampipe.Message, where: str) -> dict[str, np.ndarray]:
        if self.params.fields is not None:
            names = list(dict.fromkeys(self.params.fields))
        else:
            names = [
                k
                for k, v in msg.data.items()
                if isinstance(v, np.ndarray) and v.dtype.kind in "biufc"
            ]
            if not names:
                raise ValueError(
                    f"{where}: no numeric array to sum; data: {', '.join(msg.data) or '(none)'}"
                )
        if "count" in names:
            raise ValueError(
                f"{where}: a field named 'count' clashes with the message count in the output; "
                "set the node's params.fields to the names to sum"
            )
        sums = {}
        for name in names:
            value = numeric(msg, name, where, kinds="biufc")
            dtype = np.complex128 if value.dtype.kind == "c" else np.float64
            sums[name] = value.astype(dtype)  # a new, writable array
        return sums
