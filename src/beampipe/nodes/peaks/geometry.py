"""Where the beam hits the detector, for peakfinder8's radial statistics: the beam centre in
pixels, given or read from a pyFAI PONI file, and each pixel's distance from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from beampipe.nodes.azint.geometry import GeometryError, load_pyfai

__all__ = ["GeometryError", "center_from_poni", "radius_map"]


def center_from_poni(path: str) -> tuple[float, float, tuple[int, int] | None]:
    """``(fs, ss, detector shape or None)`` of a pyFAI PONI file: the direct beam's position on
    the detector in pixels (fast-scan = column, slow-scan = row; pyFAI's ``getFit2D``
    ``centerX``, ``centerY``, which include the detector's tilt), and the detector's shape
    (rows, columns) when the file names a detector with one.

    Raises:
        GeometryError: the file does not exist or pyFAI cannot read it (the text names it).
    """
    if not Path(path).is_file():
        raise GeometryError(f"PONI file {path!r} does not exist")
    load_pyfai()  # without pyopencl's warning
    import pyFAI

    try:
        ai = pyFAI.load(path)
        fit2d = ai.getFit2D()
    except Exception as exc:
        raise GeometryError(f"cannot read the PONI file {path!r} with pyFAI: {exc}") from exc
    shape = ai.detector.shape
    return (
        float(fit2d["centerX"]),
        float(fit2d["centerY"]),
        None if shape is None else (int(shape[0]), int(shape[1])),
    )


def radius_map(shape: tuple[int, int], fs: float, ss: float) -> np.ndarray:
    """float32 (rows, columns): each pixel's distance in pixels from the point (``fs``,
    ``ss``), pixel (r, c) being at (fs = c, ss = r): the map of radii Cheetah and OM make from
    their geometry for a single flat panel."""
    rows, cols = shape
    ss_idx, fs_idx = np.ogrid[:rows, :cols]
    return np.hypot(fs_idx - fs, ss_idx - ss).astype(np.float32)
