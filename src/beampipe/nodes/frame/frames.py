"""What the per-frame workers share: finding the frame in a message, the stream's frame shape,
the pixel mask, and the scan axis passed on with the results.

A frame is a 2-D numeric array ``(ny, nx)`` of the detector's dtype, one per message: as
``hdf5_replay`` and ``image_files`` send them (``{"image": frame}``, metadata ``signal``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

import beampipe
from beampipe.nodes.columns import MissingColumn, numeric
from beampipe.nodes.frame.pixels import PixelFileError, read_mask

__all__ = ["FrameParams", "FrameWorker", "ScalarParams"]


class FrameParams(beampipe.Params):
    """``field``: the data name of the frame (null: the name the message's ``signal`` metadata
    gives, else its only 2-D numeric array). ``mask``: a pixel mask file (nonzero = masked;
    ``path::dataset`` for HDF5, see :mod:`~beampipe.nodes.frame.pixels`). ``mask_bits``: only
    pixels with one of these bits set are masked (EIGER/NeXus bit flags)."""

    field: str | None = None
    mask: beampipe.InputPath | None = None
    mask_bits: int | None = Field(None, ge=1)


class ScalarParams(FrameParams):
    """``axis``: a scan axis passed on with the results, the name of a 0-d numeric data item
    or a numeric metadata key of the input (null: none; the results are plotted against the
    message id)."""

    axis: str | None = None


class FrameWorker(beampipe.Worker):
    """Base of the per-frame workers (stateless but for the shape of each stream's frames).

    The pixel mask is read when the node is created. Each stream's frame shape is that of its
    first frame (which must fit the mask); a later frame of another shape is dropped as a dead
    letter naming node, stream, id and both shapes, and the stream goes on.

    Raises:
        PixelFileError: (a ``ValueError``) the mask file cannot be read (at creation), or does
            not fit the first frame of a stream.
        MissingColumn: (a ``KeyError``) ``field`` is not in a message.
        ValueError: no frame can be found in a message, or a stream's first frame is not 2-D.
        TypeError: the frame is bytes or not numeric.
    """

    params: FrameParams

    def __init__(self, params: FrameParams, name: str = "") -> None:
        super().__init__(params, name)
        self.mask = read_mask(params.mask, params.mask_bits) if params.mask else None
        """The pixel mask (bool, ``True`` = masked), or None."""
        self._shapes: dict[str, tuple[int, ...]] = {}

    def on_stream_end(self, stream: str) -> None:
        self._shapes.pop(stream, None)

    def frame(self, msg: beampipe.Message) -> tuple[str, np.ndarray] | None:
        """``(data name, frame)`` of ``msg``, or None when the frame was dropped as a dead
        letter (a shape other than the stream's first frame's)."""
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        name = self._field(msg, where)
        frame = numeric(msg, name, where)
        shape = self._shapes.get(msg.stream)
        if shape is None:
            self._first(frame, name, where)
            self._shapes[msg.stream] = frame.shape
        elif frame.shape != shape:
            self.dead_letter(
                msg,
                f"{where}: frame {name!r} has shape {frame.shape}, the stream's first frame "
                f"{shape}: a corrupt or truncated frame, or frames of two detectors mixed",
            )
            return None
        return name, frame

    def valid(self, frame: np.ndarray) -> np.ndarray | None:
        """The pixels to use (bool, ``True`` = used): not masked and, for float frames, finite
        (NaN marks a pixel masked by ``frame.correct``); None when every pixel is used."""
        valid = None if self.mask is None else ~self.mask
        if frame.dtype.kind == "f":
            finite = np.isfinite(frame)
            if not finite.all():
                valid = finite if valid is None else valid & finite
        return valid

    def axis(self, msg: beampipe.Message) -> dict[str, np.ndarray]:
        """``{axis: value}`` (0-d float64) from the message for ``params.axis``; ``{}`` if
        none is set.

        Raises:
            MissingColumn: the axis is neither a data item nor a numeric metadata key.
        """
        name = getattr(self.params, "axis", None)
        if name is None:
            return {}
        if name in msg.data:
            value = numeric(msg, name, self.name)
        elif _number(msg.metadata.get(name)):
            value = np.asarray(msg.metadata[name])
        else:
            available = [*msg.data, *(k for k, v in msg.metadata.items() if _number(v))]
            raise MissingColumn(name, available, f"{self.name}: stream {msg.stream!r}, id {msg.id}")
        if value.size != 1:
            raise ValueError(
                f"{self.name}: stream {msg.stream!r}, id {msg.id}: axis {name!r} has "
                f"{value.size} values, not one"
            )
        return {name: np.asarray(value, dtype=np.float64).reshape(())}

    def _field(self, msg: beampipe.Message, where: str) -> str:
        if self.params.field is not None:
            return self.params.field
        signal = msg.metadata.get("signal")
        if isinstance(signal, str) and signal in msg.data:
            return signal
        frames = [
            k
            for k, v in msg.data.items()
            if isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype.kind in "biuf"
        ]
        if len(frames) != 1:
            raise ValueError(
                f"{where}: no single 2-D frame in the data ({', '.join(msg.data) or 'none'}) "
                "and no 'signal' metadata naming one: set the node's params.field"
            )
        return frames[0]

    def _first(self, frame: np.ndarray, name: str, where: str) -> None:
        if frame.ndim != 2:
            raise ValueError(f"{where}: {name!r} has shape {frame.shape}, not a 2-D frame (ny, nx)")
        if self.mask is not None and self.mask.shape != frame.shape:
            raise PixelFileError(
                f"{where}: the mask {self.params.mask!r} has shape {self.mask.shape}, the "
                f"frames {frame.shape}: a mask of another detector, or transposed"
            )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
