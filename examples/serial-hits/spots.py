"""Serial-crystallography frames for the example: simulated Bragg spots on a real detector
background. No package on this machine ships real frames with Bragg spots (fabio's, pyFAI's
and silx's test images are downloaded at run time; the data of ../../../shared/data are powder,
SAXS/WAXS, XAS and XRF), so the spots are simulated: Gaussian spots with Poisson noise on a real
PILATUS3 300K protein-solution WAXS frame of NSLS-II LiX (``data/``, see data/README.md).

``frames(background, n, ...)`` makes them (the tests call it to have the same frames);
``SerialFrames`` is the pipeline's source, one message per frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import fabio
import numpy as np
from pydantic import Field

import beampipe


def frames(
    background: np.ndarray, n: int, hit_fraction: float = 0.3, seed: int = 1
) -> Iterator[tuple[np.ndarray, int]]:
    """``n`` frames ``(frame, spots)``: int32, the shape of ``background``, each pixel Poisson
    distributed around the background (its negative gap and bad-pixel markers kept) plus, in a
    fraction ``hit_fraction`` of the frames, 15 to 60 Gaussian spots (sigma 0.7-1.3 pixels,
    500-5000 counts at the centre) away from the gaps; ``spots`` is their number (0: no hit).
    Frame k is the same for a given ``seed`` whatever ``n``."""
    bad = background < 0
    expected = np.where(bad, 0, background).astype(np.float64)
    rows, cols = background.shape
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        image = expected.copy()
        spots = int(rng.integers(15, 61)) if rng.random() < hit_fraction else 0
        placed = 0
        while placed < spots:
            r, c = rng.uniform(6, rows - 7), rng.uniform(6, cols - 7)
            r0, c0 = int(r) - 5, int(c) - 5
            if bad[r0 : r0 + 11, c0 : c0 + 11].any():
                continue
            sigma, height = rng.uniform(0.7, 1.3), rng.uniform(500, 5000)
            yy, xx = np.mgrid[r0 : r0 + 11, c0 : c0 + 11]
            image[r0 : r0 + 11, c0 : c0 + 11] += height * np.exp(
                -((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2)
            )
            placed += 1
        frame = rng.poisson(image).astype(np.int32)
        frame[bad] = background[bad]
        yield frame, spots


class SerialFrames(beampipe.Source):
    """One stream ``run1`` of ``n`` simulated frames (``{"image": int32 frame}``, metadata
    ``signal: image`` and ``spots``: the number of simulated spots)."""

    class Params(beampipe.Params):
        """``background``: the detector frame (any fabio format); ``n``: frames;
        ``hit_fraction``: of the frames with spots; ``seed``."""

        background: beampipe.InputPath
        n: int = Field(60, ge=1)
        hit_fraction: float = Field(0.3, ge=0, le=1)
        seed: int = 1

    params: SerialFrames.Params

    def generate(self) -> Iterator[object]:
        p = self.params
        with fabio.open(p.background) as img:
            background = np.asarray(img.data)
        yield beampipe.StreamStart("run1", {"background": p.background})
        for k, (frame, spots) in enumerate(frames(background, p.n, p.hit_fraction, p.seed), 1):
            yield beampipe.Message(
                data={"image": frame},
                metadata={"signal": "image", "spots": spots},
                stream="run1",
                id=k,
            )
        yield beampipe.EndOfStream("run1", p.n)
