"""Image previews: 2-D items (detector frames) and stacks of them (element maps), binned.

An item of 2 or more dimensions is shown as a heat map of one 2-D slice. A stack (``(n, ny,
nx)``, e.g. the ``map`` reducer's element maps, or more leading axes, flattened) keeps its
first slices, as many as :data:`MAX_STACK_PIXELS` input pixels allow (at least one, at most
:data:`MAX_SLICES`), each binned to at most :data:`MAX_SIDE` pixels on its long side, so the
page can choose any of them (by the metadata's ``names`` of the first axis, e.g. ``"Fe K"``)
without the viewer keeping the message. The image's axes are the last two names of the
metadata's ``axes`` when they are 1-D items of the message of the image's row and column
counts (the ``map`` reducer's ``y``, ``x`` in motor units), binned the same way; else pixel
indices. Non-finite pixels (NaN: not measured) stay non-finite (sent as ``null``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

MAX_SIDE = 512
"""Pixels on the long side of a binned image at most."""
MAX_SLICES = 64
"""Slices of a stack kept at most."""
MAX_STACK_PIXELS = 1 << 20
"""Input pixels of a stack's slices binned (and kept) at most; beyond, only the first slices
(at least one) can be chosen."""


def bin_image(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int]:
    """Block means of ``f x f`` pixels, ``f = ceil(max(rows, columns) / max_side)``.

    Args:
        image: a 2-D numeric array (rows, columns), any dtype.
        max_side: pixels on the long side of the result at most.

    Returns:
        ``(binned, f)``: float32 array of shape ``(ceil(rows / f), ceil(columns / f))`` (the
        last row and column of blocks average the pixels there are); a non-finite pixel makes
        its block non-finite. Sums are taken in float32 (exact for 16-bit counts up to f = 16;
        a preview, not a measurement): a 4-megapixel frame takes about 20 ms.

    Raises:
        ValueError: ``image`` is not 2-D or ``max_side`` < 1.
    """
    if image.ndim != 2 or max_side < 1:
        raise ValueError(f"bin_image needs a 2-D image and max_side >= 1, got {image.shape}")
    rows, cols = image.shape
    f = max(1, math.ceil(max(rows, cols) / max_side))
    if f == 1:
        return image.astype(np.float32), 1
    r, c = np.arange(0, rows, f), np.arange(0, cols, f)
    # Along the rows first: contiguous memory, so the large pass is the fast one.
    sums = np.add.reduceat(np.add.reduceat(image, c, axis=1, dtype=np.float32), r, axis=0)
    counts = np.outer(np.diff(r, append=rows), np.diff(c, append=cols))
    return (sums / counts).astype(np.float32), f


def bin_axis(values: np.ndarray, f: int) -> np.ndarray:
    """Means of ``f`` consecutive values (the centres of the binned pixels), float64."""
    values = np.asarray(values, dtype=np.float64)
    if f == 1:
        return values.copy()
    starts = np.arange(0, values.size, f)
    return np.add.reduceat(values, starts) / np.diff(starts, append=values.size)


@dataclass
class ImagePreview:
    """The latest image (or stack) of one data item of a port, binned."""

    name: str
    stream: str
    id: int
    shape: tuple[int, ...]
    """Of the item received, e.g. ``(15, 4, 5)`` for 15 element maps of 4 x 5 pixels."""
    slices: list[np.ndarray]
    """The binned 2-D slices kept (float32), the first ones of the stack; one for a 2-D item."""
    binning: int
    count: int
    """Slices in the stack (1 for a 2-D item); :attr:`slices` holds the first of them."""
    labels: list[str]
    """One per slice kept (:func:`_labels`): ``"Fe Ka"``, ``"0, Fe Ka"``, ``"3"``, ``"0,3"``."""
    axes: tuple[str | None, str | None]
    """Names of the (row, column) axes; None: pixel index."""
    coords: tuple[np.ndarray | None, np.ndarray | None]
    """Binned pixel centres along rows and columns (float64), from the axis items."""

    @classmethod
    def make(cls, name: str, value: np.ndarray, msg: Any, axes: list[str]) -> ImagePreview:
        """Bin item ``name`` (``value``, 2-D or more) of message ``msg`` whose metadata names
        ``axes``."""
        rows, cols = value.shape[-2:]
        stack = value.reshape(-1, rows, cols)
        kept = min(len(stack), MAX_SLICES, max(1, MAX_STACK_PIXELS // max(1, rows * cols)))
        slices, f = [], 1
        for frame in stack[:kept]:
            binned, f = bin_image(frame)
            slices.append(binned)
        labels = _labels(value.shape[:-2], msg.metadata.get("names"), kept)
        pair = axes[-2:] if len(axes) >= 2 else [None, None]
        y, x = (_coords(msg, a, n, f) for a, n in zip(pair, (rows, cols), strict=True))
        shown = (pair[0] if y is not None else None, pair[1] if x is not None else None)
        count = len(stack)
        return cls(name, msg.stream, msg.id, value.shape, slices, f, count, labels, shown, (y, x))

    def payload(self, index: int | None) -> dict[str, Any]:
        """The JSON-able heat map of slice ``index`` (None or not kept: the first); see
        docs/viewer.md, "plot"."""
        index = index if index is not None and 0 <= index < len(self.slices) else 0
        return {
            "name": self.name,
            "stream": self.stream,
            "id": self.id,
            "shape": list(self.shape),
            "binning": self.binning,
            **encode(self.slices[index]),
            "slice": index,
            "slices": self.count,
            "labels": self.labels,
            "label": self.labels[index] if self.count > 1 else None,
            "y_axis": self.axes[0],
            "x_axis": self.axes[1],
            "y": self.coords[0],
            "x": self.coords[1],
        }


def _labels(lead: tuple[int, ...], names: Any, kept: int) -> list[str]:
    """Labels of the first ``kept`` slices of a stack whose leading axes are ``lead``: their
    indices (``"0,3"``), the last one replaced by its name when ``names`` (the metadata's,
    naming the values' last axis: the ``map`` reducer's element lines) has that axis's length
    (``"Fe Ka"``; ``"0, Fe Ka"`` for maps per detector element and line)."""
    named = bool(lead) and isinstance(names, list) and len(names) == lead[-1]
    labels = []
    for index in islice(np.ndindex(lead), kept):
        if named:
            labels.append(", ".join([*map(str, index[:-1]), str(names[index[-1]])]))
        else:
            labels.append(",".join(map(str, index)))
    return labels


def _coords(msg: Any, axis: Any, size: int, f: int) -> np.ndarray | None:
    """The values of item ``axis`` of ``msg`` binned by ``f`` if it is a numeric 1-D item of
    ``size`` values; else None."""
    item = msg.data.get(axis) if isinstance(axis, str) else None
    if isinstance(item, np.ndarray) and item.shape == (size,) and item.dtype.kind in "iuf":
        return bin_axis(item, f)
    return None


def encode(image: np.ndarray) -> dict[str, Any]:
    """The pixels of a 2-D image as sent to the page: ``rows``, ``columns``, ``z`` (base64 of
    little-endian float32, row-major), ``min`` and ``max`` of the finite pixels (None if none)
    and ``missing`` (the non-finite ones)."""
    z = np.ascontiguousarray(image, dtype="<f4")
    finite = z[np.isfinite(z)]
    return {
        "rows": int(z.shape[0]),
        "columns": int(z.shape[1]),
        "z": base64.b64encode(z.tobytes()).decode("ascii"),
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "missing": int(z.size - finite.size),
    }
