"""Decompression of DECTRIS detector frames: bitshuffle + LZ4 and LZ4.

The HDF5-framed formats (the ``bslz4`` and ``lz4`` of stream v2, the ``bs<N>-lz4<`` of stream
v1) are decoded by DECTRIS' own library, ``dectris-compression``
(https://github.com/dectris/compression); the plain LZ4 block of stream v1's ``lz4<`` by
``lz4.block`` (https://python-lz4.readthedocs.io).

HDF5 framing, as written by the bitshuffle HDF5 filter
(https://github.com/kiyo-masui/bitshuffle/blob/master/src/bshuf_h5filter.c) and the HDF5 LZ4
filter (https://github.com/HDFGroup/hdf5_plugins/blob/master/LZ4/LZ4_HDF5_format.md): a 12-byte
header, the uncompressed size in bytes (8 bytes, big-endian) and the block size in bytes (4
bytes, big-endian), then the blocks, each a 4-byte big-endian compressed size and the block.
Detectors send that header; some software omits it (the ``eiger-simulator`` package sends the
bare bitshuffle blocks of ``bitshuffle.compress_lz4``). A blob is taken to have the header when
its first 8 bytes are the expected uncompressed size: without the header they are the first
block's compressed size (non-zero) in the upper 4 bytes, so the two cannot be confused for a
frame under 4 GiB. Bare blocks are decoded with bitshuffle's default block size, 8192 bytes
(``bshuf_default_block_size``, which bitshuffle keeps fixed so that old data stays readable).
"""

from __future__ import annotations

import struct

import lz4.block
import numpy as np
from dectris.compression import decompress

from beampipe.nodes.dectris.messages import CorruptMessage

__all__ = ["BITSHUFFLE_BLOCK_BYTES", "decode_array", "has_hdf5_header"]

BITSHUFFLE_BLOCK_BYTES = 8192
"""Block size in bytes that bitshuffle uses when none is given (8192 / itemsize elements)."""

_HEADER = struct.Struct(">QI")


def has_hdf5_header(blob: bytes | memoryview, nbytes: int) -> bool:
    """Whether ``blob`` starts with the 12-byte HDF5-filter header for ``nbytes`` bytes of
    uncompressed data (see the module docstring)."""
    if len(blob) < _HEADER.size:
        return False
    size, block = _HEADER.unpack_from(blob)
    return size == nbytes and block > 0


def decode_array(
    blob: bytes | memoryview,
    compression: str,
    dtype: np.dtype,
    shape: tuple[int, ...],
) -> np.ndarray:
    """Decompress ``blob`` into a read-only array of ``shape`` and ``dtype``.

    Args:
        blob: the compressed (or raw) bytes.
        compression: ``"none"`` (raw bytes), ``"lz4"`` (an LZ4 block, or HDF5-framed LZ4
            blocks), or ``"bslz4"`` (bitshuffle + LZ4, HDF5-framed or bare blocks).
        dtype: pixel type, in the byte order of the data.
        shape: numpy shape (rows, columns) of the result.

    Returns:
        The array, in native byte order (a view of the decompressed bytes when the data are
        already native, else a converted copy), not writeable.

    Raises:
        CorruptMessage: the data do not decompress, or not to ``prod(shape) * itemsize`` bytes.
        ValueError: an unknown ``compression`` (callers check it first).
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        if compression == "none":
            raw: bytes | memoryview = blob
        elif compression == "lz4":
            if has_hdf5_header(blob, nbytes):
                raw = decompress(blob, "lz4")
            else:
                raw = lz4.block.decompress(blob, uncompressed_size=nbytes)
        elif compression == "bslz4":
            if not has_hdf5_header(blob, nbytes):
                blob = _HEADER.pack(nbytes, BITSHUFFLE_BLOCK_BYTES) + bytes(blob)
            raw = decompress(blob, "bslz4", elem_size=dtype.itemsize)
        else:
            raise ValueError(f"unknown compression {compression!r}")
    except (RuntimeError, lz4.block.LZ4BlockError) as exc:
        raise CorruptMessage(
            f"{compression} data of {len(blob)} bytes do not decompress to {nbytes} bytes ({exc})",
            "the network and the detector's stream status (stream/api/.../status/dropped)",
        ) from None
    if len(raw) != nbytes:
        raise CorruptMessage(
            f"{compression} data hold {len(raw)} bytes, but {list(shape)} pixels of {dtype.name} "
            f"need {nbytes}",
            "the detector's stream status (stream/api/.../status/dropped)",
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    array.flags.writeable = False
    return array
