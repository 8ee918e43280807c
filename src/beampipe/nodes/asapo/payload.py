"""beampipe's convention for the data of ASAP::O messages (``asapo_source``, ``asapo_sink``).

ASAP::O moves one binary blob per message (per substream, for a dataset) together with a JSON
``meta`` dict of the producer's choosing; it does not say what the blob holds. beampipe reads
and writes these keys of ``meta``:

* ``dtype`` (a numpy dtype string such as ``"<u2"`` or ``"float32"``) and ``shape`` (a list of
  ints): the blob is the raw array in C order, ``prod(shape) * itemsize`` bytes. It is decoded
  without a copy, ``numpy.frombuffer(blob, dtype).reshape(shape)`` (read-only). Both keys or
  neither.
* ``data_name`` (optional): the array's name in ``Message.data``.
* Without ``dtype``/``shape`` the blob is passed on as ``bytes`` (e.g. a compressed frame, a
  TIFF or CBF file).

This is what ``asapo_sink`` writes for every array it sends, so a pipeline can read its own
output back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["PAYLOAD_KEYS", "PayloadError", "decode", "encode"]

PAYLOAD_KEYS = ("dtype", "shape", "data_name")
"""The ``meta`` keys of the convention."""


class PayloadError(ValueError):
    """A message's data does not fit its ``dtype``/``shape`` meta, or the meta is malformed."""


def decode(blob: Any, meta: dict[str, Any]) -> np.ndarray | bytes:
    """The data of one ASAP::O message: an array if ``meta`` has ``dtype`` and ``shape``
    (shape ``shape``, type ``dtype``, a read-only view of ``blob``), else the bytes of ``blob``.

    ``blob`` is what the client returned (a uint8 numpy array, bytes, or None for no data).

    Raises:
        PayloadError: only one of ``dtype``/``shape``; a dtype numpy does not know, or one of
            Python objects; a shape that is not a list of ints >= 0; a size of ``blob`` other
            than ``prod(shape) * itemsize``.
    """
    blob = b"" if blob is None else blob
    if "dtype" not in meta and "shape" not in meta:
        return bytes(blob)
    if "dtype" not in meta or "shape" not in meta:
        raise PayloadError("meta has only one of 'dtype' and 'shape': give both or neither")
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError as exc:
        raise PayloadError(f"meta 'dtype' {meta['dtype']!r} is not a numpy dtype: {exc}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise PayloadError(f"meta 'dtype' {meta['dtype']!r}: only plain numeric types are read")
    shape = meta["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise PayloadError(f"meta 'shape' {shape!r} is not a list of ints >= 0")
    size = memoryview(blob).nbytes
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise PayloadError(
            f"the data has {size} bytes, but dtype {dtype.str!r} and shape {shape} need {expected}"
        )
    array = np.frombuffer(blob, dtype=dtype).reshape(shape)
    array.flags.writeable = False
    return array


def encode(
    value: np.ndarray | bytes, metadata: dict[str, Any], name: str
) -> tuple[np.ndarray | bytes, dict[str, Any]]:
    """``(data, meta)`` to send for the entry ``name`` of a message with ``metadata``: an
    array in C order with ``dtype``/``shape``/``data_name`` added to (a copy of) the metadata,
    or bytes with ``data_name`` only (stale ``dtype``/``shape`` keys of the metadata are
    dropped).

    Raises:
        TypeError: an array of Python objects, or a structured array.
    """
    meta = {k: v for k, v in metadata.items() if k not in PAYLOAD_KEYS}
    meta["data_name"] = name
    if isinstance(value, bytes):
        return value, meta
    if value.dtype.hasobject or value.dtype.fields is not None:
        raise TypeError(f"data {name!r}: {value.dtype} arrays cannot be sent (plain numeric only)")
    array = value if value.flags.c_contiguous else np.ascontiguousarray(value)
    meta["dtype"] = array.dtype.str
    meta["shape"] = list(array.shape)
    return array, meta
