"""The mean image of a stream: ``use: mean``."""

from __future__ import annotations

import numpy as np

from beampipe.nodes.reduce.fold import Fold, FoldParams

__all__ = ["Mean"]


class Mean(Fold):
    """Mean of the numeric arrays of every message of a stream (detector frames into a mean
    image), and the number of messages: the float64 sum (as ``sum`` accumulates it) divided by
    the count. A pixel NaN in any frame (masked by ``frame.correct``) is NaN in the mean.

    Input, emissions, output (``{name: mean}``, float64 or complex128, and ``count``), metadata
    and errors: as :class:`~beampipe.nodes.reduce.sum.Sum`.
    """

    class Params(FoldParams):
        """``fields``: the data names to average (null: every numeric array of the first
        message)."""

    params: Mean.Params
    what = "mean"

    def fold(self, acc: np.ndarray, value: np.ndarray) -> None:
        np.add(acc, value, out=acc)

    def image(self, acc: np.ndarray, count: int, final: bool) -> np.ndarray:
        return acc / count
