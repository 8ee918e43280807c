"""Whole-frame statistics: ``use: frame.stats``."""

from __future__ import annotations

import numpy as np

import beampipe
from beampipe.nodes.frame.frames import FrameWorker, ScalarParams

__all__ = ["FrameStats"]


class FrameStats(FrameWorker):
    """Sum, mean, maximum and number of pixels over a threshold of each frame, over the pixels
    not masked (by ``mask``, and NaN in float frames: see
    :meth:`~beampipe.nodes.frame.frames.FrameWorker.valid`).

    Input: one 2-D frame per message (any numeric dtype; see
    :class:`~beampipe.nodes.frame.frames.FrameWorker`). Output, per frame (stream and id kept),
    data, all 0-d:

    * ``sum`` (float64, detector counts; exact for integer frames up to 2**53),
    * ``mean`` (float64, ``sum / npix``; NaN if no pixel is used),
    * ``max`` (float64; NaN if no pixel is used),
    * ``npix`` (int64, pixels used),
    * ``over`` (int64, pixels used whose value is > ``threshold``), when ``threshold`` is set,
    * the ``axis`` value (float64), when ``axis`` is set;

    metadata ``signal: "sum"`` and ``axes: [axis]`` when ``axis`` is set.

    Raises: see :class:`~beampipe.nodes.frame.frames.FrameWorker`; a frame of another shape is
    a dead letter.
    """

    class Params(ScalarParams):
        """``threshold``: count the pixels above this value (detector counts; null: don't)."""

        threshold: float | None = None

    params: FrameStats.Params

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        found = self.frame(msg)
        if found is None:
            return None
        _, frame = found
        valid = self.valid(frame)
        values = frame if valid is None else frame[valid]
        npix = values.size
        total = values.sum(dtype=np.float64)
        data = {
            "sum": np.asarray(total),
            "mean": np.asarray(total / npix if npix else np.nan),
            "max": np.asarray(values.max() if npix else np.nan, dtype=np.float64),
            "npix": np.asarray(npix, dtype=np.int64),
        }
        if self.params.threshold is not None:
            data["over"] = np.asarray(
                np.count_nonzero(values > self.params.threshold), dtype=np.int64
            )
        data.update(self.axis(msg))
        metadata: dict = {"signal": "sum"}
        if self.params.axis is not None:
            metadata["axes"] = [self.params.axis]
        return beampipe.Message(data=data, metadata=metadata)
