"""Writes CBF frames into a folder the way a PILATUS detector's file writer does: one file per
frame, ``sample_00001.cbf``, ``sample_00002.cbf``, ..., each written in pieces at the frame
period, then the end marker ``sample.done``.

Frame k is drawn from the real LiX frame in ``data/``: Poisson counts around its pixel values
(``numpy.random.default_rng(k)``), its gap and bad pixels (-1, -2) kept, int32, with the
original CBF header. Run from anywhere, next to the pipeline::

    python examples/image-watch/detector.py &  beampipe run examples/image-watch/pipeline.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fabio
import numpy as np
from fabio.cbfimage import CbfImage

HERE = Path(__file__).resolve().parent
REAL = HERE / "data" / "Sol-b_000018_WAXS1.cbf"


def frame(k: int) -> np.ndarray:
    """Frame k (from 1): Poisson counts around the real frame, its negative pixels kept."""
    real = fabio.open(str(REAL)).data
    counts = np.random.default_rng(k).poisson(np.clip(real, 0, None)).astype(np.int32)
    return np.where(real < 0, real, counts)


def write(folder: Path, frames: int, period: float, scan: str = "sample") -> None:
    """Write ``frames`` files into ``folder``, one every ``period`` seconds, each in 4 pieces."""
    folder.mkdir(parents=True, exist_ok=True)
    header = fabio.open(str(REAL)).header
    for k in range(1, frames + 1):
        staging = folder / f".{scan}.staging"
        CbfImage(data=frame(k), header=header).write(str(staging))
        raw = staging.read_bytes()
        staging.unlink()
        with open(folder / f"{scan}_{k:05d}.cbf", "wb") as f:
            for piece in range(4):
                f.write(raw[piece * len(raw) // 4 : (piece + 1) * len(raw) // 4])
                f.flush()
                time.sleep(period / 8)
        time.sleep(period / 2)
    (folder / f"{scan}.done").touch()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=HERE / "incoming")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--period", type=float, default=0.2, help="seconds per frame")
    args = parser.parse_args()
    write(args.folder, args.frames, args.period)
