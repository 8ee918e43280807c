"""Detector corrections of each frame: ``use: frame.correct``."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

import beampipe
from beampipe.nodes.frame.frames import FrameParams, FrameWorker
from beampipe.nodes.frame.pixels import PixelFileError, read_image

__all__ = ["FrameCorrect"]


class FrameCorrect(FrameWorker):
    """Dark subtraction, flat-field division and masking of each frame:
    ``corrected = (raw - dark) / flat``, NaN where a pixel is masked.

    A pixel is masked (NaN in the output) when the ``mask`` file masks it; when its raw value is
    one of the detector's markers for gaps and bad pixels (``invalid``: by default, for signed
    integer frames any negative value, PILATUS's -1 for gaps and -2 for bad pixels; for unsigned
    integer frames the dtype's maximum, EIGER's 2**n - 1 for gaps and overflows); when its raw
    value is >= ``saturation``; when the flat is <= 0 or not finite there; or when the raw value
    is NaN. ``frame.stats``, ``frame.roi``, ``frame.bin`` and the ``mean``/``max`` reducers
    leave NaN pixels out (or keep them NaN). These NaN are intended: the node's
    ``check_finite: false`` keeps the run from warning about them.

    Input: one 2-D frame per message. Output, per frame (stream and id kept): data ``{field:
    corrected}``, ``dtype`` (float32 by default: exact for integer counts up to 2**24, the
    precision of pyFAI's own preprocessing), the frame's shape; metadata: the input's, with
    ``signal`` = the field and ``masked`` (int: the pixels NaN in the output).

    Raises: as :class:`~beampipe.nodes.frame.frames.FrameWorker`; ``PixelFileError`` for a dark
    or flat file that cannot be read or whose shape is not the mask's or the other's (at
    creation), or not the frames' (at a stream's first frame).
    """

    class Params(FrameParams):
        """``dark``, ``flat``: image files (read as ``mask`` is; counts, and a gain normalised
        to 1). ``saturation``: raw value (counts) from which a pixel is masked (null: none).
        ``invalid``: raw values marking gaps and bad pixels (``auto``: see the class; ``[]``:
        none). ``dtype``: of the output."""

        dark: beampipe.InputPath | None = None
        flat: beampipe.InputPath | None = None
        saturation: float | None = None
        invalid: Literal["auto"] | list[float] = "auto"
        dtype: Literal["float32", "float64"] = "float32"

    params: FrameCorrect.Params

    def __init__(self, params: FrameCorrect.Params, name: str = "") -> None:
        super().__init__(params, name)
        dtype = np.dtype(params.dtype)
        self.dark = read_image(params.dark, "dark").astype(dtype) if params.dark else None
        self.flat = read_image(params.flat, "flat").astype(dtype) if params.flat else None
        images = {"mask": self.mask, "dark": self.dark, "flat": self.flat}
        shapes = {k: v.shape for k, v in images.items() if v is not None}
        if len(set(shapes.values())) > 1:
            raise PixelFileError(
                f"{self.name}: the images differ in shape: "
                + ", ".join(f"{k} {getattr(params, k)!r} {shape}" for k, shape in shapes.items())
            )
        bad_flat = None
        if self.flat is not None:
            bad_flat = ~(np.isfinite(self.flat) & (self.flat > 0))
        self._fixed = _union(self.mask, bad_flat)
        """What is masked whatever the frame: the mask file, the flat's bad pixels."""

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        found = self.frame(msg)
        if found is None:
            return None
        name, raw = found
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        for what in ("dark", "flat"):
            image = getattr(self, what)
            if image is not None and image.shape != raw.shape:
                path = getattr(self.params, what)
                raise PixelFileError(
                    f"{where}: the {what} {path!r} has shape {image.shape}, the frames {raw.shape}"
                )
        out = raw.astype(self.params.dtype)
        if self.dark is not None:
            np.subtract(out, self.dark, out=out)
        if self.flat is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(out, self.flat, out=out)
        masked = _union(self._fixed, self._invalid(raw))
        if masked is not None:
            out[masked] = np.nan
        metadata: dict[str, Any] = {**msg.metadata, "signal": name}
        metadata["masked"] = int(np.count_nonzero(np.isnan(out)))
        return beampipe.Message(data={name: out}, metadata=metadata)

    def _invalid(self, raw: np.ndarray) -> np.ndarray | None:
        """The pixels whose raw value marks a gap or bad pixel, or is saturated."""
        invalid = self.params.invalid
        found = None
        if invalid == "auto":
            if raw.dtype.kind == "i":
                found = raw < 0
            elif raw.dtype.kind == "u":
                found = raw == np.iinfo(raw.dtype).max
        elif invalid:
            found = np.isin(raw, invalid)
        if self.params.saturation is not None:
            found = _union(found, raw >= self.params.saturation)
        return found


def _union(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return b if a is None else a
    return a | b
