"""The maximum image of a stream: ``use: max``."""

from __future__ import annotations

import numpy as np

from beampipe.nodes.reduce.fold import Fold, FoldParams

__all__ = ["Max"]


class Max(Fold):
    """Element-wise maximum of the real numeric arrays of every message of a stream (detector
    frames into a maximum-projection image, for hot spots and the highest count a pixel saw),
    and the number of messages. Kept in float64 (exact for integer counts up to 2**53). A pixel
    NaN in any frame (masked by ``frame.correct``) is NaN in the maximum (``np.maximum``).

    Input, emissions, output (``{name: max}``, float64, and ``count``), metadata and errors: as
    :class:`~beampipe.nodes.reduce.sum.Sum`, but complex arrays are refused (``TypeError``).
    """

    class Params(FoldParams):
        """``fields``: the data names (null: every real numeric array of the first message)."""

    params: Max.Params
    kinds = "biuf"
    what = "maximum"

    def fold(self, acc: np.ndarray, value: np.ndarray) -> None:
        np.maximum(acc, value, out=acc)
