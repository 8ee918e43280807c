"""A DECTRIS SIMPLON stream test server: a ZeroMQ PUSH socket sending acquisition series in
stream v1 (multipart JSON + binary) or stream v2 (CBOR), built as the DECTRIS documentation
describes them:

* v1: DECTRIS SIMPLON API reference manual, "Stream interface" (``dheader-1.0``,
  ``dimage-1.0`` + ``dimage_d-1.0`` + blob + ``dconfig-1.0``, ``dseries_end-1.0``).
* v2: https://github.com/dectris/documentation/blob/main/stream_v2/README.md, with RFC 8746
  typed arrays (the tag table of RFC 8746 section 2.1) inside tag-40 multi-dimensional arrays,
  and the DECTRIS compression tag 56500
  (https://github.com/dectris/documentation/blob/main/cbor/dectris-compression-tag.md).

Compressed frames are made by the reference encoders, independently of the decoder under test:
bitshuffle + LZ4 and HDF5-framed LZ4 by the HDF5 filters of ``hdf5plugin`` (the chunk bytes as
the filter wrote them, read back with ``read_direct_chunk``), the plain LZ4 block of v1's
``lz4<`` by ``lz4.block``. The bitshuffle stream without its 12-byte header (what the
``eiger-simulator`` package sends) is the filter's output with the header cut off.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Sequence
from typing import Any

import cbor2
import h5py
import hdf5plugin
import lz4.block
import numpy as np
import zmq

TYPED_ARRAY_TAGS = {
    "|u1": 64,
    ">u2": 65,
    ">u4": 66,
    ">u8": 67,
    "<u2": 69,
    "<u4": 70,
    "<u8": 71,
    "|i1": 72,
    ">i2": 73,
    ">i4": 74,
    ">i8": 75,
    "<i2": 77,
    "<i4": 78,
    "<i8": 79,
    ">f2": 80,
    ">f4": 81,
    ">f8": 82,
    "<f2": 84,
    "<f4": 85,
    "<f8": 86,
}
"""RFC 8746 section 2.1, table 1: typed-array tag of each element type (numpy ``dtype.str``)."""


def hdf5_chunk(array: np.ndarray, compression: Any) -> bytes:
    """The bytes an HDF5 filter writes for ``array`` as one chunk."""
    with h5py.File("frame.h5", "w", driver="core", backing_store=False) as f:
        dset = f.create_dataset("f", data=array, chunks=array.shape, **compression)
        mask, chunk = dset.id.read_direct_chunk((0,) * array.ndim)
        assert mask == 0, "the filter was not applied"
        return bytes(chunk)


def bslz4(array: np.ndarray, header: bool = True) -> bytes:
    """Bitshuffle + LZ4 as the bitshuffle HDF5 filter writes it (default block size); without
    ``header``, the blocks alone."""
    chunk = hdf5_chunk(array, hdf5plugin.Bitshuffle(cname="lz4"))
    return chunk if header else chunk[12:]


def lz4_hdf5(array: np.ndarray, block_bytes: int = 1024) -> bytes:
    """LZ4 as the HDF5 LZ4 filter writes it, in blocks of ``block_bytes``."""
    return hdf5_chunk(array, hdf5plugin.LZ4(nbytes=block_bytes))


def lz4_block(array: np.ndarray) -> bytes:
    """One plain LZ4 block, no size prefix (stream v1 ``lz4<``)."""
    return lz4.block.compress(array.tobytes(), store_size=False)


# -- stream v1 -------------------------------------------------------------------------------


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


V1_CONFIG = {
    "beam_center_x": 1533.8,
    "beam_center_y": 1657.1,
    "count_time": 0.099,
    "frame_time": 0.1,
    "nimages": 3,
    "ntrigger": 2,
    "detector_distance": 0.127,
    "x_pixel_size": 7.5e-05,
    "y_pixel_size": 7.5e-05,
    "wavelength": 0.98,
    "photon_energy": 12650.0,
    "x_pixels_in_detector": 60,
    "y_pixels_in_detector": 40,
    "threshold_energy": 6325.0,
    "description": "Dectris EIGER2 Si 4M",
    "detector_number": "E-08-0123",
    "sensor_material": "Si",
    "sensor_thickness": 0.00045,
    "data_collection_date": "2026-11-21T10:15:02.123",
    "software_version": "1.8.0",
}
"""A detector configuration as the v1 header's config part holds it (SIMPLON config names)."""


def v1_header(
    series: int,
    detail: str = "basic",
    config: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    appendix: str | None = None,
) -> list[bytes]:
    """``dheader-1.0`` [+ config part] [+ flatfield, pixel mask, count-rate table pairs]
    [+ header appendix]. ``arrays`` keys: ``flatfield``, ``pixel_mask``, ``countrate_table``
    (sent raw, little-endian, shape as [x, y])."""
    parts = [_json({"htype": "dheader-1.0", "series": series, "header_detail": detail})]
    if detail in ("basic", "all"):
        parts.append(_json(config if config is not None else V1_CONFIG))
    if detail == "all":
        htypes = {
            "flatfield": "dflatfield-1.0",
            "pixel_mask": "dpixelmask-1.0",
            "countrate_table": "dcountrate_table-1.0",
        }
        for name, htype in htypes.items():
            array = (arrays or {})[name]
            description = {
                "htype": htype,
                "shape": list(reversed(array.shape)),
                "type": array.dtype.name,
            }
            parts += [_json(description), array.astype(array.dtype.newbyteorder("<")).tobytes()]
    if appendix is not None:
        parts.append(appendix.encode())
    return parts


V1_ENCODINGS = ("<", ">", "lz4<", "bs-lz4<", "bs-lz4< bare")
"""Test names of the v1 encodings: raw little/big-endian, LZ4 block, bitshuffle + LZ4 with
and without the 12-byte header (``bs-lz4<`` becomes ``bs8/16/32-lz4<`` by pixel size)."""


def v1_image(
    series: int,
    frame: int,
    array: np.ndarray,
    encoding: str = "bs-lz4<",
    times_ns: tuple[int, int] = (0, 0),
    appendix: str | None = None,
) -> list[bytes]:
    """``dimage-1.0``, ``dimage_d-1.0``, the blob, ``dconfig-1.0`` [+ image appendix]."""
    bits = 8 * array.dtype.itemsize
    if encoding == "<":
        blob, name = array.astype(array.dtype.newbyteorder("<")).tobytes(), "<"
    elif encoding == ">":
        blob, name = array.astype(array.dtype.newbyteorder(">")).tobytes(), ">"
    elif encoding == "lz4<":
        blob, name = lz4_block(array), "lz4<"
    elif encoding in ("bs-lz4<", "bs-lz4< bare"):
        blob, name = bslz4(array, header=encoding == "bs-lz4<"), f"bs{bits}-lz4<"
    else:
        blob, name = array.tobytes(), encoding  # an encoding the receiver should reject
    start, stop = times_ns
    parts = [
        _json({"htype": "dimage-1.0", "series": series, "frame": frame, "hash": ""}),
        _json(
            {
                "htype": "dimage_d-1.0",
                "shape": list(reversed(array.shape)),
                "type": array.dtype.name,
                "encoding": name,
                "size": len(blob),
            }
        ),
        blob,
        _json(
            {
                "htype": "dconfig-1.0",
                "start_time": start,
                "stop_time": stop,
                "real_time": stop - start,
            }
        ),
    ]
    if appendix is not None:
        parts.append(appendix.encode())
    return parts


def v1_end(series: int) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": series})]


def v1_series(
    series: int, frames: Sequence[np.ndarray], encoding: str = "bs-lz4<", detail: str = "basic"
) -> list[list[bytes]]:
    """Header, one image per frame (times 1 ms apart), end."""
    images = [
        v1_image(series, i, frame, encoding, (i * 1_000_000, i * 1_000_000 + 990_000))
        for i, frame in enumerate(frames)
    ]
    return [v1_header(series, detail), *images, v1_end(series)]


# -- stream v2 -------------------------------------------------------------------------------


def _cbor(message: dict[str, Any]) -> bytes:
    """A self-described CBOR message (RFC 8949 tag 55799), ``type`` first."""
    return cbor2.dumps(cbor2.CBORTag(55799, message))


def v2_array(array: np.ndarray, compression: str = "bslz4") -> cbor2.CBORTag:
    """A tag-40 multi-dimensional array of a typed array, the bytes raw (``none``) or in a
    tag-56500 ``bslz4`` / ``lz4`` (HDF5 framing) / ``bslz4 bare`` (no 12-byte header)."""
    tag = TYPED_ARRAY_TAGS[array.dtype.str]
    if compression == "none":
        payload: Any = array.tobytes()
    elif compression == "lz4":
        payload = cbor2.CBORTag(56500, ["lz4", 0, lz4_hdf5(array)])
    elif compression in ("bslz4", "bslz4 bare"):
        payload = cbor2.CBORTag(
            56500, ["bslz4", array.dtype.itemsize, bslz4(array, header=compression == "bslz4")]
        )
    else:
        payload = cbor2.CBORTag(56500, [compression, array.dtype.itemsize, array.tobytes()])
    return cbor2.CBORTag(40, [list(array.shape), cbor2.CBORTag(tag, payload)])


V2_START = {
    "arm_date": datetime.datetime(2026, 11, 21, 10, 15, 2, tzinfo=datetime.timezone.utc),
    "beam_center_x": 1021.5,
    "beam_center_y": 1100.25,
    "count_time": 0.0099,
    "countrate_correction_enabled": True,
    "detector_description": "Dectris EIGER2 CdTe 9M",
    "detector_serial_number": "E-32-0111",
    "detector_translation": [0.0, 0.0, 0.25],
    "flatfield_enabled": True,
    "frame_time": 0.01,
    "goniometer": {"omega": {"increment": 0.1, "start": 0.0}},
    "image_size_x": 60,
    "image_size_y": 40,
    "incident_energy": 20000.0,
    "incident_wavelength": 0.6199,
    "number_of_images": 3,
    "pixel_mask_enabled": True,
    "pixel_size_x": 7.5e-05,
    "pixel_size_y": 7.5e-05,
    "saturation_value": 65534,
    "sensor_material": "CdTe",
    "sensor_thickness": 0.00075,
    "series_unique_id": "01HX-series",
    "virtual_pixel_interpolation_enabled": True,
}
"""Start-message fields (stream v2 names) apart from type, series_id, channels and arrays."""


def v2_start(
    series: int,
    channels: Sequence[str] = ("threshold_1",),
    fields: dict[str, Any] | None = None,
    arrays: dict[str, Any] | None = None,
) -> bytes:
    """A ``start`` message; ``arrays`` may give ``flatfield`` / ``pixel_mask`` ``{channel:
    array}`` and ``countrate_correction_lookup_table`` (1-D)."""
    message: dict[str, Any] = {"type": "start", "series_id": series, "channels": list(channels)}
    message.update(V2_START if fields is None else fields)
    message["threshold_energy"] = {ch: 4000.0 * (i + 1) for i, ch in enumerate(channels)}
    for name in ("flatfield", "pixel_mask"):
        if arrays and name in arrays:
            message[name] = {ch: v2_array(a, "bslz4") for ch, a in arrays[name].items()}
    if arrays and "countrate_correction_lookup_table" in arrays:
        table = arrays["countrate_correction_lookup_table"]
        message["countrate_correction_lookup_table"] = cbor2.CBORTag(
            TYPED_ARRAY_TAGS[table.dtype.str], table.tobytes()
        )
    return _cbor(message)


def v2_image(
    series: int,
    image_id: int,
    channels: dict[str, np.ndarray],
    compression: str = "bslz4",
    user_data: Any = None,
) -> bytes:
    """An ``image`` message; times are rationals with a 100 MHz time base."""
    message: dict[str, Any] = {
        "type": "image",
        "series_id": series,
        "series_unique_id": V2_START["series_unique_id"],
        "image_id": image_id,
        "real_time": [990_000, 100_000_000],
        "series_date": V2_START["arm_date"],
        "start_time": [image_id * 1_000_000, 100_000_000],
        "stop_time": [image_id * 1_000_000 + 990_000, 100_000_000],
        "data": {ch: v2_array(a, compression) for ch, a in channels.items()},
    }
    if user_data is not None:
        message["user_data"] = user_data
    return _cbor(message)


def v2_end(series: int) -> bytes:
    return _cbor(
        {"type": "end", "series_id": series, "series_unique_id": V2_START["series_unique_id"]}
    )


def v2_series(
    series: int, frames: Sequence[np.ndarray], compression: str = "bslz4"
) -> list[list[bytes]]:
    """Start, one image per frame (channel ``threshold_1``), end; each a one-part message."""
    images = [[v2_image(series, i, {"threshold_1": f}, compression)] for i, f in enumerate(frames)]
    return [[v2_start(series)], *images, [v2_end(series)]]


# -- the server ------------------------------------------------------------------------------


class DectrisServer:
    """A PUSH socket bound to a free loopback port that sends ``messages`` (each a list of
    parts) from a background thread, started by ``with``. Sending blocks until a PULL socket
    connects, as a detector's does. Leaving the ``with`` block closes the socket: by then the
    test has received what it needs."""

    def __init__(self, messages: Sequence[Sequence[bytes]]) -> None:
        self.messages = [list(m) for m in messages]
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._exit = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        try:
            for message in self.messages:
                self.socket.send_multipart(message)
            self._exit.wait()
        except zmq.ContextTerminated:  # the test ended before a receiver connected
            pass
        finally:
            self.socket.close(linger=0)

    def __enter__(self) -> DectrisServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.set()
        self.context.term()
        self.thread.join()
