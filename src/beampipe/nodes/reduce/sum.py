"""General-purpose reducers: ``use: sum``.

``sum`` adds up the numeric arrays of every message of a stream (detector frames into a sum
image, scan points into totals), whichever upstream replica produced them, and counts the
messages. It is a :class:`beampipe.Reducer`: it runs as one process, and emits every ``every``
messages and/or ``interval`` seconds and at the end of each stream.
"""

from __future__ import annotations

import numpy as np

from beampipe.nodes.reduce.fold import Fold, FoldParams

__all__ = ["Sum"]


class Sum(Fold):
    """Sum of the numeric arrays of every message of a stream, and the number of messages.

    Input: messages whose data hold numeric arrays (any shape; 0-d for scan points). The names
    summed are ``fields`` or, when ``fields`` is null, every numeric (bool, integer, float,
    complex) array of the stream's first message; ``bytes`` and other entries are ignored. Every
    later message of the stream must hold each of these names with the same shape (other names
    are ignored).

    Sums are accumulated in place (``np.add(..., out=...)``), one accumulator per name and
    stream, in **float64** (complex128 for complex input): a float64 sum of uint16/uint32 frames
    is exact up to 2**53 counts per pixel and never wraps around, unlike an integer accumulator
    of the input's own dtype; integer inputs therefore come out as float64. A NaN pixel (masked
    by ``frame.correct``) stays NaN.

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

    class Params(FoldParams):
        """``fields``: the data names to sum (null: every numeric array of the first message)."""

    params: Sum.Params
    what = "sum"

    def fold(self, acc: np.ndarray, value: np.ndarray) -> None:
        np.add(acc, value, out=acc)
