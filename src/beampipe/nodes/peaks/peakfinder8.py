"""The peakfinder8 algorithm of Cheetah (Barty et al., J. Appl. Cryst. 47, 1118-1131 (2014)), as
compiled in OM (``ondamonitor`` on PyPI, https://www.ondamonitor.com, GPL-3.0): the C++ code OM
took from Cheetah, called the way OM's own ``Peakfinder8PeakDetection.find_peaks`` calls it.

OM's Python layer (``om.algorithms.crystallography``) does not import with numpy 2 (it names
``numpy.float_``), so this module calls its compiled ``peakfinder_8`` directly, with the mask and
resolution limits prepared as ``find_peaks`` prepares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_RADIUS", "PeakList", "Peakfinder8", "Settings", "load_peakfinder8"]

MAX_RADIUS = 100_000
"""Largest distance of a pixel from the beam centre, in pixels: peakfinder8 allocates one
radial bin per pixel of radius (and does not check the allocation)."""


@dataclass(frozen=True)
class Settings:
    """peakfinder8's parameters, with OM's names in brackets.

    ``adc_threshold`` (adc_threshold): counts a pixel must exceed to start a peak, besides the
    radial threshold; ``min_snr`` (minimum_snr): both the radial threshold (mean + min_snr x
    sigma of the pixels at that radius, sigma-clipped five times) and the least integrated
    intensity over the local background sigma; ``min_pixels``/``max_pixels``
    (min/max_pixel_count): size of a peak in connected pixels; ``local_bg_radius``: pixels, the
    annulus of the local background is up to twice that; ``min_res``/``max_res``: the radii
    (pixels) between which peaks are searched; ``max_peaks`` (max_num_peaks): peaks kept per
    frame, the first found; ``panels``: (rows, columns) of equal detector panels a peak does not
    cross.
    """

    adc_threshold: float
    min_snr: float
    min_pixels: int
    max_pixels: int
    local_bg_radius: int
    min_res: float
    max_res: float
    max_peaks: int
    panels: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class PeakList:
    """The peaks of one frame, 1-D arrays of one length (the number of peaks), in the order
    peakfinder8 found them (row by row of peak start pixels).

    ``fs``, ``ss``: float32, pixels, the intensity-weighted centre (fast-scan: column, slow-scan:
    row; pixel (ss, fs) has its centre at integer (fs, ss), as in Cheetah and OM); ``intensity``:
    float32, counts, integrated over the peak's pixels less the local background; ``max_intensity``:
    float32, counts, the highest pixel less the local background; ``sigma``: float32, counts,
    the local background's standard deviation; ``snr``: float32, ``intensity / sigma``;
    ``npix``: int32, the peak's pixels.
    """

    fs: np.ndarray
    ss: np.ndarray
    intensity: np.ndarray
    max_intensity: np.ndarray
    sigma: np.ndarray
    snr: np.ndarray
    npix: np.ndarray

    def __len__(self) -> int:
        return int(self.fs.size)


def load_peakfinder8() -> Any:
    """OM's compiled ``peakfinder_8``.

    Raises:
        ImportError: OM is not installed; says which extra installs it.
    """
    try:
        from om.algorithms._crystallography import peakfinder_8
    except ImportError as exc:
        raise ImportError(
            "peakfinder8 needs OM (the ondamonitor package): pip install 'beampipe[peaks]'"
        ) from exc
    return peakfinder_8


class Peakfinder8:
    """peakfinder8 for frames of one shape: the radius map and the fixed mask are made once.

    ``radius``: float, (ny, nx), each pixel's distance from the beam centre in pixels (the
    radial bins are the integer radii); ``valid``: bool (ny, nx), ``True`` = used, or None.
    Pixels outside ``min_res``..``max_res`` are left out, as OM does.

    Raises:
        ValueError: the shapes differ, the frame is not divisible into ``panels``, or a radius
            is negative, not finite or over :data:`MAX_RADIUS`.
    """

    def __init__(self, settings: Settings, radius: np.ndarray, valid: np.ndarray | None) -> None:
        if radius.ndim != 2 or (valid is not None and valid.shape != radius.shape):
            raise ValueError("peakfinder8: the radius map and the mask differ in shape")
        if not np.all(np.isfinite(radius)) or radius.min() < 0:
            raise ValueError("peakfinder8: the radius map has negative or non-finite values")
        if radius.max() > MAX_RADIUS:
            raise ValueError(
                f"peakfinder8: pixels {radius.max():.0f} pixels from the beam centre, more than "
                f"{MAX_RADIUS}: a beam centre far off the detector (one radial bin per pixel "
                "of radius is allocated)"
            )
        rows, cols = settings.panels
        ny, nx = radius.shape
        if ny % rows or nx % cols:
            raise ValueError(
                f"peakfinder8: frames of {ny} rows x {nx} columns do not divide into "
                f"{rows} x {cols} panels"
            )
        self.settings = settings
        self.radius = np.ascontiguousarray(radius, dtype=np.float32)
        mask = np.ones(radius.shape, dtype=np.int8) if valid is None else valid.astype(np.int8)
        mask[self.radius < settings.min_res] = 0
        mask[self.radius > settings.max_res] = 0
        self.mask = mask
        """int8 (ny, nx): 1 = searched, as peakfinder_8 takes it."""
        self._peakfinder_8 = load_peakfinder8()

    def __call__(self, frame: np.ndarray, valid: np.ndarray | None = None) -> PeakList:
        """The peaks of ``frame`` (2-D, any real dtype; converted to float32 as OM does);
        ``valid`` (bool, ``True`` = used) masks more pixels for this frame only."""
        s = self.settings
        data = np.array(frame, dtype=np.float32, order="C")  # a writable copy
        mask = self.mask if valid is None else self.mask * valid.astype(np.int8)
        ny, nx = data.shape
        rows, cols = s.panels
        found = self._peakfinder_8(
            s.max_peaks,
            data,
            mask,
            self.radius,
            0,  # the radial statistics over every pixel: OM's default, not its fast mode
            None,
            None,
            0,
            nx // cols,
            ny // rows,
            cols,
            rows,
            s.adc_threshold,
            s.min_snr,
            s.min_pixels,
            s.max_pixels,
            s.local_bg_radius,
        )
        fs, ss, intensity, _index, npix, max_i, sigma, snr = found
        f32 = np.float32
        return PeakList(
            fs=np.asarray(fs, dtype=f32),
            ss=np.asarray(ss, dtype=f32),
            intensity=np.asarray(intensity, dtype=f32),
            max_intensity=np.asarray(max_i, dtype=f32),
            sigma=np.asarray(sigma, dtype=f32),
            snr=np.asarray(snr, dtype=f32),
            npix=np.asarray(npix, dtype=np.int32),
        )
