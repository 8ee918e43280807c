"""The LiX geometry of a py4xs Bluesky HDF5 file as pyFAI PONI files and pixel masks.

NSLS-II LiX stores, in the file attribute ``detectors``, one JSON object per detector as written
by py4xs (``py4xs.detector_config.DetectorConfig.pack_dict``): ``ImageWidth``/``ImageHeight``,
``extension`` (``_SAXS``, ``_WAXS2``) and ``exp_para``, the py4xs ``ExpPara`` (geometry of Yang,
J. Synchrotron Rad. 20 (2013) 211-218) with its mask. This script writes, next to itself,
``saxs.poni`` and ``waxs2.poni`` (pyFAI PONI files) and ``masks.h5`` (``saxs`` and ``waxs2``:
uint8, 1 = masked, in the frames' own orientation: the py4xs mask, and the pixels that the
Pilatus marks -1 (module gaps) or -2 (bad pixels) in the file's frame)::

    python examples/saxs-lix/lix_geometry.py            # write them
    python examples/saxs-lix/lix_geometry.py --check    # print the AgBH rings they give

How each py4xs field maps (``README.md`` beside this file says why):

- ``flip``: py4xs turns the frame before using it: ``np.rot90`` ``flip`` times (a mirror first
  if negative). ``bm_ctr_x``/``bm_ctr_y``, ``ImageWidth`` and the mask are in that turned frame;
  the frames in the file are not turned, so the beam centre and the mask are turned back.
- ``bm_ctr_x``, ``bm_ctr_y``: the beam centre, column and row of the turned frame, pixel *centres*
  at integers (``RT = (X - bm_ctr_x, -(Y - bm_ctr_y), 0)`` for pixel (X, Y)). Fit2D counts pixel
  *edges* from 0, so the Fit2D centre is the column/row of the unturned frame + 0.5.
- ``ratioDw``: sample-detector distance / width of the turned frame, in pixels
  (``dr = ratioDw * ImageWidth``): distance = ``ratioDw * ImageWidth * 172 um``.
- ``det_tilt``, ``det_orient``, ``det_phi``: rotations of the detector; all 0 in this file
  (perpendicular to the beam; a ``det_phi`` would only turn the azimuth). A tilt is refused
  rather than converted untested.
- ``wavelength``: in Angstrom (pyFAI: metres).
- ``mask``: a bz2-compressed pickle of a ``py4xs.mask.Mask``. It is unpickled with only
  ``Mask`` and numpy arrays allowed (the Python docs' "Restricting Globals"): nothing else in the
  file can run.

With these, pyFAI's ``Geometry.setFit2D`` (direct distance in mm, beam centre in pixels, tilt and
tilt-plane rotation 0, pixel size in um) gives the PONI. Detector: Pilatus 1M (1043 x 981 pixels of
172 um), the frame size of both detectors.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pyFAI.calibrant import get_calibrant
from pyFAI.detectors import detector_factory
from pyFAI.geometry import Geometry
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "AgBH-2020Aug16.h5"
FRAMES = "AgBH_2020Aug16/primary/data"
DETECTORS = {"_SAXS": ("saxs", "pil1M_image"), "_WAXS2": ("waxs2", "pilW2_image")}
"""py4xs ``extension`` -> (name of the PONI and mask here, frame dataset in ``FRAMES``)."""
PIXEL_UM = 172.0
DETECTOR = "Pilatus1M"


def read_detectors(path: Path = DATA) -> dict[str, dict[str, Any]]:
    """``{extension: detector}``: the ``detectors`` attribute of a py4xs HDF5 file."""
    with h5py.File(path, "r") as f:
        return {d["extension"]: d for d in json.loads(f.attrs["detectors"])}


def beam_centre(detector: dict[str, Any], shape: tuple[int, int]) -> tuple[float, float]:
    """(column, row) of the beam centre in the unturned frame of ``shape`` (rows, columns),
    pixel centres at integers.

    Raises:
        ValueError: a negative ``flip`` (a mirror: not in these files) or a turned frame whose
            size is not py4xs's ``ImageWidth`` x ``ImageHeight``.
    """
    p = detector["exp_para"]
    flip, rows, cols = p["flip"], *shape
    if flip < 0:
        raise ValueError(f"{detector['extension']}: flip {flip} (a mirror) is not converted")
    width, height = (cols, rows) if flip % 2 == 0 else (rows, cols)
    if (width, height) != (detector["ImageWidth"], detector["ImageHeight"]):
        raise ValueError(
            f"{detector['extension']}: frames {shape} turned {flip} times are {width} x {height}, "
            f"py4xs says {detector['ImageWidth']} x {detector['ImageHeight']}"
        )
    x, y = p["bm_ctr_x"], p["bm_ctr_y"]
    for _ in range(flip % 4):  # undo one np.rot90 (turned (x, y) <- unturned (W-1-y, x))
        width, height = height, width
        x, y = width - 1 - y, x
    return x, y


def geometry(detector: dict[str, Any], shape: tuple[int, int]) -> Geometry:
    """The pyFAI geometry of a py4xs detector whose frames have ``shape``.

    Raises:
        ValueError: a tilted detector (``det_tilt`` not 0), or see :func:`beam_centre`.
    """
    p = detector["exp_para"]
    if p.get("det_tilt", 0):
        raise ValueError(f"{detector['extension']}: det_tilt {p['det_tilt']} is not converted")
    col, row = beam_centre(detector, shape)
    distance_mm = p["ratioDw"] * detector["ImageWidth"] * PIXEL_UM / 1000
    g = Geometry(detector=detector_factory(DETECTOR), wavelength=p["wavelength"] * 1e-10)
    g.setFit2D(distance_mm, col + 0.5, row + 0.5, 0.0, 0.0, PIXEL_UM, PIXEL_UM)
    return g


class _MaskUnpickler(pickle.Unpickler):
    """Unpickles a ``py4xs.mask.Mask`` (into :class:`_Mask`) and numpy arrays, nothing else."""

    _RECONSTRUCT = np.zeros(1).__reduce__()[0]

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("py4xs.mask", "Mask"):
            return _Mask
        if name == "_reconstruct" and module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            return self._RECONSTRUCT
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"the py4xs mask refers to {module}.{name}: not allowed")


class _Mask:
    """What a py4xs ``Mask`` holds: ``map`` (bool, the turned frame's shape), ``maskfile``."""

    map: np.ndarray


def mask(detector: dict[str, Any]) -> np.ndarray:
    """The py4xs mask turned back to the frames' orientation (bool, True = masked)."""
    packed = bz2.decompress(bytes(detector["exp_para"]["mask"]))
    turned = _MaskUnpickler(io.BytesIO(packed)).load().map
    return np.rot90(np.asarray(turned, dtype=bool), -detector["exp_para"]["flip"])


def write(out: Path = HERE, path: Path = DATA) -> None:
    """Write ``saxs.poni``, ``waxs2.poni`` and ``masks.h5`` into ``out``."""
    detectors = read_detectors(path)
    with h5py.File(path, "r") as f, h5py.File(out / "masks.h5", "w") as masks:
        for extension, (name, frames) in DETECTORS.items():
            shape = f[f"{FRAMES}/{frames}"].shape[1:]
            (out / f"{name}.poni").unlink(missing_ok=True)
            geometry(detectors[extension], shape).save(str(out / f"{name}.poni"))
            bad = f[f"{FRAMES}/{frames}"][0] < 0
            data = (mask(detectors[extension]) | bad).astype(np.uint8)
            masks.create_dataset(name, data=data, compression="gzip", shuffle=True)


def ring_positions(path: Path = DATA, out: Path = HERE) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(order n, q of the intensity maximum near n q1, 1/A)]}``: the silver behenate
    (00l) rings in the frames integrated (pyFAI, 3000 bins) with the written PONIs and masks
    for the orders whose ring is on the detector; q1 = 2 pi / d001
    of pyFAI's ``AgBh`` calibrant (d001 = 58.380 A)."""
    q1 = 2 * np.pi / get_calibrant("AgBh").dspacing[0]
    found: dict[str, list[tuple[int, float]]] = {}
    with h5py.File(path, "r") as f, h5py.File(out / "masks.h5", "r") as masks:
        for name, frames in DETECTORS.values():
            frame = f[f"{FRAMES}/{frames}"][0]
            ai = AzimuthalIntegrator()
            ai.load(str(out / f"{name}.poni"))
            pattern = ai.integrate1d(frame, 3000, unit="q_A^-1", mask=masks[name][()] != 0)
            q, intensity = pattern.radial, pattern.intensity
            found[name] = []
            for n in range(1, 10):
                near = np.abs(q - n * q1) < 0.3 * q1
                if q[0] < (n - 0.3) * q1 and near.any():
                    found[name].append((n, float(q[near][np.argmax(intensity[near])])))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the AgBH rings found")
    if parser.parse_args().check:
        q1 = 2 * np.pi / get_calibrant("AgBh").dspacing[0]
        for name, rings in ring_positions().items():
            for n, q in rings:
                print(f"{name}: AgBH (00{n}) at q = {q:.4f} 1/A, expected {n * q1:.4f}")
    else:
        write()


if __name__ == "__main__":
    main()
