"""Downsampling of each frame by whole bins of pixels: ``use: frame.bin``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import PositiveInt

import beampipe
from beampipe.nodes.frame.frames import FrameParams, FrameWorker

__all__ = ["FrameBin"]


class FrameBin(FrameWorker):
    """Each frame binned by ``factor`` pixels along each axis, summed or averaged.

    Input: one 2-D frame per message, (ny, nx). Output, per frame (stream and id kept): data
    ``{field: binned}``, float64 (a sum of integer counts is exact), shape (ny // fy, nx // fx):
    the last ``ny % fy`` rows and ``nx % fx`` columns, which fill no whole bin, are left out. A
    bin holding a masked pixel (``mask``, or NaN in a float frame) is NaN. Metadata: the
    input's, with ``signal`` = the field and ``binning`` = ``[fy, fx]``.

    Raises: as :class:`~beampipe.nodes.frame.frames.FrameWorker`; ``ValueError`` for a frame
    smaller than one bin.
    """

    class Params(FrameParams):
        """``factor``: pixels per bin along both axes, or ``[rows, columns]``. ``mode``:
        ``sum`` or ``mean`` of each bin's pixels."""

        factor: PositiveInt | tuple[PositiveInt, PositiveInt] = 2
        mode: Literal["sum", "mean"] = "sum"

    params: FrameBin.Params

    def __init__(self, params: FrameBin.Params, name: str = "") -> None:
        super().__init__(params, name)
        factor = params.factor
        self.factor = (factor, factor) if isinstance(factor, int) else tuple(factor)

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        found = self.frame(msg)
        if found is None:
            return None
        name, frame = found
        fy, fx = self.factor
        ny, nx = frame.shape[0] // fy, frame.shape[1] // fx
        if ny == 0 or nx == 0:
            raise ValueError(
                f"{self.name}: stream {msg.stream!r}, id {msg.id}: frame {frame.shape} is "
                f"smaller than one bin {self.factor}"
            )
        pixels = frame[: ny * fy, : nx * fx].astype(np.float64)
        if self.mask is not None:
            pixels[self.mask[: ny * fy, : nx * fx]] = np.nan
        blocks = pixels.reshape(ny, fy, nx, fx)
        binned = blocks.sum(axis=(1, 3)) if self.params.mode == "sum" else blocks.mean(axis=(1, 3))
        metadata = {**msg.metadata, "signal": name, "binning": [fy, fx]}
        return beampipe.Message(data={name: binned}, metadata=metadata)
