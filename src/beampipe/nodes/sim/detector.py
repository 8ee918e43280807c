"""A synthetic area detector: ``use: detector_sim``.

Produces acquisition series of powder-diffraction-like images (Debye-Scherrer rings on a flat
background, with Poisson counting noise) at a chosen frame rate or as fast as the pipeline takes
them. It needs no hardware and no files, so pipelines and the transport can be developed,
tested and benchmarked at realistic frame sizes and rates (an EIGER 4M frame by default).

Drawing Poisson noise for a 4-megapixel frame takes a few hundred milliseconds, far too slow for
kHz rates, so a small pool of distinct noisy frames is drawn once and cycled through.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

import beampipe
from beampipe.message import Item
from beampipe.nodes.pacing import Pacer, Rate

__all__ = ["BACKGROUND", "RINGS", "DetectorSim", "ring_model"]

BACKGROUND = 2.0
"""Flat background of the ring model, counts per pixel and frame."""

RINGS: tuple[tuple[float, float], ...] = (
    (0.16, 40.0),
    (0.27, 25.0),
    (0.38, 60.0),
    (0.52, 15.0),
    (0.66, 20.0),
    (0.81, 10.0),
)
"""The Debye-Scherrer rings of the model: (radius as a fraction of the half-diagonal
``s = hypot(rows, columns) / 2``, peak height in counts per pixel and frame)."""

RING_WIDTH = 0.003
"""Gaussian standard deviation of every ring as a fraction of ``s`` (at least 1.5 pixels)."""

CENTRE = (0.53, 0.47)
"""Beam centre as fractions of (rows - 1, columns - 1): near the middle, not on it."""

BURST = 64
"""At ``rate: max`` frames are yielded in lists (bursts) of this many: all are at hand, so the
runtime may send small ones in batches (see :class:`beampipe.Source`)."""

_TABLE_STEP = 0.125  # pixels between the radial samples that the model is interpolated from

MAX_FRAME_BYTES = 1 << 30
"""Bytes of one frame (1 GiB: an EIGER2 16M frame of 32-bit pixels is 72 MB)."""
MAX_STREAMS = 1_000_000
"""Streams of a run (their names are made at the start)."""
MAX_POOL = 1024
"""Distinct noisy frames drawn at the start."""


def ring_model(shape: tuple[int, int]) -> np.ndarray:
    """The expected counts lambda(y, x) of one frame, float64, of the given (rows, columns) shape.

    ``lambda(y, x) = B + sum_k A_k * exp(-(r - R_k)**2 / (2 * sigma**2))``, where r is the
    distance in pixels from the beam centre (y_c, x_c) = (0.53 (rows - 1), 0.47 (columns - 1)),
    B = :data:`BACKGROUND`, (R_k / s, A_k) are the :data:`RINGS`, s = hypot(rows, columns) / 2
    (half the image diagonal) and sigma = max(1.5, :data:`RING_WIDTH` * s). Rings beyond the
    image edge are cut off, as on a real detector. The radial profile is sampled every 1/8 pixel
    and interpolated linearly (a 4-megapixel frame costs about 0.1 s instead of one exp() per
    ring and pixel).
    """
    rows, cols = shape
    s = 0.5 * math.hypot(rows, cols)
    sigma = max(1.5, RING_WIDTH * s)
    y = np.arange(rows, dtype=np.float64) - CENTRE[0] * (rows - 1)
    x = np.arange(cols, dtype=np.float64) - CENTRE[1] * (cols - 1)
    r = np.sqrt(np.add.outer(y * y, x * x))
    r_max = float(r.max())
    step = max(_TABLE_STEP, r_max / 65536)  # a one-row frame has r up to its length: cap the table
    grid = np.arange(0.0, r_max + 2 * step, step)
    profile = np.full_like(grid, BACKGROUND)
    for fraction, height in RINGS:
        profile += height * np.exp(-0.5 * ((grid - fraction * s) / sigma) ** 2)
    return np.interp(r, grid, profile)


class DetectorSim(beampipe.Source):
    """A synthetic area detector: ``streams`` acquisition series of ``frames`` images each.

    Streams, one after the other:

    * :class:`~beampipe.StreamStart` named ``f"{prefix}{k:05d}"``, k = 1, 2, ...
      (``series_00001``), metadata ``{"detector": "detector_sim", "shape": [rows, columns],
      "dtype": "uint16", "frames": n, "rate": rate, "signal": "image"}`` (``rate`` in Hz, or
      ``"max"``).
    * ``frames`` :class:`~beampipe.Message` s with ids 1..n: ``data = {"image": frame}``, a 2-D
      array of shape (rows, columns) (``shape``, or (1, frame_bytes / itemsize)) and the
      ``dtype`` chosen, in counts; ``metadata = {"frame": id - 1, "signal": "image",
      "units": {"image": "counts"}}`` (the 0-based frame number, and the plotting conventions
      that ``nexus_writer`` reads).
    * :class:`~beampipe.EndOfStream` with ``last_id = frames`` and ``next_stream`` = the next
      series' name (None after the last).

    Content: the expected counts lambda(y, x) of :func:`ring_model` (a flat background of
    :data:`BACKGROUND` counts plus the Gaussian rings of :data:`RINGS` around a beam centre near
    the middle of the image), with Poisson noise: ``pool`` frames are drawn once, with
    ``numpy.random.default_rng(seed)``, when :meth:`generate` starts, as
    ``min(rng.poisson(lambda), max of dtype)`` cast to ``dtype``. Frame g of the run (counted over
    all streams from 0) is pooled frame ``g % pool``, so the output depends only on the params.
    The pooled arrays are sent themselves, not copies, and are read-only.

    Pacing (``rate``): ``"max"`` sends as fast as downstream takes frames (yielded in bursts of
    :data:`BURST`); a number sends that many frames per second. Send times follow a deadline
    schedule on a monotonic clock (``self.pacer``, a :class:`~beampipe.nodes.pacing.Pacer`)
    that starts at the first frame and runs on across streams (frame g is due at
    t0 + g / rate), so time spent downstream is not added to the interval, and after a
    backpressure stall the detector catches up, as a buffering detector would.

    Raises (from the params): ``pydantic.ValidationError`` (a ``ValueError``) for a ``shape``
    that is not two positive ints, a ``dtype`` not in the list, ``rate`` below 0.001 Hz or not
    finite, ``frames``, ``streams`` or ``pool`` < 1, a ``pool`` over 1024, a negative ``seed``, a
    ``frame_bytes`` that is not a positive multiple of the dtype's itemsize, and a frame over
    1 GiB.
    """

    class Params(beampipe.Params):
        """``shape``: [rows, columns] of a frame, two positive ints (EIGER 4M by default), at
        most 1 GiB a frame (:data:`MAX_FRAME_BYTES`).
        ``frame_bytes``: if set, frames are one row of ``frame_bytes / itemsize`` pixels instead
        (``shape`` is then ignored; for benchmarks by message size); must be a multiple of the
        itemsize, at most 1 GiB. ``dtype``: pixel type. ``rate``: ``"max"`` or frames per
        second (Hz, at least 0.001).
        ``frames``: frames per stream. ``streams``: number of streams (acquisition series, at most
        1,000,000).
        ``prefix``: stream names are ``prefix`` + 5-digit series number from 1. ``seed``: of
        the random generator (same seed, same frames). ``pool``: distinct noisy frames drawn
        at the start and cycled through (1 to 1024)."""

        shape: tuple[PositiveInt, PositiveInt] = (2167, 2070)
        frame_bytes: Annotated[int, Field(gt=0, le=MAX_FRAME_BYTES)] | None = None
        dtype: Literal["uint8", "uint16", "uint32", "float32"] = "uint16"
        rate: Literal["max"] | Rate = "max"
        frames: PositiveInt = 100
        streams: Annotated[int, Field(gt=0, le=MAX_STREAMS)] = 1
        prefix: str = "series_"
        seed: NonNegativeInt = 0
        pool: Annotated[int, Field(gt=0, le=MAX_POOL)] = 8

        @model_validator(mode="after")
        def _frame_fits(self) -> DetectorSim.Params:
            itemsize = np.dtype(self.dtype).itemsize
            if self.frame_bytes is not None and self.frame_bytes % itemsize:
                raise ValueError(
                    f"frame_bytes {self.frame_bytes} is not a multiple of the {itemsize}-byte "
                    f"itemsize of {self.dtype}"
                )
            rows, columns = self.shape
            if self.frame_bytes is None and rows * columns * itemsize > MAX_FRAME_BYTES:
                raise ValueError(
                    f"a frame of shape {list(self.shape)} and dtype {self.dtype} would be "
                    f"{rows * columns * itemsize:,} bytes: at most {MAX_FRAME_BYTES:,} (1 GiB)"
                )
            return self

        @property
        def frame_shape(self) -> tuple[int, int]:
            """(rows, columns) of a frame: ``shape``, or (1, frame_bytes / itemsize)."""
            if self.frame_bytes is not None:
                return (1, self.frame_bytes // np.dtype(self.dtype).itemsize)
            return (int(self.shape[0]), int(self.shape[1]))

    params: DetectorSim.Params

    def __init__(self, params: DetectorSim.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._pool: list[np.ndarray] | None = None
        self.pacer = Pacer()

    def stream_names(self) -> list[str]:
        """The names of the streams, in order."""
        return [f"{self.params.prefix}{k:05d}" for k in range(1, self.params.streams + 1)]

    def pooled_frames(self) -> list[np.ndarray]:
        """The pooled frames (read-only arrays), drawn on the first call: ``min(pool, frames *
        streams)`` of them, since more would never be sent."""
        if self._pool is None:
            p = self.params
            count = min(p.pool, p.frames * p.streams)
            expected = ring_model(p.frame_shape)
            rng = np.random.default_rng(p.seed)
            dtype = np.dtype(p.dtype)
            top = np.iinfo(dtype).max if dtype.kind == "u" else None
            pool = []
            for _ in range(count):
                counts = rng.poisson(expected)
                if top is not None:
                    np.minimum(counts, top, out=counts)
                frame = counts.astype(dtype)
                frame.flags.writeable = False
                pool.append(frame)
            self._pool = pool
        return self._pool

    def generate(self) -> Iterator[Item]:
        """StreamStart, Messages and EndOfStream for each series in turn (see the class doc)."""
        p = self.params
        pool = self.pooled_frames()
        names = self.stream_names()
        interval = 0.0 if p.rate == "max" else 1.0 / float(p.rate)
        meta: dict[str, Any] = {
            "detector": "detector_sim",
            "shape": list(p.frame_shape),
            "dtype": p.dtype,
            "frames": p.frames,
            "rate": p.rate,
            "signal": "image",
        }
        self.pacer.restart()
        g = 0  # frame number over the whole run
        for k, stream in enumerate(names):
            yield beampipe.StreamStart(stream=stream, metadata=dict(meta))
            if interval:
                for frame in range(p.frames):
                    self.pacer.wait(interval)
                    yield self._frame(pool[g % len(pool)], stream, frame)
                    g += 1
            else:  # every frame is at hand: bursts, which the runtime may send in batches
                for first in range(0, p.frames, BURST):
                    last = min(first + BURST, p.frames)
                    yield [
                        self._frame(pool[(g + i) % len(pool)], stream, frame)
                        for i, frame in enumerate(range(first, last))
                    ]
                    g += last - first
            following = names[k + 1] if k + 1 < len(names) else None
            yield beampipe.EndOfStream(stream=stream, last_id=p.frames, next_stream=following)

    @staticmethod
    def _frame(image: np.ndarray, stream: str, frame: int) -> beampipe.Message:
        return beampipe.Message(
            data={"image": image},
            metadata={"frame": frame, "signal": "image", "units": {"image": "counts"}},
            stream=stream,
            id=frame + 1,
        )
