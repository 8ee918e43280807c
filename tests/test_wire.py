"""The wire encoding: round trips through real ZeroMQ sockets, zero copy, and corrupt frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from beampipe.message import EndOfStream, Message, StreamStart, WireError, decode, encode
from beampipe.message.wire import INLINE_LIMIT


def _through_zmq(frames):
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://wire-test")
        b.connect("inproc://wire-test")
        a.send_multipart(frames, copy=False)
        return b.recv_multipart(copy=False)
    finally:
        a.close(0)
        b.close(0)


def test_message_round_trip_through_zmq():
    frame = np.arange(2167 * 2070, dtype=np.uint16).reshape(2167, 2070)
    msg = Message(
        data={"image": frame, "i0": 0.5, "raw": b"\x00\x01", "roi": np.ones((2, 3), ">f4")},
        metadata={"exposure": 0.001, "tags": ["a", 1]},
        stream="scan-1",
        id=7,
        timestamps=[["det", 1.5]],
    )
    got = decode(_through_zmq(encode(msg)))
    assert (got.stream, got.id, got.metadata, got.timestamps) == (
        "scan-1",
        7,
        {"exposure": 0.001, "tags": ["a", 1]},
        [["det", 1.5]],
    )
    np.testing.assert_array_equal(got.data["image"], frame)
    assert got.data["image"].dtype == np.uint16 and got.data["image"].shape == (2167, 2070)
    assert got.data["i0"].shape == () and float(got.data["i0"]) == 0.5
    assert got.data["raw"] == b"\x00\x01"
    assert got.data["roi"].dtype == np.dtype(">f4")


def test_small_arrays_ride_in_the_header_large_ones_are_not_copied():
    small = np.zeros(INLINE_LIMIT // 8 - 1)
    large = np.zeros(INLINE_LIMIT // 8)
    frames = encode(Message(data={"small": small, "large": large}, stream="s", id=1))
    assert len(frames) == 2
    assert frames[1] is large  # the array itself is handed to zmq: no copy
    received = decode(_through_zmq(frames)).data["large"]
    assert not received.flags.writeable  # a view of the received buffer


def test_non_contiguous_array_is_sent_contiguous():
    a = np.arange(100.0).reshape(10, 10)[:, ::2]
    got = decode(encode(Message(data={"a": a}, stream="s", id=1)))
    np.testing.assert_array_equal(got.data["a"], a)


def test_stream_markers_round_trip():
    assert decode(encode(StreamStart("s", {"beamline": "P65"}))) == StreamStart(
        "s", {"beamline": "P65"}
    )
    assert decode(encode(EndOfStream("s", 42, "s2"))) == EndOfStream("s", 42, "s2")


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="'x': object arrays"):
        encode(Message(data={"x": np.array([object()])}, stream="s", id=1))


def _header(frames):
    return msgpack.unpackb(frames[0])


@pytest.mark.parametrize(
    ("corrupt", "error"),
    [
        (lambda f: [f[0], f[1][:-8]], r"stream 's', id 3: array 'big' \(<f8, shape \(9000,\)\) "),
        (lambda f: [f[0]], r"stream 's', id 3: missing frame for array 'big'"),
        (lambda f: [*f, b"x"], r"stream 's', id 3: 1 unexpected extra frames"),
        (lambda f: [b"\xc1garbage"], "unreadable header frame"),
        (lambda f: [], "empty frame sequence"),
        (
            lambda f: [msgpack.packb({**_header(f), "v": 99}), f[1]],
            "protocol version 99, expected 1",
        ),
        (lambda f: [msgpack.packb({**_header(f), "k": "z"}), f[1]], "unknown message kind 'z'"),
        (
            lambda f: [msgpack.packb({**_header(f), "a": [["big", "|O", [9000], None]]}), f[1]],
            "object dtype",
        ),
        (
            lambda f: [msgpack.packb({**_header(f), "a": [["big", "<f8", [4500], None]]}), f[1]],
            r"needs 36000 bytes, frame has 72000",
        ),
        (lambda f: [msgpack.packb({"v": 1, "k": "d", "s": "s"})], r"malformed 'd' header"),
    ],
)
def test_corrupt_frames_raise_wire_error_naming_the_message(corrupt, error):
    frames = encode(Message(data={"big": np.arange(9000.0)}, stream="s", id=3))
    with pytest.raises(WireError, match=error):
        decode(corrupt([bytes(memoryview(x).cast("B")) for x in frames]))
