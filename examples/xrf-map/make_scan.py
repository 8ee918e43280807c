"""Writes data/scan.mca: a small SPEC mesh scan of 4 x 5 points with one MCA spectrum per point,
made from PyMca's real steel spectrum (tests/data/xrf/Steel.spe): at each point the spectrum
scaled by the intensity of a blob centred on the grid (rounded to whole counts), so the element
maps show the blob. Point (row 2, column 3) is left out, as a point lost during the scan: its
pixel stays NaN in the maps. Data columns: ``ix``, ``iy`` (pixel indices), ``samx``, ``samy``
(motor positions, um), ``I0``. The scan's ``#D`` date is when the file was made.

    python examples/xrf-map/make_scan.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PyMca5.PyMcaIO import specfilewrapper

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "tests" / "data" / "xrf" / "Steel.spe"
NY, NX = 4, 5
LOST = (2, 3)
STEP_UM = 0.5


def main() -> Path:
    counts = np.asarray(specfilewrapper.Specfile(str(SOURCE))[0].mca(1))
    lines = [
        f"#F scan.mca (made by make_scan.py from {SOURCE.name})",
        "",
        f"#S 1 mesh samx 0 {STEP_UM * (NX - 1)} {NX - 1} samy 0 {STEP_UM * (NY - 1)} {NY - 1} 1",
        f"#D {time.ctime()}",
        "#N 5",
        f"#@CHANN {counts.size} 0 {counts.size - 1} 1",
        "#L ix  iy  samx  samy  I0",
    ]
    for iy in range(NY):
        for ix in range(NX):
            if (iy, ix) == LOST:
                continue
            scale = 0.2 + np.exp(-((ix - 2) ** 2 + (iy - 1.5) ** 2) / 2.0)
            lines.append(f"{ix} {iy} {ix * STEP_UM} {iy * STEP_UM} 100000")
            lines.append("@A " + " ".join(str(int(v)) for v in np.round(scale * counts)))
    path = HERE / "data" / "scan.mca"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(main())
