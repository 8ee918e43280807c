"""DECTRIS SIMPLON stream version 1: multipart ZeroMQ messages of JSON parts and binary blobs.

Specification: DECTRIS SIMPLON API reference manual, chapter "Stream interface" (the
``legacy`` format of ``stream/api/<version>/config/format``). Messages, one ZeroMQ multipart
message each:

* Series header, sent at arm: ``{"htype": "dheader-1.0", "series": id, "header_detail":
  "all" | "basic" | "none"}``; with ``basic`` and ``all`` followed by the detector
  configuration as one JSON object (the SIMPLON ``detector/api/.../config`` values); with
  ``all`` also by three pairs of a JSON part and a blob: ``{"htype": "dflatfield-1.0",
  "shape": [x, y], "type": "float32"}``, ``{"htype": "dpixelmask-1.0", ..., "type":
  "uint32"}``, ``{"htype": "dcountrate_table-1.0", ...}``. A last part, if any, is the user's
  ``header_appendix``.
* Image: ``{"htype": "dimage-1.0", "series": id, "frame": n, "hash": md5}``, ``{"htype":
  "dimage_d-1.0", "shape": [x, y], "type": "uint16", "encoding": "bs16-lz4<", "size":
  bytes}``, the frame blob, ``{"htype": "dconfig-1.0", "start_time": ns, "stop_time": ns,
  "real_time": ns}``, and the ``image_appendix`` if one is configured.
* Series end: ``{"htype": "dseries_end-1.0", "series": id}``.

``shape`` lists x (width) first; numpy shapes are the reverse, (y, x). ``encoding`` is
``[bs<bits>-][lz4]<`` or ``>`` (byte order): ``<`` raw, ``lz4<`` an LZ4 block,
``bs8-lz4<`` / ``bs16-lz4<`` / ``bs32-lz4<`` bitshuffle + LZ4 with the HDF5-filter framing
(with or without its 12-byte header: :mod:`beampipe.nodes.dectris.codecs`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from beampipe.nodes.dectris.codecs import decode_array
from beampipe.nodes.dectris.messages import (
    CorruptMessage,
    Image,
    SeriesEnd,
    SeriesStart,
    UnsupportedFormat,
    describe_array,
    jsonable,
)

__all__ = ["PIXEL_TYPES", "decode", "parse_encoding"]

Part = bytes | memoryview

PIXEL_TYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")
"""Pixel ``type`` values read."""

_ENCODING = re.compile(r"^(?:(?:bs(?P<bits>8|16|32|64)-)?(?P<lz4>lz4))?(?P<order>[<>])$")

_HEADER_ARRAYS = {
    "dflatfield-1.0": "flatfield",
    "dpixelmask-1.0": "pixel_mask",
    "dcountrate_table-1.0": "countrate_table",
}

_FIELDS = {  # v1 config name -> beampipe's (see dectris_messages.HEADER_FIELDS)
    "count_time": "count_time",
    "frame_time": "frame_time",
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
    "detector_distance": "detector_distance",
    "x_pixel_size": "pixel_size_x",
    "y_pixel_size": "pixel_size_y",
    "wavelength": "wavelength",
    "photon_energy": "incident_energy",
    "x_pixels_in_detector": "image_size_x",
    "y_pixels_in_detector": "image_size_y",
    "threshold_energy": "threshold_energy",
    "description": "detector_description",
    "detector_number": "detector_serial_number",
    "sensor_material": "sensor_material",
    "sensor_thickness": "sensor_thickness",
    "data_collection_date": "start_time",
}

_DROPPED = "the network and the detector's stream status (stream/api/.../status/dropped)"


def _json(part: Part, what: str) -> dict[str, Any]:
    try:
        value = json.loads(bytes(part))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptMessage(f"{what} is not JSON ({exc})", _DROPPED) from None
    if not isinstance(value, dict):
        raise CorruptMessage(f"{what} is not a JSON object", _DROPPED)
    return value


def _int(fields: dict[str, Any], key: str, what: str) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptMessage(f"{what} has no integer {key!r}: {fields}", _DROPPED)
    return value


def _appendix(part: Part) -> Any:
    """A header or image appendix: its JSON value if it is JSON, else its text."""
    text = bytes(part).decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_encoding(encoding: Any, pixel_type: Any) -> tuple[str, np.dtype]:
    """``(compression, dtype)`` of a ``dimage_d-1.0`` part: compression ``"none"``, ``"lz4"``
    or ``"bslz4"``; dtype with the encoding's byte order.

    Raises:
        UnsupportedFormat: an encoding or pixel type not read here, or a bitshuffle element
            size that is not the pixel size.
    """
    if pixel_type not in PIXEL_TYPES:
        raise UnsupportedFormat(
            f"pixel type {pixel_type!r} is not one of {', '.join(PIXEL_TYPES)}",
            "the detector's bit_depth_image",
        )
    m = _ENCODING.match(encoding) if isinstance(encoding, str) else None
    if m is None:
        raise UnsupportedFormat(
            f"encoding {encoding!r} is not one of '<', 'lz4<', 'bs8-lz4<', 'bs16-lz4<', "
            "'bs32-lz4<' (or '>' for big-endian)",
            "the detector's compression setting (detector/api/.../config/compression: "
            "lz4 or bslz4)",
        )
    dtype = np.dtype(pixel_type).newbyteorder(m["order"])
    if m["bits"] is not None and int(m["bits"]) != 8 * dtype.itemsize:
        raise UnsupportedFormat(
            f"encoding {encoding!r} shuffles {m['bits']}-bit elements but the pixel type is "
            f"{pixel_type}",
            "the detector firmware (the encoding must match the pixel type)",
        )
    compression = "bslz4" if m["bits"] else "lz4" if m["lz4"] else "none"
    return compression, dtype


def decode(parts: Sequence[Part]) -> SeriesStart | Image | SeriesEnd:
    """Decode one multipart message of stream v1.

    Returns:
        :class:`SeriesStart` (metadata: see :class:`~beampipe.nodes.dectris.messages.
        SeriesStart`; ``config`` is the configuration part, ``header_detail`` as sent),
        :class:`Image` (one channel, ``image``: ``type`` pixels of shape (y, x); metadata
        ``start_time``, ``stop_time``, ``real_time`` in s, ``user_data`` = the image appendix)
        or :class:`SeriesEnd`.

    Raises:
        CorruptMessage: a part that is not JSON, a missing part or field, a blob whose length
            is not ``size``, or frame data that do not decompress to ``shape`` x ``type``.
        UnsupportedFormat: an unknown ``htype``, encoding or pixel type.
    """
    if not parts:
        raise CorruptMessage("empty message", _DROPPED)
    first = _json(parts[0], "the first part")
    htype = first.get("htype")
    if htype == "dimage-1.0":
        return _image(first, parts)
    if htype == "dheader-1.0":
        return _header(first, parts)
    if htype == "dseries_end-1.0":
        return SeriesEnd(_int(first, "series", "dseries_end-1.0"))
    raise UnsupportedFormat(
        f"unknown message type htype={htype!r} (expected dheader-1.0, dimage-1.0 or "
        "dseries_end-1.0)",
        "that the endpoint is a DECTRIS stream v1 (stream/api/.../config/format: legacy)",
    )


def _image(first: dict[str, Any], parts: Sequence[Part]) -> Image:
    series = _int(first, "series", "dimage-1.0")
    frame = _int(first, "frame", "dimage-1.0")
    try:
        if len(parts) < 4:
            raise CorruptMessage(f"an image message has {len(parts)} parts, not 4 or 5", _DROPPED)
        info = _json(parts[1], "the dimage_d-1.0 part")
        if info.get("htype") != "dimage_d-1.0":
            raise CorruptMessage(f"part 2 is {info.get('htype')!r}, not dimage_d-1.0", _DROPPED)
        compression, dtype = parse_encoding(info.get("encoding"), info.get("type"))
        shape = info.get("shape")
        if not (
            isinstance(shape, list)
            and 2 <= len(shape) <= 3
            and all(isinstance(n, int) and n >= 0 for n in shape)
        ):
            raise CorruptMessage(
                f"dimage_d-1.0 shape {shape!r} is not [x, y] or [x, y, z]", _DROPPED
            )
        blob = parts[2]
        size = info.get("size")
        if size is not None and size != len(blob):
            raise CorruptMessage(
                f"the frame blob has {len(blob)} bytes, dimage_d-1.0 announces {size}", _DROPPED
            )
        array = decode_array(blob, compression, dtype, tuple(reversed(shape)))
        times = _json(parts[3], "the dconfig-1.0 part")
        metadata: dict[str, Any] = {
            key: times[key] / 1e9 if isinstance(times.get(key), int | float) else None
            for key in ("start_time", "stop_time", "real_time")
        }
        if len(parts) > 4:
            metadata["user_data"] = jsonable(_appendix(parts[4]))
    except (CorruptMessage, UnsupportedFormat) as exc:
        raise exc.at(series, frame) from None
    return Image(series, frame, {"image": array}, metadata)


def _header(first: dict[str, Any], parts: Sequence[Part]) -> SeriesStart:
    series = _int(first, "series", "dheader-1.0")
    detail = first.get("header_detail")
    rest = list(parts[1:])
    config: dict[str, Any] = {}
    try:
        if detail in ("basic", "all") and rest:
            config = _json(rest.pop(0), "the dheader-1.0 configuration part")
        arrays = {}
        while len(rest) >= 2 and (kind := _htype(rest[0])) in _HEADER_ARRAYS:
            description, blob = _json(rest.pop(0), kind), rest.pop(0)
            array = _header_array(description, blob)
            if array is not None:
                arrays[_HEADER_ARRAYS[kind]] = array
    except CorruptMessage as exc:
        raise exc.at(series, None) from None
    metadata: dict[str, Any] = {new: jsonable(config.get(old)) for old, new in _FIELDS.items()}
    nimages, ntrigger = config.get("nimages"), config.get("ntrigger")
    metadata["number_of_images"] = (
        nimages * (ntrigger if isinstance(ntrigger, int) else 1)
        if isinstance(nimages, int)
        else None
    )
    metadata.update(
        channels=["image"],
        series_unique_id=None,
        header_detail=detail,
        config=jsonable(config),
        header_arrays={name: describe_array(a) for name, a in arrays.items()},
        user_data=jsonable(_appendix(rest[-1])) if rest else None,
    )
    return SeriesStart(series, metadata, arrays)


def _htype(part: Part) -> str | None:
    """The ``htype`` of a JSON part, or None if the part is not a JSON object."""
    try:
        value = json.loads(bytes(part))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value.get("htype") if isinstance(value, dict) else None


def _header_array(description: dict[str, Any], blob: Part) -> np.ndarray | None:
    """A flatfield, pixel mask or count-rate table, raw in the announced shape and type; None
    if the blob does not fit them (the ``eiger-simulator`` sends placeholder text)."""
    shape, pixel_type = description.get("shape"), description.get("type")
    if pixel_type not in PIXEL_TYPES or not (
        isinstance(shape, list) and shape and all(isinstance(n, int) and n >= 0 for n in shape)
    ):
        return None
    dtype = np.dtype(pixel_type).newbyteorder("<")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != len(blob):
        return None
    return decode_array(blob, "none", dtype, tuple(reversed(shape)))
