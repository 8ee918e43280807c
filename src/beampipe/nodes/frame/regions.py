"""Regions of interest of a frame: rectangles, polygons and masks from files, as the pixels
each selects (:class:`Region`).

Coordinates are pixel indices: ``x`` is the column, ``y`` the row, pixel ``(row r, column c)``
has its centre at ``(x=c, y=r)``. A rectangle ``{x, y, width, height}`` holds the columns
``x .. x + width - 1`` and rows ``y .. y + height - 1`` (as an EPICS areaDetector ROI's MinX,
MinY, SizeX, SizeY); a polygon the pixels whose centre is inside it (scikit-image's
``draw.polygon2mask``); a file the pixels whose value is not 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

import beampipe
from beampipe.nodes.frame.pixels import PixelFileError, read_image

__all__ = ["Rect", "Region", "RoiSpec"]


class Rect(beampipe.Params):
    """A rectangle of pixels: first column ``x``, first row ``y``, ``width`` columns and
    ``height`` rows."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class RoiSpec(beampipe.Params):
    """One ROI: exactly one of ``rect``, ``polygon`` (``[[x, y], ...]``, at least 3 vertices,
    in pixels) or ``file`` (an image whose nonzero pixels form the ROI; ``path::dataset`` for
    HDF5)."""

    rect: Rect | None = None
    polygon: list[tuple[float, float]] | None = Field(None, min_length=3)
    file: beampipe.InputPath | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> RoiSpec:
        given = [k for k in ("rect", "polygon", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of rect, polygon, file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


@dataclass
class Region:
    """The pixels of one ROI in frames of one shape, without the masked ones.

    ``box`` is the ROI's bounding box ``(rows, columns)`` as slices; ``inside`` the ROI's
    unmasked pixels in it (bool, the box's shape), or None when every pixel of the box is in;
    ``npix`` their number; ``x``/``y`` the column/row indices of the box (float64).
    """

    box: tuple[slice, slice]
    inside: np.ndarray | None
    npix: int
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def make(
        cls, name: str, spec: RoiSpec, shape: tuple[int, int], mask: np.ndarray | None
    ) -> Region:
        """The region of ``spec`` in frames of ``shape``, without the pixels ``mask`` masks.

        Raises:
            ValueError: a rectangle that does not fit in the frame; a polygon or file ROI
                without any pixel in it.
            PixelFileError: the file cannot be read or its shape is not ``shape``.
        """
        pixels = _pixels(name, spec, shape)
        rows, cols = np.nonzero(pixels)
        if rows.size == 0:
            raise ValueError(f"ROI {name!r} has no pixel in frames of shape {shape}")
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        inside = pixels[box] if mask is None else pixels[box] & ~mask[box]
        npix = int(np.count_nonzero(inside))
        x = np.arange(box[1].start, box[1].stop, dtype=np.float64)
        y = np.arange(box[0].start, box[0].stop, dtype=np.float64)
        return cls(box, None if npix == inside.size else inside, npix, x, y)

    def stats(self, frame: np.ndarray) -> tuple[float, float, float, int, float, float]:
        """``(sum, mean, max, npix, cx, cy)`` of the region in ``frame`` (float64; npix int):
        the non-finite pixels of a float frame are left out; ``cx``/``cy`` the centroid
        (intensity-weighted mean column and row). With no pixel: sum 0, the rest NaN; a
        centroid of a zero sum is NaN.

        The sums are taken over the box's columns and rows (``where`` the region is, 0
        elsewhere), so a region costs a few passes over its bounding box and no copy of its
        pixels' coordinates."""
        sub = frame[self.box]
        use, npix = self.inside, self.npix
        if frame.dtype.kind == "f":
            finite = np.isfinite(sub)
            if not finite.all():
                use = finite if use is None else use & finite
                npix = int(np.count_nonzero(use))
        if npix == 0:
            return 0.0, np.nan, np.nan, 0, np.nan, np.nan
        if use is None:
            weights, peak = sub, sub.max()
        else:
            weights = np.where(use, sub, 0)
            lowest = -np.inf if sub.dtype.kind == "f" else np.iinfo(sub.dtype).min
            peak = sub.max(where=use, initial=lowest)
        columns = weights.sum(axis=0, dtype=np.float64)
        total = float(columns.sum())
        mean = total / npix
        if total == 0:
            return total, mean, float(peak), npix, np.nan, np.nan
        rows = weights.sum(axis=1, dtype=np.float64)
        cx, cy = float(columns @ self.x) / total, float(rows @ self.y) / total
        return total, mean, float(peak), npix, cx, cy


def _pixels(name: str, spec: RoiSpec, shape: tuple[int, int]) -> np.ndarray:
    """The ROI's pixels in frames of ``shape`` (bool)."""
    ny, nx = shape
    if spec.rect is not None:
        r = spec.rect
        if r.x + r.width > nx or r.y + r.height > ny:
            raise ValueError(
                f"ROI {name!r}: the rectangle x {r.x}..{r.x + r.width - 1}, y "
                f"{r.y}..{r.y + r.height - 1} does not fit in frames of {nx} columns x "
                f"{ny} rows"
            )
        pixels = np.zeros(shape, dtype=bool)
        pixels[r.y : r.y + r.height, r.x : r.x + r.width] = True
        return pixels
    if spec.polygon is not None:
        from skimage.draw import polygon2mask

        vertices = np.array([(y, x) for x, y in spec.polygon], dtype=np.float64)
        return polygon2mask(shape, vertices)
    image = read_image(str(spec.file), f"ROI {name!r}")
    if image.shape != shape:
        raise PixelFileError(
            f"ROI {name!r}: the file {spec.file!r} has shape {image.shape}, the frames {shape}"
        )
    return image != 0
