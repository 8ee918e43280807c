"""Waterfalls: the curves of a stream's 1-D signal, one row per message (frame x q for I(q)).

Per stream the viewer keeps the port's signal, when it is a 1-D item, as rows of a heat map:
each message's curve binned to at most :data:`MAX_COLUMNS` points (block means), with its id.
At most :data:`MAX_ROWS` rows are kept: when full, every second row is dropped and from then on
only every second message is kept (the stride doubles), so a long run keeps its whole extent at
a coarser step in frames, in 0.5 MiB per stream. A curve of another length than the stream's
last starts the waterfall again. The page is sent one stream's waterfall, as an image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from beampipe.viewer.images import bin_axis, bin_image, encode

MAX_ROWS = 256
"""Rows (messages) kept per stream at most."""
MAX_COLUMNS = 512
"""Points of a row at most."""


def key(signal: str) -> str:
    """The name the waterfall of item ``signal`` has in the page's item menu."""
    return f"{signal} waterfall"


class Waterfall:
    """The rows of one stream's signal (see the module docstring).

    Attributes:
        size: points of the curves received (before binning); 0 before the first.
        n: rows kept.
        stride: a row is kept for every ``stride`` messages.
    """

    def __init__(self) -> None:
        self._restart(0, 1, 0)

    def _restart(self, size: int, binning: int, columns: int) -> None:
        self.size, self.binning = size, binning
        self.n, self.stride, self.seen = 0, 1, 0
        self.rows = np.empty((MAX_ROWS if size else 0, columns), dtype=np.float32)
        self.ids = np.empty(MAX_ROWS if size else 0, dtype=np.int64)

    def add(self, id: int, curve: np.ndarray) -> None:
        """Fold the curve (1-D, numeric) of message ``id`` in."""
        binned, f = bin_image(curve.reshape(1, -1), MAX_COLUMNS)
        if curve.size != self.size:
            self._restart(curve.size, f, binned.shape[1])
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        if self.n == MAX_ROWS:
            kept = (self.n + 1) // 2
            self.rows[:kept] = self.rows[: self.n : 2]
            self.ids[:kept] = self.ids[: self.n : 2]
            self.n, self.stride = kept, 2 * self.stride
            if (self.seen - 1) % self.stride:
                return
        self.rows[self.n] = binned[0]
        self.ids[self.n] = id
        self.n += 1

    def payload(
        self, name: str, stream: str, axis: str | None, x: np.ndarray | None
    ) -> dict[str, Any]:
        """The JSON-able image of the rows kept, in the order of their ids (as
        :meth:`beampipe.viewer.images.ImagePreview.payload`, without the slice fields): item
        ``name`` of ``stream``, against ``x``, the values of item ``axis`` (None: the index)."""
        order = np.argsort(self.ids[: self.n], kind="stable")
        ids = self.ids[: self.n][order]
        return {
            "name": name,
            "stream": stream,
            "id": int(ids[-1]),
            "shape": [int(self.seen), int(self.size)],
            "binning": self.binning,
            "stride": self.stride,
            **encode(self.rows[: self.n][order]),
            "y_axis": "id",
            "x_axis": axis,
            "y": ids.astype(np.float64),
            "x": bin_axis(x, self.binning) if x is not None else None,
        }
