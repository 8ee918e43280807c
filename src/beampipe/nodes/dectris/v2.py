"""DECTRIS SIMPLON stream version 2: one CBOR message per ZeroMQ message.

Specification: https://github.com/dectris/documentation/blob/main/stream_v2/README.md (the
``cbor`` format of ``stream/api/<version>/config/format``, port 31001). Each message is a
self-described CBOR map (RFC 8949, tag 55799) whose ``type`` is ``start`` (sent at arm, with
the series configuration), ``image`` (one exposure: ``data`` maps each channel, i.e.
threshold, to its image) or ``end``. Arrays are RFC 8746 multi-dimensional arrays (tag 40,
``[[height, width], typed array]``, row-major) of typed arrays (tags 64-87: the tag gives the
element type and byte order, e.g. 69 = uint16 little-endian), whose byte string may be
replaced by the DECTRIS compression tag 56500, ``[algorithm, element size, compressed bytes]``
with algorithm ``bslz4`` or ``lz4`` (HDF5 framing;
https://github.com/dectris/documentation/blob/main/cbor/dectris-compression-tag.md).
Times are rationals ``[numerator, denominator]`` in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from beampipe.nodes.dectris.codecs import decode_array
from beampipe.nodes.dectris.messages import (
    CorruptMessage,
    DectrisStreamError,
    Image,
    SeriesEnd,
    SeriesStart,
    UnsupportedFormat,
    describe_array,
    jsonable,
)

__all__ = ["COMPRESSION_TAG", "MULTI_DIM_TAG", "decode", "typed_array_dtype"]

MULTI_DIM_TAG = 40
"""RFC 8746 multi-dimensional array, row-major order."""
COMPRESSION_TAG = 56500
"""DECTRIS compressed byte string."""

_DROPPED = "the network and the detector's stream status (stream/api/.../status/dropped)"

_FIELDS = {  # v2 start field -> beampipe's (see dectris_messages.HEADER_FIELDS)
    "count_time": "count_time",
    "frame_time": "frame_time",
    "number_of_images": "number_of_images",
    "beam_center_x": "beam_center_x",
    "beam_center_y": "beam_center_y",
    "pixel_size_x": "pixel_size_x",
    "pixel_size_y": "pixel_size_y",
    "incident_wavelength": "wavelength",
    "incident_energy": "incident_energy",
    "image_size_x": "image_size_x",
    "image_size_y": "image_size_y",
    "threshold_energy": "threshold_energy",
    "detector_description": "detector_description",
    "detector_serial_number": "detector_serial_number",
    "sensor_material": "sensor_material",
    "sensor_thickness": "sensor_thickness",
    "arm_date": "start_time",
}

_ARRAY_FIELDS = ("flatfield", "pixel_mask", "countrate_correction_lookup_table")


@dataclass(slots=True)
class _Compressed:
    """Tag 56500: ``[algorithm, element size, bytes]``."""

    value: Any


@dataclass(slots=True)
class _Typed:
    """A typed-array tag (64-87) and its byte string (or :class:`_Compressed`)."""

    tag: int
    value: Any


@dataclass(slots=True)
class _MultiDim:
    """Tag 40: ``[dimensions, array]``."""

    value: Any


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
    if tag.tag == COMPRESSION_TAG:
        return _Compressed(tag.value)
    if 64 <= tag.tag <= 87:
        return _Typed(tag.tag, tag.value)
    if tag.tag == MULTI_DIM_TAG:
        return _MultiDim(tag.value)
    return tag


def typed_array_dtype(tag: int) -> np.dtype:
    """The numpy dtype of an RFC 8746 typed-array tag (section 2.1: tag = 0b010fsell, f float,
    s signed, e little-endian, ll length), e.g. 64 -> uint8, 69 -> <u2, 70 -> <u4, 85 -> <f4.

    Raises:
        UnsupportedFormat: not a typed-array tag, the reserved 76, or 128-bit floats.
    """
    if not 64 <= tag <= 87 or tag == 76:
        raise UnsupportedFormat(
            f"CBOR tag {tag} is not an RFC 8746 typed array", "the detector firmware"
        )
    is_float, signed, little, ll = (tag >> 4) & 1, (tag >> 3) & 1, (tag >> 2) & 1, tag & 3
    order = "<" if little else ">"
    if is_float:
        if ll == 3:
            raise UnsupportedFormat(
                f"typed array tag {tag} (128-bit floats) is not read", "the detector firmware"
            )
        return np.dtype(f"{order}f{2 << ll}")
    return np.dtype(f"{order}{'i' if signed else 'u'}{1 << ll}")


def _array(value: Any, what: str) -> np.ndarray:
    """Decode a tag-40 multi-dimensional array of a typed array, or a bare typed array (1-D)."""
    if isinstance(value, _Typed):
        dims: Any = None
        content: Any = value
    elif isinstance(value, _MultiDim):
        if not (isinstance(value.value, Sequence) and len(value.value) == 2):
            raise CorruptMessage(f"{what}: tag 40 does not hold [dimensions, array]", _DROPPED)
        dims, content = value.value
        if not isinstance(content, _Typed):
            raise UnsupportedFormat(f"{what}: tag 40 holds no typed array", "the detector firmware")
    else:
        raise CorruptMessage(f"{what} is not a multi-dimensional array (tag 40)", _DROPPED)
    dtype = typed_array_dtype(content.tag)
    compression, blob = "none", content.value
    if isinstance(blob, _Compressed):
        compression, blob = _compression(blob, dtype, what)
    if not isinstance(blob, bytes):
        raise CorruptMessage(f"{what}: the typed array holds no byte string", _DROPPED)
    if dims is None:
        if compression != "none":
            raise UnsupportedFormat(f"{what}: a compressed typed array without dimensions", "")
        dims = [len(blob) // dtype.itemsize]
    if not (isinstance(dims, Sequence) and all(isinstance(n, int) and n >= 0 for n in dims)):
        raise CorruptMessage(f"{what}: dimensions {dims!r} are not sizes", _DROPPED)
    try:
        return decode_array(blob, compression, dtype, tuple(dims))
    except CorruptMessage as exc:
        raise exc.within(what) from None


def _compression(payload: _Compressed, dtype: np.dtype, what: str) -> tuple[str, bytes]:
    value = payload.value
    if not (isinstance(value, Sequence) and len(value) == 3 and isinstance(value[0], str)):
        raise CorruptMessage(
            f"{what}: tag 56500 does not hold [algorithm, element size, bytes]", _DROPPED
        )
    algorithm, elem_size, blob = value
    if algorithm not in ("bslz4", "lz4"):
        raise UnsupportedFormat(
            f"{what}: compression {algorithm!r} is not read (only bslz4 and lz4)",
            "the detector's compression setting (detector/api/.../config/compression)",
        )
    if algorithm == "bslz4" and elem_size != dtype.itemsize:
        raise UnsupportedFormat(
            f"{what}: bslz4 element size {elem_size} is not the {dtype.itemsize}-byte size of "
            f"the typed array's elements ({dtype.name})",
            "the detector firmware (the element size must match the typed array)",
        )
    return algorithm, blob


def _seconds(value: Any) -> float | None:
    """A rational ``[numerator, denominator]`` in seconds, or None."""
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and value[1] != 0
    ):
        return value[0] / value[1]
    return None


def _plain(value: Any) -> Any:
    """``value`` with the tag wrappers replaced by a short description (for metadata)."""
    if isinstance(value, _MultiDim | _Typed | _Compressed):
        return {"cbor_tag": type(value).__name__.lstrip("_")}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _series_id(message: Mapping[str, Any], kind: str) -> int:
    value = message.get("series_id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptMessage(f"the {kind} message has no integer series_id", _DROPPED)
    return value


def decode(message: bytes | memoryview) -> SeriesStart | Image | SeriesEnd:
    """Decode one stream v2 message.

    Returns:
        :class:`SeriesStart` (metadata: see :class:`~beampipe.nodes.dectris.messages.
        SeriesStart`; ``channels`` from the message; ``detector_distance`` is the z component
        of ``detector_translation``; ``config`` holds every field as sent but the arrays, which
        are in ``header_arrays``), :class:`Image` (``{channel: array}`` of shape (height, width);
        metadata ``start_time``, ``stop_time`` (s from ``series_date``), ``real_time`` (s),
        ``user_data`` when sent) or :class:`SeriesEnd`.

    Raises:
        CorruptMessage: not CBOR, not a map, a missing field, or an array that does not
            decode to its dimensions.
        UnsupportedFormat: an unknown message type, typed-array tag or compression.
    """
    try:
        obj = cbor2.loads(message, tag_hook=_tag_hook)
    except (cbor2.CBORDecodeError, RecursionError) as exc:
        raise CorruptMessage(f"not a valid CBOR message ({exc})", _DROPPED) from None
    if not isinstance(obj, Mapping):
        raise CorruptMessage("the CBOR message is not a map", _DROPPED)
    kind = obj.get("type")
    if kind == "image":
        return _image(obj)
    if kind == "start":
        return _start(obj)
    if kind == "end":
        return SeriesEnd(_series_id(obj, "end"))
    raise UnsupportedFormat(
        f"unknown message type {kind!r} (expected start, image or end)",
        "that the endpoint is a DECTRIS stream v2 (stream/api/.../config/format: cbor)",
    )


def _image(obj: Mapping[str, Any]) -> Image:
    series = _series_id(obj, "image")
    number = obj.get("image_id")
    if isinstance(number, bool) or not isinstance(number, int):
        raise CorruptMessage("the image message has no integer image_id", _DROPPED, series)
    try:
        channels = obj.get("data")
        if not isinstance(channels, Mapping) or not channels:
            raise CorruptMessage("the image message has no data map", _DROPPED)
        data = {str(ch): _array(value, f"channel {ch!r}") for ch, value in channels.items()}
    except DectrisStreamError as exc:
        raise exc.at(series, number) from None
    metadata: dict[str, Any] = {
        key: _seconds(obj.get(key)) for key in ("start_time", "stop_time", "real_time")
    }
    if "user_data" in obj:
        metadata["user_data"] = jsonable(_plain(obj["user_data"]))
    return Image(series, number, data, metadata)


def _start(obj: Mapping[str, Any]) -> SeriesStart:
    series = _series_id(obj, "start")
    arrays: dict[str, np.ndarray] = {}
    for name in ("flatfield", "pixel_mask"):
        per_channel = obj.get(name)
        if isinstance(per_channel, Mapping):
            for channel, value in per_channel.items():
                _keep(arrays, f"{name}/{channel}", value)
    if (table := obj.get("countrate_correction_lookup_table")) is not None:
        _keep(arrays, "countrate_correction_lookup_table", table)

    metadata: dict[str, Any] = {new: jsonable(obj.get(old)) for old, new in _FIELDS.items()}
    translation = obj.get("detector_translation")
    metadata["detector_distance"] = (
        float(translation[2])
        if isinstance(translation, Sequence)
        and len(translation) == 3
        and isinstance(translation[2], int | float)
        else None
    )
    channels = obj.get("channels")
    config = {k: _plain(v) for k, v in obj.items() if k not in _ARRAY_FIELDS}
    metadata.update(
        channels=[str(c) for c in channels] if isinstance(channels, Sequence) else [],
        series_unique_id=jsonable(obj.get("series_unique_id")),
        config=jsonable(config),
        header_arrays={name: describe_array(a) for name, a in arrays.items()},
        user_data=jsonable(_plain(obj["user_data"])) if "user_data" in obj else None,
    )
    return SeriesStart(series, metadata, arrays)


def _keep(arrays: dict[str, np.ndarray], name: str, value: Any) -> None:
    """Decode a header array into ``arrays[name]``; one that does not decode is left out (the
    images do not depend on it)."""
    try:
        arrays[name] = _array(value, name)
    except DectrisStreamError:
        return
