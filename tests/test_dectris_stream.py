"""The DECTRIS SIMPLON stream source: decompression, the v1 and v2 decoders, the source against
the test server of ``dectris_server.py`` (both stream versions, every encoding), a pipeline
run into ``nexus_writer``, and the independent ``eiger-simulator`` as a real peer."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cbor2
import h5py
import numpy as np
import pytest
import zmq
from conftest import run_pipeline
from dectris_server import (
    V1_CONFIG,
    V1_ENCODINGS,
    DectrisServer,
    bslz4,
    lz4_block,
    lz4_hdf5,
    v1_end,
    v1_header,
    v1_image,
    v1_series,
    v2_end,
    v2_image,
    v2_series,
    v2_start,
)
from pydantic import ValidationError
from zmq.utils.monitor import recv_monitor_message

import beampipe
from beampipe.nodes.dectris import v1 as dectris_v1
from beampipe.nodes.dectris import v2 as dectris_v2
from beampipe.nodes.dectris.codecs import decode_array, has_hdf5_header
from beampipe.nodes.dectris.messages import (
    HEADER_FIELDS,
    CorruptMessage,
    SeriesEnd,
    UnsupportedFormat,
)
from beampipe.nodes.dectris.stream import DectrisStream, NoMessage
from beampipe.worker.registry import resolve

DTYPES = ("uint8", "uint16", "uint32")


def frames(n: int, shape: tuple[int, int] = (40, 60), dtype: str = "uint16", seed: int = 0):
    """``n`` frames of Poisson counts (mean 20) with a few saturated pixels (all bits set)."""
    rng = np.random.default_rng(seed)
    stack = rng.poisson(20, size=(n, *shape)).astype(dtype)
    stack[:, 0, :7] = np.iinfo(dtype).max
    return list(stack)


# -- decompression ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37, 53), (256, 300)])  # a bitshuffle remainder; many blocks
def test_bslz4_with_and_without_its_header_decodes_exactly(dtype, shape):
    (array,) = frames(1, shape, dtype)
    framed = bslz4(array)
    assert has_hdf5_header(framed, array.nbytes)
    assert not has_hdf5_header(framed[12:], array.nbytes)
    for blob in (framed, framed[12:]):
        got = decode_array(blob, "bslz4", array.dtype, shape)
        assert got.dtype == array.dtype and np.array_equal(got, array)
        assert not got.flags.writeable


@pytest.mark.parametrize("dtype", DTYPES)
def test_lz4_block_and_hdf5_framed_lz4_decode_exactly(dtype):
    (array,) = frames(1, (100, 70), dtype)
    framed = lz4_hdf5(array, block_bytes=1024)  # several blocks and a short last one
    assert has_hdf5_header(framed, array.nbytes)
    for blob in (lz4_block(array), framed):
        assert np.array_equal(decode_array(blob, "lz4", array.dtype, array.shape), array)


def test_big_endian_raw_data_come_out_native():
    (array,) = frames(1, (5, 7), "uint32")
    got = decode_array(array.astype(">u4").tobytes(), "none", np.dtype(">u4"), (5, 7))
    assert got.dtype == np.dtype("uint32") and np.array_equal(got, array)


@pytest.mark.parametrize("compression", ["lz4", "bslz4"])
def test_damaged_data_raise_corrupt_message(compression):
    (array,) = frames(1, (64, 64), "uint16")
    blob = lz4_hdf5(array) if compression == "lz4" else bslz4(array)
    with pytest.raises(CorruptMessage, match="do not decompress to 8192 bytes"):
        decode_array(blob[:-9], compression, array.dtype, array.shape)
    with pytest.raises(CorruptMessage, match="do not decompress"):
        decode_array(blob, compression, array.dtype, (64, 65))
    with pytest.raises(CorruptMessage, match="hold 8190 bytes"):
        decode_array(array.tobytes()[:-2], "none", array.dtype, array.shape)


# -- stream v1 -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("encoding", V1_ENCODINGS)
def test_v1_images_decode_to_the_original_arrays(dtype, encoding):
    (array,) = frames(1, (37, 53), dtype)
    image = dectris_v1.decode(v1_image(12, 4, array, encoding, (5_000_000, 5_990_000), "7"))
    assert (image.series_id, image.image_number) == (12, 4)
    got = image.data["image"]
    assert list(image.data) == ["image"]
    assert got.shape == (37, 53) and got.dtype == np.dtype(dtype) and np.array_equal(got, array)
    assert image.metadata == pytest.approx(
        {"start_time": 0.005, "stop_time": 0.00599, "real_time": 0.00099, "user_data": 7}
    )


def test_v1_encodings_and_pixel_types():
    assert dectris_v1.parse_encoding("bs32-lz4<", "uint32") == ("bslz4", np.dtype("<u4"))
    assert dectris_v1.parse_encoding("bs8-lz4<", "uint8") == ("bslz4", np.dtype("u1"))
    assert dectris_v1.parse_encoding("lz4<", "uint16") == ("lz4", np.dtype("<u2"))
    assert dectris_v1.parse_encoding(">", "uint16") == ("none", np.dtype(">u2"))
    for encoding, pixel_type, problem in [
        ("bs16-zstd<", "uint16", "encoding 'bs16-zstd<' is not one of"),
        ("lz4", "uint16", "encoding 'lz4' is not one of"),
        ("bs32-lz4<", "uint16", "shuffles 32-bit elements but the pixel type is uint16"),
        ("<", "uint12", "pixel type 'uint12'"),
    ]:
        with pytest.raises(UnsupportedFormat, match=problem):
            dectris_v1.parse_encoding(encoding, pixel_type)


@pytest.mark.parametrize("detail", ["none", "basic", "all"])
def test_v1_header_fields_and_arrays(detail):
    rng = np.random.default_rng(3)
    arrays = {
        "flatfield": rng.random((40, 60), dtype=np.float32),
        "pixel_mask": rng.integers(0, 2, (40, 60)).astype(np.uint32),
        "countrate_table": rng.random((2, 1000), dtype=np.float32),
    }
    start = dectris_v1.decode(v1_header(42, detail, arrays=arrays, appendix='{"user": "ab"}'))
    meta = start.metadata
    assert start.series_id == 42 and meta["header_detail"] == detail
    assert meta["channels"] == ["image"] and meta["user_data"] == {"user": "ab"}
    assert set(HEADER_FIELDS) <= set(meta)
    json.dumps(meta)
    if detail == "none":
        assert all(meta[key] is None for key in HEADER_FIELDS)
        assert meta["config"] == {} and not start.arrays
        return
    assert meta["config"] == V1_CONFIG
    assert {key: meta[key] for key in HEADER_FIELDS} == {
        "count_time": 0.099,
        "frame_time": 0.1,
        "number_of_images": 6,  # nimages 3 x ntrigger 2
        "beam_center_x": 1533.8,
        "beam_center_y": 1657.1,
        "detector_distance": 0.127,
        "pixel_size_x": 7.5e-05,
        "pixel_size_y": 7.5e-05,
        "wavelength": 0.98,
        "incident_energy": 12650.0,
        "image_size_x": 60,
        "image_size_y": 40,
        "threshold_energy": 6325.0,
        "detector_description": "Dectris EIGER2 Si 4M",
        "detector_serial_number": "E-08-0123",
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "start_time": "2026-11-21T10:15:02.123",
    }
    if detail == "all":
        assert set(start.arrays) == set(arrays)
        for name, array in arrays.items():
            assert np.array_equal(start.arrays[name], array)
            assert meta["header_arrays"][name] == {
                "shape": list(array.shape),
                "dtype": str(array.dtype),
            }
    else:
        assert not start.arrays and meta["header_arrays"] == {}


def test_v1_header_arrays_that_do_not_fit_are_left_out():
    parts = v1_header(
        1,
        "all",
        arrays={
            "flatfield": np.ones((4, 4), np.float32),
            "pixel_mask": np.ones((4, 4), np.uint32),
            "countrate_table": np.ones((2, 3), np.float32),
        },
    )
    parts[3] = b"flatfield-data-blob-here"  # what eiger-simulator sends
    start = dectris_v1.decode(parts)
    assert set(start.arrays) == {"pixel_mask", "countrate_table"}


def test_v1_end_and_bad_messages():
    assert dectris_v1.decode(v1_end(9)) == SeriesEnd(9)
    good = v1_image(3, 1, frames(1)[0], "<")
    cases = [
        ([b"{not json"], CorruptMessage, "the first part is not JSON"),
        ([b'{"htype": "dfoo-1.0"}'], UnsupportedFormat, "unknown message type htype='dfoo-1.0'"),
        (good[:3], CorruptMessage, "series 3, image 1: an image message has 3 parts"),
        ([good[0], good[1], good[2][:-1], good[3]], CorruptMessage, "announces 4800"),
        ([b'{"htype": "dimage-1.0", "series": 3}'], CorruptMessage, "no integer 'frame'"),
    ]
    for parts, error, problem in cases:
        with pytest.raises(error, match=problem):
            dectris_v1.decode(parts)


# -- stream v2 -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [*DTYPES, ">u2", "<f4", ">f4"])
@pytest.mark.parametrize("compression", ["none", "lz4", "bslz4", "bslz4 bare"])
def test_v2_images_decode_to_the_original_arrays(dtype, compression):
    a, b = frames(2, (37, 53), "uint32", seed=4)
    a, b = a.astype(dtype), (b // 2).astype(dtype)
    message = v2_image(8, 0, {"threshold_1": a, "threshold_2": b}, compression, {"pos": [1, 2]})
    image = dectris_v2.decode(message)
    assert (image.series_id, image.image_number) == (8, 0)
    assert list(image.data) == ["threshold_1", "threshold_2"]
    for got, want in zip(image.data.values(), (a, b), strict=True):
        assert got.shape == (37, 53) and got.dtype == want.dtype.newbyteorder("=")
        assert np.array_equal(got, want) and got.dtype.isnative
    assert image.metadata.pop("user_data") == {"pos": [1, 2]}
    assert image.metadata == {"start_time": 0.0, "stop_time": 0.0099, "real_time": 0.0099}


def test_v2_typed_array_tags_follow_rfc_8746():
    from dectris_server import TYPED_ARRAY_TAGS

    for code, tag in TYPED_ARRAY_TAGS.items():
        assert dectris_v2.typed_array_dtype(tag) == np.dtype(code)
    for tag in (63, 76, 83, 87, 88):
        with pytest.raises(UnsupportedFormat):
            dectris_v2.typed_array_dtype(tag)


def test_v2_start_fields_and_arrays():
    rng = np.random.default_rng(5)
    flat = {ch: rng.random((40, 60), dtype=np.float32) for ch in ("threshold_1", "threshold_2")}
    mask = {"threshold_1": rng.integers(0, 9, (40, 60)).astype(np.uint32)}
    table = np.arange(4096, dtype="<u4")
    message = v2_start(
        7,
        ["threshold_1", "threshold_2"],
        arrays={"flatfield": flat, "pixel_mask": mask, "countrate_correction_lookup_table": table},
    )
    start = dectris_v2.decode(message)
    meta = start.metadata
    json.dumps(meta)
    assert start.series_id == 7
    assert meta["channels"] == ["threshold_1", "threshold_2"]
    assert {key: meta[key] for key in HEADER_FIELDS} == {
        "count_time": 0.0099,
        "frame_time": 0.01,
        "number_of_images": 3,
        "beam_center_x": 1021.5,
        "beam_center_y": 1100.25,
        "detector_distance": 0.25,
        "pixel_size_x": 7.5e-05,
        "pixel_size_y": 7.5e-05,
        "wavelength": 0.6199,
        "incident_energy": 20000.0,
        "image_size_x": 60,
        "image_size_y": 40,
        "threshold_energy": {"threshold_1": 4000.0, "threshold_2": 8000.0},
        "detector_description": "Dectris EIGER2 CdTe 9M",
        "detector_serial_number": "E-32-0111",
        "sensor_material": "CdTe",
        "sensor_thickness": 0.00075,
        "start_time": "2026-11-21T10:15:02+00:00",
    }
    assert meta["series_unique_id"] == "01HX-series"
    assert meta["config"]["goniometer"] == {"omega": {"increment": 0.1, "start": 0.0}}
    assert "flatfield" not in meta["config"]
    assert set(start.arrays) == {
        "flatfield/threshold_1",
        "flatfield/threshold_2",
        "pixel_mask/threshold_1",
        "countrate_correction_lookup_table",
    }
    for channel, array in flat.items():
        assert np.array_equal(start.arrays[f"flatfield/{channel}"], array)
    assert np.array_equal(start.arrays["pixel_mask/threshold_1"], mask["threshold_1"])
    assert np.array_equal(start.arrays["countrate_correction_lookup_table"], table)
    assert meta["header_arrays"]["pixel_mask/threshold_1"] == {"shape": [40, 60], "dtype": "uint32"}


def test_v2_end_and_bad_messages():
    assert dectris_v2.decode(v2_end(4)) == SeriesEnd(4)
    (array,) = frames(1)
    good = v2_image(4, 2, {"threshold_1": array})
    cases = [
        (good[:-40], CorruptMessage, "not a valid CBOR message"),
        (b"\xd9\xd9\xf7\x83\x01\x02\x03", CorruptMessage, "not a map"),
        (v2_image(4, 2, {"t": array}, "zstd"), UnsupportedFormat, "compression 'zstd'"),
        (v2_start(4, fields={}).replace(b"start", b"stort"), UnsupportedFormat, "'stort'"),
    ]
    for message, error, problem in cases:
        with pytest.raises(error, match=problem):
            dectris_v2.decode(message)
    truncated = cbor2.CBORTag(56500, ["bslz4", 2, bslz4(array)[:-30]])
    frame = cbor2.CBORTag(40, [[40, 60], cbor2.CBORTag(69, truncated)])
    message = {"type": "image", "series_id": 4, "image_id": 2, "data": {"threshold_1": frame}}
    with pytest.raises(CorruptMessage, match="series 4, image 2: channel 'threshold_1': bslz4"):
        dectris_v2.decode(cbor2.dumps(cbor2.CBORTag(55799, message)))


# -- the source against the test server ------------------------------------------------------


def make_source(endpoint: str, tmp_path: Path, **params) -> DectrisStream:
    params.setdefault("timeout", 10)  # a test that goes wrong fails instead of hanging
    p = DectrisStream.Params(endpoint=endpoint, **params)
    return DectrisStream(p, name="cam")


def dropped(source: DectrisStream) -> list[tuple[str, int, str]]:
    """``(stream, id, error)`` of what the source gave :meth:`beampipe.Worker.dead_letter`
    (kept by the worker itself outside a pipeline)."""
    return [(m.stream, m.id, f"{type(e).__name__}: {e}") for m, e in source.dead_letters]


def receive(messages, tmp_path: Path, **params) -> tuple[list, DectrisStream]:
    """Every item the source generates from ``messages`` sent by a test server."""
    with DectrisServer(messages) as server:
        source = make_source(server.endpoint, tmp_path, **params)
        try:
            return list(source.generate()), source
        finally:
            source.close()


def split(items: list) -> dict[str, tuple[beampipe.StreamStart, list, beampipe.EndOfStream]]:
    """``{stream: (start, messages, end)}``, checking that streams do not interleave."""
    out = {}
    while items:
        start, *rest = items
        assert isinstance(start, beampipe.StreamStart)
        k = next(i for i, item in enumerate(rest) if isinstance(item, beampipe.EndOfStream))
        msgs, end, items = rest[:k], rest[k], rest[k + 1 :]
        assert all(isinstance(m, beampipe.Message) and m.stream == start.stream for m in msgs)
        assert end.stream == start.stream
        out[start.stream] = (start, msgs, end)
    return out


@pytest.mark.parametrize("version", [1, 2, "auto"])
def test_each_series_becomes_a_stream_of_the_original_frames(version, tmp_path):
    first, second = frames(3, seed=1), frames(4, (33, 21), "uint32", seed=2)
    v1 = v1_series(41, first, "bs-lz4<") + v1_series(42, second, "bs-lz4< bare")
    v2 = v2_series(41, first, "bslz4") + v2_series(42, second, "lz4")
    messages = {1: v1, 2: v2, "auto": v1_series(41, first, "lz4<") + v2}[version]
    if version == "auto":
        messages = messages[: len(first) + 2] + v2[len(first) + 2 :]
    items, source = receive(messages, tmp_path, version=version, series=2)
    streams = split(items)
    assert list(streams) == ["series-000041", "series-000042"]
    assert not source.dead_letters
    for (start, msgs, end), originals, series in zip(
        streams.values(), (first, second), (41, 42), strict=True
    ):
        stream_version = 1 if version == 1 or (version == "auto" and series == 41) else 2
        channel = "image" if stream_version == 1 else "threshold_1"
        meta = start.metadata
        json.dumps(meta)
        assert meta["series_id"] == series and meta["stream_version"] == stream_version
        assert meta["endpoint"] == source.params.endpoint and meta["header_received"]
        assert meta["channels"] == [channel] and meta["signal"] == channel
        assert meta["beam_center_x"] == (1533.8 if stream_version == 1 else 1021.5)
        assert [m.id for m in msgs] == list(range(1, len(originals) + 1))
        for k, (msg, original) in enumerate(zip(msgs, originals, strict=True)):
            assert list(msg.data) == [channel]
            assert msg.data[channel].dtype == original.dtype
            assert np.array_equal(msg.data[channel], original)
            assert msg.metadata["frame"] == k and msg.metadata["series_id"] == series
            assert msg.metadata["signal"] == channel
            assert msg.metadata["units"] == {channel: "counts"}
            assert msg.metadata["real_time"] == pytest.approx(
                0.00099 if stream_version == 1 else 0.0099
            )
        assert end == beampipe.EndOfStream(start.stream, len(originals))


def test_corrupt_messages_are_skipped_counted_and_recorded(tmp_path):
    good = frames(4, seed=7)
    damaged = v1_image(7, 1, good[1], "bs-lz4<")
    damaged[2] = damaged[2][:-25]
    info = json.loads(damaged[1])
    info["size"] = len(damaged[2])
    damaged[1] = json.dumps(info).encode()
    messages = [
        v1_header(7),
        v1_image(7, 0, good[0]),
        damaged,
        v1_image(7, 2, good[2]),
        [b"{not json", b"x"],
        v1_image(7, 3, good[3]),
        v1_end(7),
    ]
    items, source = receive(messages, tmp_path, series=1)
    ((start, msgs, end),) = split(items).values()
    assert start.stream == "series-000007" and start.metadata["header_received"]
    assert [m.id for m in msgs] == [1, 3, 4]  # ids stay image number + 1: the gap shows
    for m in msgs:
        assert np.array_equal(m.data["image"], good[m.id - 1])
    assert end.last_id == 4
    first, second = dropped(source)
    assert first[:2] == ("series-000007", 2)
    assert first[2].startswith(
        f"CorruptMessage: dectris_stream {source.params.endpoint}: series 7, image 1: bslz4 data"
    )
    assert "check the network" in first[2]
    metadata = source.dead_letters[0][0].metadata
    assert metadata["series_id"] == 7 and metadata["bytes"] > 0
    assert second[:2] == ("series-000007", 0)
    assert "the first part is not JSON" in second[2]


@pytest.mark.parametrize(
    ("version", "bad", "problem"),
    [
        (1, v1_image(5, 0, frames(1)[0], "bs16-zstd<"), "series 5, image 0: encoding 'bs16-zst"),
        ("auto", [v2_image(5, 0, {"t": frames(1)[0]}, "zstd")], "series 5, image 0: channel 't'"),
        (1, [v2_start(5)], "a stream v2 message arrived, but the source expects v1"),
    ],
)
def test_an_unsupported_format_stops_with_what_to_check(version, bad, problem, tmp_path):
    earlier = frames(2, seed=8)
    messages = [*v1_series(4, earlier), v1_header(5), bad]
    with DectrisServer(messages) as server:
        source = make_source(server.endpoint, tmp_path, version=version)
        got = []
        with pytest.raises(UnsupportedFormat) as raised:
            got.extend(source.generate())
        source.close()
    text = str(raised.value)
    assert text.startswith(f"dectris_stream {server.endpoint}: ")
    assert problem in text and "; check " in text
    # everything received before the problem was passed on, the earlier series complete
    streams = split(got[:-1])
    assert [m.id for m in streams["series-000004"][1]] == [1, 2]
    assert isinstance(got[-1], beampipe.StreamStart) and got[-1].stream == "series-000005"


def test_nothing_from_the_endpoint_is_an_error_naming_it(tmp_path):
    with DectrisServer([]) as server:
        source = make_source(server.endpoint, tmp_path, timeout=0.2)
        with pytest.raises(NoMessage) as raised:
            list(source.generate())
        source.close()
    text = str(raised.value)
    assert text.startswith(f"dectris_stream {server.endpoint}: no message within 0.2 s")
    assert "stream/api/.../config/mode: enabled" in text


def test_a_timeout_ends_an_open_series_with_what_arrived(tmp_path):
    sent = frames(2, seed=9)
    messages = [
        *v1_series(1, frames(1)),
        v1_header(2),
        v1_image(2, 0, sent[0]),
        v1_image(2, 1, sent[1]),
    ]
    items, source = receive(messages, tmp_path, timeout=0.3)

    streams = split(items)
    assert list(streams) == ["series-000001", "series-000002"]
    _, msgs, end = streams["series-000002"]
    assert [m.id for m in msgs] == [1, 2] and end.last_id == 2
    ((stream, _, error),) = dropped(source)  # nothing was damaged: the series is just short
    assert stream == "series-000002"
    assert "no message for 0.3 s; the series ended after 2 of 6 images" in error


def test_a_series_joined_after_its_header_and_repeated_ids(tmp_path):
    a, b, c = frames(3, seed=10)
    messages = [
        v1_image(9, 4, a),  # joined mid-series: no header
        v1_image(9, 5, b),
        v1_image(9, 5, c),  # a repeat: skipped
        v1_end(9),
        *v1_series(1, [a]),
        v1_header(1),  # the detector was re-initialised: series 1 again, and no end for it
        v1_image(1, 0, c),
        *v1_series(2, [b]),
    ]
    items, source = receive(messages, tmp_path, series=4)
    streams = split(items)
    assert list(streams) == ["series-000009", "series-000001", "series-000001-2", "series-000002"]
    start, msgs, end = streams["series-000009"]
    assert not start.metadata["header_received"]
    assert all(start.metadata[key] is None for key in HEADER_FIELDS)
    assert start.metadata["channels"] == ["image"]
    assert [m.id for m in msgs] == [5, 6] and end.last_id == 6
    assert np.array_equal(msgs[1].data["image"], b)
    assert np.array_equal(streams["series-000001-2"][1][0].data["image"], c)
    ((_, _, error),) = dropped(source)
    assert "arrived after image 5 (a repeat, or out of order)" in error


def test_params():
    assert resolve("dectris_stream") is DectrisStream
    p = DectrisStream.Params(endpoint="tcp://eiger:9999")
    assert (p.version, p.series, p.timeout, p.prefix) == (
        "auto",
        None,
        None,
        "series-",
    )
    assert DectrisStream.Params(endpoint="tcp://[::1]:31001", version=2).version == 2
    for bad, problem in [
        ({"endpoint": "eiger:9999"}, "not a ZeroMQ address"),
        ({"endpoint": "tcp://eiger"}, "has no port"),
        ({"endpoint": "udp://eiger:9999"}, "not a ZeroMQ address"),
        ({"endpoint": "tcp://eiger:9999", "version": 3}, "version"),
        ({"endpoint": "tcp://eiger:9999", "series": 0}, "series"),
        ({"endpoint": "tcp://eiger:9999", "timeout": 0}, "timeout"),
        ({"endpoint": "tcp://eiger:9999", "port": 1}, "port"),
    ]:
        with pytest.raises(ValidationError, match=problem):
            DectrisStream.Params.model_validate(bad)


# -- a pipeline run --------------------------------------------------------------------------


def test_a_pipeline_writes_the_frames_of_both_stream_versions_to_nexus(folder):
    first, second = frames(5, (48, 64), "uint32", seed=11), frames(6, seed=12)
    messages = v1_series(3, first, "bs-lz4<") + v2_series(4, second, "bslz4 bare")
    with DectrisServer(messages) as server:
        result, _ = run_pipeline(
            folder,
            textwrap.dedent(
                f"""\
                name: dectris
                nodes:
                  cam:
                    use: dectris_stream
                    params: {{endpoint: "{server.endpoint}", series: 2, timeout: 30}}
                  nexus:
                    use: nexus_writer
                    params: {{path: out/frames.nxs, xas: null}}
                connections:
                  - cam.out -> nexus.frames
                """
            ),
        )
    assert result.exit_code == 0, result.errors
    with h5py.File(folder / "out/frames.nxs", "r") as f:
        entries = {f[name]["entry_identifier"][()].decode(): f[name] for name in f}
        assert set(entries) == {"series-000003", "series-000004"}
        one = entries["series-000003"]["frames/image"][()]
        two = entries["series-000004"]["frames/threshold_1"][()]
        assert one.dtype == np.uint32 and np.array_equal(one, np.stack(first))
        assert two.dtype == np.uint16 and np.array_equal(two, np.stack(second))
        detector = entries["series-000004"]["metadata"]
        assert detector["beam_center_x"][()] == 1021.5
        assert detector["detector_serial_number"][()].decode() == "E-32-0111"


# -- eiger-simulator: an independent implementation of the SIMPLON API and stream v1 ----------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Simulator:
    """``eiger-simulator`` (https://pypi.org/project/eiger-simulator/, ALBA) in its own
    process: the SIMPLON REST API on ``http``, stream v1 on ``endpoint``."""

    def __init__(self, dataset: Path) -> None:
        self.port, zmq_port = _free_port(), _free_port()
        self.endpoint = f"tcp://127.0.0.1:{zmq_port}"
        self.log = dataset.parent / "eiger-simulator.log"
        command = [sys.executable, "-m", "eigersim.server", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--zmq", self.endpoint, "--dataset", str(dataset)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--log-level", "warning"],
                cwd=dataset.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:  # the REST API answers once uvicorn has started
            try:
                self.get("/detector/api/version/")
                break
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = self.log.read_text()
                    raise RuntimeError(f"eiger-simulator did not start:\n{log}") from exc
                time.sleep(0.05)

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
            return json.loads(r.read())

    def put(self, path: str, value: object = None) -> object:
        body = None if value is None else json.dumps({"value": value}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[Simulator, list[np.ndarray]]]:
    """The simulator serving a dataset of 6 frames (40 x 60, uint16) from an EIGER-style
    master file (``entry/data/data_000001``)."""
    dataset = frames(6, (40, 60), "uint16", seed=13)
    with h5py.File(tmp_path / "series_master.h5", "w") as f:
        f.create_dataset("entry/data/data_000001", data=np.stack(dataset))
    sim = Simulator(tmp_path / "series_master.h5")
    try:
        yield sim, dataset
    finally:
        sim.stop()


def _wait_connected(monitor: zmq.Socket) -> None:
    """Until the monitored socket has completed a ZeroMQ handshake with its peer, so that the
    peer can send to it (bounded: fails after 30 s)."""
    deadline = time.monotonic() + 30
    handshake = zmq.EVENT_HANDSHAKE_SUCCEEDED
    while time.monotonic() < deadline:
        if monitor.poll(100) and recv_monitor_message(monitor)["event"] == handshake:
            return
    pytest.fail("the source did not connect to eiger-simulator's stream")


def test_series_triggered_on_eiger_simulator_arrive_through_the_source(simulator, tmp_path):
    sim, dataset = simulator
    api = "/detector/api/1.6.0"
    # the simulator announces the configured detector size as the frame shape: make it the
    # dataset's (x = columns, y = rows)
    sim.put(f"{api}/config/x_pixels_in_detector", 60)
    sim.put(f"{api}/config/y_pixels_in_detector", 40)
    sim.put(f"{api}/config/nimages", 5)
    sim.put(f"{api}/config/count_time", 0.002)
    sim.put(f"{api}/config/beam_center_x", 31.5)
    sim.put("/stream/api/1.6.0/config/header_detail", "all")
    assert sim.get("/stream/api/1.6.0/config/mode")["value"] == "enabled"

    source = make_source(sim.endpoint, tmp_path, version=1, series=2, timeout=30)
    monitor = source.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    items = []
    try:
        generated = source.generate()
        for compression in ("lz4", "bslz4"):
            sim.put(f"{api}/config/compression", compression)
            sim.put(f"{api}/command/initialize")  # (re-)binds the stream's PUSH socket
            # the simulator drops what it cannot send within 0.5 s: arm once connected
            _wait_connected(monitor)
            series = sim.put(f"{api}/command/arm")["sequence id"]
            sim.put(f"{api}/command/trigger")  # returns when all images have been sent
            sim.put(f"{api}/command/disarm")
            for item in generated:
                items.append(item)
                if isinstance(item, beampipe.EndOfStream):
                    break
            assert items[-1].stream == f"series-{series:06d}"
        assert next(generated, None) is None  # series: 2 reached
    finally:
        monitor.close()
        source.close()

    streams = split(items)
    assert list(streams) == ["series-000001", "series-000002"]
    for start, msgs, end in streams.values():
        meta = start.metadata
        assert meta["header_detail"] == "all" and meta["header_received"]
        assert meta["beam_center_x"] == 31.5 and meta["number_of_images"] == 5
        assert (meta["image_size_x"], meta["image_size_y"]) == (60, 40)
        assert meta["config"]["compression"] in ("lz4", "bslz4")
        assert meta["header_arrays"] == {}  # the simulator sends placeholder text as arrays
        assert [m.id for m in msgs] == [1, 2, 3, 4, 5] and end.last_id == 5
        for k, msg in enumerate(msgs):
            image = msg.data["image"]
            assert image.shape == (40, 60) and image.dtype == np.uint16
            assert np.array_equal(image, dataset[k])
            assert msg.metadata["real_time"] == pytest.approx(0.002, abs=1e-6)
    assert not source.dead_letters
