"""Bragg peak and hit finding in each frame with peakfinder8: ``use: peaks.find``."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

import beampipe
from beampipe.nodes.frame.frames import FrameParams, FrameWorker
from beampipe.nodes.peaks.geometry import GeometryError, center_from_poni, radius_map
from beampipe.nodes.peaks.peakfinder8 import Peakfinder8, PeakList, Settings, load_peakfinder8

__all__ = ["PEAK_FIELDS", "PeaksFind"]

PEAK_FIELDS = {
    "peak_fs": "fs",
    "peak_ss": "ss",
    "peak_intensity": "intensity",
    "peak_max": "max_intensity",
    "peak_sigma": "sigma",
    "peak_snr": "snr",
    "peak_npix": "npix",
}
"""The data names of the peak list -> the :class:`PeakList` fields they hold."""


class PeaksFind(FrameWorker):
    """Finds the Bragg peaks of each frame with peakfinder8 (Cheetah's algorithm, as compiled
    in OM: :mod:`~beampipe.nodes.peaks.peakfinder8`) and calls the frame a hit when it has at
    least ``min_peaks`` peaks.

    Pixels left out: the ``mask`` file's, those outside ``min_res``..``max_res`` and, in float
    frames, NaN or infinite ones (``frame.correct`` masks with NaN). The radial bins are the
    integer distances in pixels from the beam centre: ``center`` or a PONI file's.

    Input: one 2-D frame per message (any real dtype; peakfinder8 works in float32). Output on
    port ``out``, per frame (stream and id kept), data: the peak list, 1-D arrays of ``n_peaks``
    values:
    ``peak_fs``, ``peak_ss`` (float32, pixels: column and row of the peak's centre of mass),
    ``peak_intensity`` (float32, counts above the local background), ``peak_max`` (float32,
    the highest pixel above the local background), ``peak_sigma`` (float32, the local
    background's standard deviation), ``peak_snr`` (float32, ``peak_intensity / peak_sigma``),
    ``peak_npix`` (int32); ``n_peaks`` (int64, 0-d), ``hit`` (bool, 0-d). Metadata: the input's,
    with ``n_peaks``, ``hit`` and ``signal: n_peaks``. On port ``hits``, for the hits only: the
    same and the frame itself (under its own name; metadata ``frame`` names it), for
    ``cxi_writer``: frames travel only where this port is connected.

    A frame with ``max_peaks`` peaks may have had more (peakfinder8 keeps the first found): that
    is warned about, so the run's report counts it.

    Raises:
        GeometryError: (a ``ValueError``) the PONI file cannot be read (at creation), or its
            detector's shape is not the frames' (at a stream's first frame).
        ValueError: frames that do not divide into ``panels``; and as
            :class:`~beampipe.nodes.frame.frames.FrameWorker`.
        ImportError: OM (``ondamonitor``) is not installed (at creation).
    """

    class Params(FrameParams):
        """peakfinder8's parameters (defaults: CrystFEL's ``indexamajig`` for peakfinder8),
        the beam centre (``center`` [fs, ss] in pixels, or ``poni``), ``panels`` [rows,
        columns] of equal panels, ``max_peaks`` kept per frame, ``min_peaks`` for a hit."""

        center: tuple[float, float] | None = None
        poni: beampipe.InputPath | None = None
        adc_threshold: float = 800.0
        min_snr: float = Field(5.0, ge=0)
        min_pixels: int = Field(2, ge=1)
        max_pixels: int = Field(200, ge=1)
        local_bg_radius: int = Field(3, ge=1)
        min_res: float = Field(0.0, ge=0)
        max_res: float = Field(1200.0, gt=0)
        panels: tuple[int, int] = (1, 1)
        max_peaks: int = Field(2048, ge=1, le=1_000_000)
        min_peaks: int = Field(10, ge=0)

        @model_validator(mode="after")
        def _check(self) -> PeaksFind.Params:
            if (self.center is None) == (self.poni is None):
                raise ValueError(
                    "give exactly one of center ([fs, ss] of the beam in pixels) or poni "
                    "(a pyFAI PONI file)"
                )
            if self.min_pixels > self.max_pixels:
                raise ValueError(
                    f"min_pixels ({self.min_pixels}) is larger than max_pixels ({self.max_pixels})"
                )
            if self.min_res >= self.max_res:
                raise ValueError(f"min_res ({self.min_res}) is not below max_res ({self.max_res})")
            if min(self.panels) < 1:
                raise ValueError(f"panels {list(self.panels)}: rows and columns must be >= 1")
            return self

    params: PeaksFind.Params
    outputs: ClassVar[tuple[str, ...]] = ("out", "hits")

    def __init__(self, params: PeaksFind.Params, name: str = "") -> None:
        super().__init__(params, name)
        load_peakfinder8()
        self._detector: tuple[int, int] | None = None
        if params.poni is not None:
            try:
                fs, ss, self._detector = center_from_poni(params.poni)
            except GeometryError as exc:
                raise GeometryError(f"{self.name}: params.poni: {exc}") from None
            self.center = (fs, ss)
        else:
            assert params.center is not None
            self.center = params.center
        self.settings = Settings(
            adc_threshold=params.adc_threshold,
            min_snr=params.min_snr,
            min_pixels=params.min_pixels,
            max_pixels=params.max_pixels,
            local_bg_radius=params.local_bg_radius,
            min_res=params.min_res,
            max_res=params.max_res,
            max_peaks=params.max_peaks,
            panels=params.panels,
        )
        self._finders: dict[tuple[int, ...], Peakfinder8] = {}

    def process(self, msg: beampipe.Message) -> dict[str, beampipe.Message] | None:
        found = self.frame(msg)
        if found is None:
            return None
        name, frame = found
        finder = self._finders.get(frame.shape) or self._finder(frame.shape, msg)
        finite = None
        if frame.dtype.kind == "f":
            finite = np.isfinite(frame)
            if finite.all():
                finite = None
        peaks = finder(frame, finite)
        n = len(peaks)
        if n >= self.params.max_peaks:
            warnings.warn(
                f"{self.name}: a frame has max_peaks ({self.params.max_peaks}) peaks and may "
                "have had more (raise max_peaks, or adc_threshold/min_snr)",
                stacklevel=1,
            )
        hit = n >= self.params.min_peaks
        data = peak_data(peaks)
        data["n_peaks"] = np.asarray(n, dtype=np.int64)
        data["hit"] = np.asarray(hit)
        metadata: dict[str, Any] = {**msg.metadata, "n_peaks": n, "hit": hit}
        metadata["signal"] = "n_peaks"
        out = {"out": beampipe.Message(data=data, metadata=metadata)}
        if hit:
            out["hits"] = beampipe.Message(
                data={**data, name: frame}, metadata={**metadata, "frame": name}
            )
        return out

    def _finder(self, shape: tuple[int, ...], msg: beampipe.Message) -> Peakfinder8:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        if self._detector is not None and self._detector != shape:
            raise GeometryError(
                f"{where}: params.poni {self.params.poni!r} is for a detector of shape "
                f"{self._detector}, the frames are {shape}: the PONI of another detector, or "
                "binned or cropped frames"
            )
        radius = radius_map((shape[0], shape[1]), *self.center)
        valid = None if self.mask is None else ~self.mask
        try:
            finder = Peakfinder8(self.settings, radius, valid)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc} (params.center, poni or panels)") from None
        self._finders[shape] = finder
        return finder


def peak_data(peaks: PeakList) -> dict[str, np.ndarray]:
    """The peak list as message data: ``{peak_fs: ..., ...}`` (:data:`PEAK_FIELDS`)."""
    return {key: getattr(peaks, attr) for key, attr in PEAK_FIELDS.items()}
