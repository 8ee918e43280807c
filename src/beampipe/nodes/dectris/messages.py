"""What the DECTRIS SIMPLON stream decoders return, and the errors they raise.

Both stream versions (:mod:`beampipe.nodes.dectris.v1`, JSON + binary multipart messages;
:mod:`beampipe.nodes.dectris.v2`, CBOR messages) are decoded into the same three items:
:class:`SeriesStart` (the header sent when the detector is armed), :class:`Image` (one
exposure) and :class:`SeriesEnd` (sent when the series is over or the detector is disarmed).
The header fields are also mapped onto one set of names, :data:`HEADER_FIELDS`, so a pipeline
reads the beam centre or the wavelength the same way from either version.

Specifications: stream v1, DECTRIS SIMPLON API reference manual (chapter "Stream interface");
stream v2, https://github.com/dectris/documentation/blob/main/stream_v2/README.md.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "HEADER_FIELDS",
    "CorruptMessage",
    "DectrisStreamError",
    "Image",
    "SeriesEnd",
    "SeriesStart",
    "UnsupportedFormat",
    "describe_array",
    "jsonable",
]

HEADER_FIELDS: dict[str, str] = {
    "count_time": "exposure time per image, s",
    "frame_time": "time between the starts of two images, s",
    "number_of_images": "images in the series (v1: nimages x ntrigger)",
    "beam_center_x": "x position of the direct beam on the detector, pixels",
    "beam_center_y": "y position of the direct beam on the detector, pixels",
    "detector_distance": "sample-detector distance, m (v2: z of detector_translation)",
    "pixel_size_x": "pixel width, m (v1: x_pixel_size)",
    "pixel_size_y": "pixel height, m (v1: y_pixel_size)",
    "wavelength": "X-ray wavelength, angstrom (v2: incident_wavelength)",
    "incident_energy": "X-ray energy, eV (v1: photon_energy)",
    "image_size_x": "image width, pixels (v1: x_pixels_in_detector)",
    "image_size_y": "image height, pixels (v1: y_pixels_in_detector)",
    "threshold_energy": "counting threshold, eV (v2: {channel: eV})",
    "detector_description": "detector model (v1: description)",
    "detector_serial_number": "serial number (v1: detector_number)",
    "sensor_material": "sensor material",
    "sensor_thickness": "sensor thickness, m",
    "start_time": "date and time the detector was armed, ISO 8601 (v1: data_collection_date, "
    "v2: arm_date)",
}
"""The header fields every :class:`SeriesStart` carries in its metadata, with their meaning and
units; a field the detector did not send is None."""


class DectrisStreamError(ValueError):
    """A problem with a DECTRIS stream message.

    Attributes:
        problem: what is wrong.
        hint: what to check.
        series_id: the series of the message, if known.
        image_number: the image number as sent by the detector (0-based), if known.
        source: who received the message (set by :meth:`at`), or "".
    """

    def __init__(
        self,
        problem: str,
        hint: str = "",
        series_id: int | None = None,
        image_number: int | None = None,
    ) -> None:
        self.problem = problem
        self.hint = hint
        self.series_id = series_id
        self.image_number = image_number
        self.source = ""
        super().__init__(self.describe())

    def describe(self) -> str:
        """``source: series 42, image 7: problem; check hint`` (the known parts)."""
        where = []
        if self.series_id is not None:
            where.append(f"series {self.series_id}")
        if self.image_number is not None:
            where.append(f"image {self.image_number}")
        head = ": ".join(p for p in (self.source, ", ".join(where)) if p)
        text = f"{head}: {self.problem}" if head else self.problem
        return f"{text}; check {self.hint}" if self.hint else text

    def within(self, what: str) -> DectrisStreamError:
        """This error with ``what`` (e.g. ``channel 'threshold_1'``) put before the problem."""
        self.problem = f"{what}: {self.problem}"
        self.args = (self.describe(),)
        return self

    def at(
        self, series_id: int | None, image_number: int | None, source: str | None = None
    ) -> DectrisStreamError:
        """This error with the series and image filled in where they were unknown, and the
        source (e.g. ``dectris_stream tcp://eiger:9999``) that received the message."""
        if self.series_id is None:
            self.series_id = series_id
        if self.image_number is None:
            self.image_number = image_number
        if source is not None:
            self.source = source
        self.args = (self.describe(),)
        return self


class CorruptMessage(DectrisStreamError):
    """A message or frame that cannot be decoded although its format is known: not valid
    JSON or CBOR, parts missing, a blob shorter than announced, compressed data that does not
    decompress to the announced size. Usually one damaged message; the next may be fine."""


class UnsupportedFormat(DectrisStreamError):
    """A message in a format this connector does not read: an unknown encoding, pixel type,
    compression algorithm, typed-array tag, message type or stream version. Every message of
    the series will be the same, so this is a configuration problem, not damage."""


@dataclass(slots=True)
class SeriesStart:
    """The header of an acquisition series (v1 ``dheader-1.0``, v2 ``start``).

    Attributes:
        series_id: the series number the detector gave the series at arm.
        metadata: JSON-able: :data:`HEADER_FIELDS` (None where not sent), ``channels`` (data
            names of the images: ``["image"]`` for v1, the channel names for v2),
            ``series_unique_id`` (v2, else None), ``config`` (every header field as sent
            but the arrays: v1's configuration part, v2's start message), ``header_arrays``
            (``{name: {"shape", "dtype"}}`` of :attr:`arrays`), ``user_data`` (v1 header
            appendix, v2 ``user_data``; None if not sent) and, for v1, ``header_detail``.
        arrays: the header arrays that decoded: v1 ``flatfield``, ``pixel_mask``,
            ``countrate_table``; v2 ``flatfield/<channel>``, ``pixel_mask/<channel>``,
            ``countrate_correction_lookup_table``. Empty unless ``header_detail`` is ``all``;
            an array whose bytes do not fit its shape and type is left out.
    """

    series_id: int
    metadata: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class Image:
    """One exposure (v1 ``dimage-1.0`` ... ``dconfig-1.0``, v2 ``image``).

    Attributes:
        series_id: the series it belongs to.
        image_number: as sent: v1 ``frame``, v2 ``image_id`` (0-based).
        data: ``{channel: 2-D array}`` of shape (height, width) = (y, x) and the pixel type
            the detector sent (uint8/16/32 counts, native byte order, read-only). v1 has one
            channel, ``image``.
        metadata: JSON-able: ``start_time``, ``stop_time``, ``real_time`` (s; v1 sends ns,
            v2 a rational), plus ``user_data`` (v1 image appendix, v2 ``user_data``) when sent.
    """

    series_id: int
    image_number: int
    data: dict[str, np.ndarray]
    metadata: dict[str, Any]


@dataclass(slots=True)
class SeriesEnd:
    """The end of a series (v1 ``dseries_end-1.0``, v2 ``end``)."""

    series_id: int


def describe_array(array: np.ndarray) -> dict[str, Any]:
    """``{"shape": [...], "dtype": "uint32"}``: what the metadata says about an array."""
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def jsonable(value: Any) -> Any:
    """``value`` as JSON-able data: mappings -> dicts with str keys, sequences -> lists,
    datetimes -> ISO 8601 strings, numpy arrays -> :func:`describe_array`, bytes -> ``{"bytes":
    n}``, non-finite floats -> None, numpy scalars -> Python numbers, anything else -> str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return describe_array(value)
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": len(value)}
    return str(value)
