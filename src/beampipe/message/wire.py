"""Wire encoding of messages and stream markers as a list of ZeroMQ frames.

Layout (protocol version 1)::

    frame 0   msgpack header: {"v": 1, "k": kind, ...}
    frame 1.. one raw buffer per array that is not inlined (C-contiguous bytes, zero-copy)

The header of a :class:`Message` holds ``s`` (stream), ``i`` (id), ``m`` (metadata), ``t``
(timestamps), ``l`` (lineage) and ``a``: one ``[name, dtype, shape, inline]`` entry per data item,
where ``dtype`` is the numpy dtype string (e.g. ``"<f8"``; ``"bytes"`` for raw bytes) and
``inline`` holds the bytes of items smaller than :data:`INLINE_LIMIT` (``None`` when they travel
in their own frame, in order). The header of a :class:`StreamStart` holds ``s`` and ``m``; that
of an :class:`EndOfStream` ``s``, ``i`` (last id), ``n`` (next stream) and, if any, ``w`` (the
warnings noted on the way). Small items ride in the header so that a scan point with 16
scalars is one frame, while detector frames are never copied by the encoder: pyzmq sends them
from the array's memory and the decoder wraps the received buffer with :func:`numpy.frombuffer`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from beampipe.message.model import EndOfStream, Item, Message, StreamStart

PROTOCOL_VERSION = 1
INLINE_LIMIT = 65536
"""Arrays of fewer bytes than this travel inside the header frame. It is pyzmq's
``zmq.COPY_THRESHOLD``: pyzmq copies smaller buffers even when asked not to, so a frame of
their own would save no copy and cost a frame's overhead (measured: 1 KiB messages through
source -> worker -> sink went from about 5,000 to 10,500 msg/s when inlined)."""

_DATA, _START, _END = "d", "s", "e"


class WireError(ValueError):
    """A frame sequence that is not a valid beampipe message (truncated, bad header, wrong size)."""


def encode(item: Item) -> list[Any]:
    """Frames for ``item``: a header ``bytes``, then zero-copy buffers (numpy arrays or bytes).

    Raises:
        TypeError: something in ``item`` cannot be carried (an object array, a data value that
            is not an array or bytes, metadata that is not str, int, float, bool, None, lists
            and dicts with str keys, a stream that is not a str); the text says what and where
            (``metadata['gain']['value'] is a numpy.int64: ...``).
    """
    try:
        if isinstance(item, Message):
            entries: list[list[Any]] = []
            buffers: list[Any] = []
            for name, value in item.data.items():
                if isinstance(value, bytes):
                    if len(value) < INLINE_LIMIT:
                        entries.append([name, "bytes", [len(value)], value])
                    else:
                        entries.append([name, "bytes", [len(value)], None])
                        buffers.append(value)
                    continue
                dtype = value.dtype
                if dtype.hasobject:  # tobytes() would give the pointers
                    raise TypeError(name)
                if not value.flags.c_contiguous:
                    value = np.ascontiguousarray(value)
                if value.nbytes < INLINE_LIMIT:
                    entries.append([name, dtype.str, value.shape, value.tobytes()])
                else:
                    entries.append([name, dtype.str, value.shape, None])
                    buffers.append(value)
            header = {
                "v": PROTOCOL_VERSION,
                "k": _DATA,
                "s": item.stream,
                "i": item.id,
                "m": item.metadata,
                "t": item.timestamps,
                "a": entries,
                "l": item.lineage,
            }
            return [msgpack.packb(header, use_bin_type=True), *buffers]
        if isinstance(item, StreamStart):
            header = {"v": PROTOCOL_VERSION, "k": _START, "s": item.stream, "m": item.metadata}
        elif isinstance(item, EndOfStream):
            header = {
                "v": PROTOCOL_VERSION,
                "k": _END,
                "s": item.stream,
                "i": item.last_id,
                "n": item.next_stream,
            }
            if item.warnings:
                header["w"] = item.warnings
        else:
            raise TypeError(f"cannot encode {type(item).__name__}")
        return [msgpack.packb(header, use_bin_type=True)]
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise TypeError(uncarried(item) or f"{type(exc).__name__}: {exc}") from exc


CARRIED = "str, int, float, bool, None, lists and dicts with str keys"
"""What metadata may hold (msgpack's types, and str keys, which the decoder requires)."""
_NESTING = 511
"""msgpack's default nesting limit (``Packer``)."""


def uncarried(item: Item) -> str | None:
    """What in ``item`` the wire format cannot carry, where and the likely fix (``data 'x':
    object arrays cannot be sent ...``, ``metadata['gain'] is a numpy.int64: ...``); None if
    nothing is found. Only for explaining a failed :func:`encode`: it walks the metadata."""
    if not isinstance(item.stream, str):
        return f"the stream is a {_kind(item.stream)}, not a str"
    fields: tuple[tuple[str, Any], ...]
    if isinstance(item, Message):
        if not isinstance(item.data, dict):
            return f"data is a {_kind(item.data)}: data is a dict {{name: numpy array or bytes}}"
        for name, value in item.data.items():
            if not isinstance(name, str):
                return f"the data name {name!r} is a {_kind(name)}, not a str"
            if isinstance(value, bytes):
                continue
            if not isinstance(value, np.ndarray):
                return f"data {name!r} is a {_kind(value)}: data values are numpy arrays or bytes"
            if value.dtype.hasobject:
                return (
                    f"data {name!r}: object arrays cannot be sent (give it a numeric or string "
                    "dtype, or put the values into metadata)"
                )
        fields = (("id", item.id), ("metadata", item.metadata), ("timestamps", item.timestamps))
    elif isinstance(item, StreamStart):
        fields = (("metadata", item.metadata),)
    elif isinstance(item, EndOfStream):
        fields = (("last_id", item.last_id), ("next_stream", item.next_stream))
    else:
        return f"a {_kind(item)} is not a message or stream marker"
    for path, value in fields:
        found = _unpackable(value, path, 0)
        if found is not None and path == "metadata":
            return f"{found}: metadata holds {CARRIED} (numpy values: .item() or .tolist())"
        if found is not None:
            return found
    return None


def _unpackable(value: Any, path: str, depth: int) -> str | None:
    """Where in ``value`` (found at ``path``) msgpack cannot pack, or the decoder would refuse
    a key; None if nowhere."""
    if value is None or isinstance(value, bool | str | bytes | float):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else f"{path} = {value} does not fit 64 bits"
    if depth >= _NESTING:
        return f"{path} nests more than {_NESTING} levels deep"
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                return f"{path} has the key {key!r}, a {_kind(key)}"
            found = _unpackable(inner, f"{path}[{key!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            found = _unpackable(inner, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    return f"{path} is a {_kind(value)}"


def _kind(value: Any) -> str:
    """The type of ``value`` as a user knows it: ``set``, ``numpy.int64``."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__name__
    return f"{kind.__module__}.{kind.__qualname__}"


def decode(frames: Sequence[Any]) -> Item:
    """Inverse of :func:`encode`. Frames may be ``bytes`` or ``zmq.Frame`` (zero-copy).

    Raises:
        WireError: unknown protocol version or kind, malformed header, or an array frame whose
            size does not match its dtype and shape; the message names stream and id if known.
    """
    if not frames:
        raise WireError("empty frame sequence")
    try:
        header = _unpackb(frames[0])
        version, kind = header["v"], header["k"]
    except Exception as exc:
        raise WireError(f"unreadable header frame: {exc}") from exc
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version!r}, expected {PROTOCOL_VERSION}")
    try:
        if kind == _DATA:
            return _decode_message(header, frames[1:])
        if kind == _START:
            return StreamStart(header["s"], header["m"])
        if kind == _END:
            return EndOfStream(header["s"], header["i"], header["n"], header.get("w", []))
        raise WireError(f"unknown message kind {kind!r}")
    except WireError:
        raise
    except Exception as exc:
        where = f" (stream {header.get('s')!r}, id {header.get('i')!r})"
        raise WireError(f"malformed {kind!r} header{where}: {exc!r}") from exc


_DTYPES: dict[str, np.dtype] = {}
"""Checked dtypes by their string: creating a numpy dtype costs more than the rest of decoding a
small message."""


def _dtype(text: str) -> np.dtype:
    dt = _DTYPES.get(text)
    if dt is None:
        dt = np.dtype(text)
        if dt.hasobject:
            raise WireError(f"object dtype {text!r}")
        if len(_DTYPES) < 256:
            _DTYPES[text] = dt
    return dt


def _decode_message(header: dict[str, Any], buffers: Sequence[Any]) -> Message:
    data: dict[str, np.ndarray | bytes] = {}
    next_buffer = 0
    dtypes = _DTYPES
    for name, dtype, shape, inline in header["a"]:
        if inline is None:
            if next_buffer >= len(buffers):
                raise WireError(f"{_where(header)}: missing frame for array {name!r}")
            raw = _buffer(buffers[next_buffer])
            next_buffer += 1
        else:
            raw = inline
        if dtype == "bytes":
            data[name] = bytes(raw)
            continue
        dt = dtypes.get(dtype)
        if dt is None:
            try:
                dt = _dtype(dtype)
            except WireError:
                raise WireError(f"{_where(header)}: array {name!r} has object dtype") from None
        expected = dt.itemsize * math.prod(shape)
        if len(raw) != expected:
            raise WireError(
                f"{_where(header)}: array {name!r} ({dtype}, shape {tuple(shape)}) needs "
                f"{expected} bytes, frame has {len(raw)}"
            )
        array = np.ndarray(shape, dt, raw)
        if inline is None:  # a view of the network buffer (and, inproc, of the sender's array)
            array.flags.writeable = False
        data[name] = array
    if next_buffer != len(buffers):
        raise WireError(f"{_where(header)}: {len(buffers) - next_buffer} unexpected extra frames")
    # Message.__init__ would check that every value is an array or bytes: these are
    msg = _new_message(Message)
    msg.data = data
    msg.metadata = header["m"]
    msg.stream = header["s"]
    msg.id = header["i"]
    msg.timestamps = header["t"]
    msg.port = ""
    msg.lineage = header.get("l", 0)
    return msg


_new_message = object.__new__
if [f.name for f in dataclasses.fields(Message)] != [
    "data",
    "metadata",
    "stream",
    "id",
    "timestamps",
    "port",
    "lineage",
]:  # pragma: no cover - caught by every test that decodes a message
    raise ImportError("beampipe.message.wire: _decode_message does not set every Message field")


def _where(header: dict[str, Any]) -> str:
    return f"stream {header['s']!r}, id {header['i']}"


def _unpackb(frame: Any) -> Any:
    """Unpack a msgpack frame (``bytes`` or ``zmq.Frame``)."""
    return msgpack.unpackb(frame if isinstance(frame, bytes) else frame.bytes)


def _buffer(frame: Any) -> memoryview:
    """A flat byte view of a ``zmq.Frame``, ``bytes`` or array, without copying."""
    return memoryview(frame).cast("B")
