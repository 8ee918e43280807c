"""Writes data/xspress3/scan_0002.h5 and data/positions/scan_0002.h5: a 4 x 5 mesh scan of a
4-element detector, in the HDF5 layout the areaDetector HDF5 plugin writes for an Xspress3
(``/entry/instrument/detector/data`` of (points, elements, channels) and the per-frame
NDAttributes ``CHAN{k}DTFactor``, ``CHAN{k}SCA0`` in ``/entry/instrument/NDAttributes``), and
the motor positions of the same points in a file of their own (``/entry/scan/positions``,
(points, 2): ``samx``, ``samy`` in um, as an encoder or PandA capture would give them).

No real Xspress3 file could be had here: the spectra are made from PyMca's real steel spectrum
(tests/data/xrf/Steel.spe): at each point that spectrum scaled by a blob's intensity and by each
element's gain (0.7 to 1.3), then divided by the element's dead-time factor (1.05 to 1.4, higher
where the blob is brighter) and rounded to whole counts, as a detector losing counts to dead
time would record them; the factors are stored as ``CHAN{k}DTFactor``. The motor positions are
the pixel centres (0.5 um steps) plus a reproducible jitter of less than a quarter step.

    python examples/xrf-map/make_xspress3.py
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PyMca5.PyMcaIO import specfilewrapper

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "tests" / "data" / "xrf" / "Steel.spe"
NY, NX = 4, 5
ELEMENTS = 4
STEP_UM = 0.5
GAIN = np.array([1.0, 0.7, 1.3, 0.9])
REAL_TIME = 0.1  # s per point
CLOCK = 12.5e-9  # s per tick of the Xspress3 80 MHz clock


def spectra() -> tuple[np.ndarray, np.ndarray]:
    """Recorded counts (points, elements, channels), uint32, and the dead-time factors
    (points, elements), points in raster order."""
    steel = np.asarray(specfilewrapper.Specfile(str(SOURCE))[0].mca(1), dtype=np.float64)
    counts = np.zeros((NY * NX, ELEMENTS, steel.size), dtype=np.uint32)
    factors = np.zeros((NY * NX, ELEMENTS))
    for iy in range(NY):
        for ix in range(NX):
            blob = np.exp(-((ix - 2) ** 2 + (iy - 1.5) ** 2) / 2.0)
            point = iy * NX + ix
            factors[point] = 1.05 + 0.25 * blob + 0.025 * np.arange(ELEMENTS)
            true = (0.2 + blob) * GAIN[:, None] * steel[None, :]
            counts[point] = np.round(true / factors[point][:, None]).astype(np.uint32)
    return counts, factors


def write_xspress3(path: Path, counts: np.ndarray, factors: np.ndarray) -> Path:
    """``counts`` (points, elements, channels) and ``factors`` (points, elements) written in the
    Xspress3 areaDetector layout (see the module doc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        data = detector.create_dataset(
            "data", data=counts, chunks=(1, *counts.shape[1:]), compression="gzip"
        )
        data.attrs["signal"] = 1
        attributes = instrument.create_group("NDAttributes")
        attributes.attrs["NX_class"] = "NXcollection"
        for k in range(counts.shape[1]):
            attributes[f"CHAN{k + 1}DTFactor"] = factors[:, k]
            attributes[f"CHAN{k + 1}SCA0"] = np.full(counts.shape[0], round(REAL_TIME / CLOCK))
    return path


def write_positions(path: Path, table: np.ndarray) -> Path:
    """The motor positions (points, 2: samx, samy; um) as ``/entry/scan/positions``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        scan = entry.create_group("scan")
        scan.attrs["NX_class"] = "NXcollection"
        ds = scan.create_dataset("positions", data=table)
        ds.attrs["columns"] = "samx samy"
        ds.attrs["units"] = "um"
    return path


def positions() -> np.ndarray:
    """(points, 2): samx, samy (um) of each point in raster order, jittered reproducibly."""
    jitter = np.random.default_rng(2).uniform(-0.2, 0.2, size=(NY * NX, 2)) * STEP_UM
    iy, ix = np.divmod(np.arange(NY * NX), NX)
    return np.stack([ix * STEP_UM, iy * STEP_UM], axis=1) + jitter


def main() -> list[Path]:
    counts, factors = spectra()
    return [
        write_xspress3(HERE / "data" / "xspress3" / "scan_0002.h5", counts, factors),
        write_positions(HERE / "data" / "positions" / "scan_0002.h5", positions()),
    ]


if __name__ == "__main__":
    print(*main(), sep="\n")
