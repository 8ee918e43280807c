"""Named regions of interest of each frame: ``use: frame.roi``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import Field, field_validator

import beampipe
from beampipe.nodes.frame.frames import FrameWorker, ScalarParams
from beampipe.nodes.frame.regions import Rect, Region, RoiSpec

__all__ = ["FrameRoi", "Rect", "RoiSpec"]

STATS = ("sum", "mean", "max", "npix", "cx", "cy")
"""The values of each ROI, in the order :meth:`Region.stats` gives them."""


class FrameRoi(FrameWorker):
    """Sum, mean, maximum, number of pixels and centroid of named ROIs of each frame: the
    scalars a scientist plots against the scan motor. Masked pixels (``mask``; NaN in float
    frames, as ``frame.correct`` marks them) are left out. ROI shapes and coordinates:
    :mod:`~beampipe.nodes.frame.regions`.

    Input: one 2-D frame per message (see :class:`~beampipe.nodes.frame.frames.FrameWorker`).
    Output, per frame (stream and id kept), data, all 0-d, for each ROI ``R``:

    * ``R_sum`` (float64, counts), ``R_mean`` (float64, ``R_sum / R_npix``), ``R_max``
      (float64), ``R_npix`` (int64, pixels used);
    * ``R_cx``, ``R_cy`` (float64, pixels): the intensity-weighted centroid, column and row
      index (as ``scipy.ndimage.center_of_mass``); NaN when the ROI's sum is 0;

    with no pixel used, ``R_sum`` is 0 and the rest NaN. Also the ``axis`` value (float64) when
    ``axis`` is set. Metadata ``signal``: the first ROI's sum, ``axes: [axis]`` when set.

    Raises: as :class:`~beampipe.nodes.frame.frames.FrameWorker`, and at a stream's first frame
    ``ValueError`` for a rectangle that does not fit the frame or a ROI without a pixel in it,
    ``PixelFileError`` for a ROI file that cannot be read or has another shape.
    """

    class Params(ScalarParams):
        """``rois``: ``{name: {rect: {x, y, width, height}} | {polygon: [[x, y], ...]} |
        {file: path}}``, in pixels; names are letters, digits and ``_``."""

        rois: dict[str, RoiSpec] = Field(min_length=1)

        @field_validator("rois")
        @classmethod
        def _names(cls, rois: dict[str, RoiSpec]) -> dict[str, RoiSpec]:
            for name in rois:
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    raise ValueError(
                        f"ROI name {name!r}: use letters, digits and '_' (not first a digit)"
                    )
            return rois

    params: FrameRoi.Params

    def __init__(self, params: FrameRoi.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._regions: dict[tuple[int, ...], dict[str, Region]] = {}

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        found = self.frame(msg)
        if found is None:
            return None
        _, frame = found
        regions = self._regions.get(frame.shape)
        if regions is None:
            try:
                regions = {
                    name: Region.make(name, spec, frame.shape, self.mask)
                    for name, spec in self.params.rois.items()
                }
            except ValueError as exc:
                raise type(exc)(f"{self.name}: stream {msg.stream!r}, id {msg.id}: {exc}") from exc
            self._regions[frame.shape] = regions
        data: dict[str, Any] = {}
        for name, region in regions.items():
            for stat, value in zip(STATS, region.stats(frame), strict=True):
                dtype = np.int64 if stat == "npix" else np.float64
                data[f"{name}_{stat}"] = np.asarray(value, dtype=dtype)
        data.update(self.axis(msg))
        metadata: dict[str, Any] = {"signal": f"{next(iter(regions))}_sum"}
        if self.params.axis is not None:
            metadata["axes"] = [self.params.axis]
        return beampipe.Message(data=data, metadata=metadata)
