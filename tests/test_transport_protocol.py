"""The frames of a pipe, byte for byte (beampipe.transport.protocol): what a receiver sends up
and how a sender's messages are told apart; and that both ends put exactly these on the wire."""

from __future__ import annotations

import pytest
import zmq

from beampipe.message import Message, encode
from beampipe.transport import InputChannel, OutputPort, Route
from beampipe.transport.protocol import (
    FINISHED,
    Control,
    Delivery,
    Hello,
    decode_ack,
    decode_batch,
    decode_credit,
    decode_hello,
    delivery_of,
    encode_ack,
    encode_batch,
    encode_credit,
    encode_hello,
)

HELLO = b"\x84\xa6target\xa4b.in\xa7replica\x03\xa6credit\x08\xa5bytes\xce\x00\x10\x00\x00"
"""msgpack of {"target": "b.in", "replica": 3, "credit": 8, "bytes": 1 << 20}, in that order."""


def test_control_frames_are_these_bytes_and_decode_to_what_was_encoded() -> None:
    assert [bytes(k) for k in Control] == [b"H", b"C", b"A", b"B"]
    hello = Hello("b.in", 3, 8, 1 << 20)
    assert encode_hello(hello) == HELLO and decode_hello(HELLO) == hello
    assert encode_credit(4, 600159) == b"4 600159" and decode_credit(b"4 600159") == (4, 600159)
    assert encode_ack(12) == b"12" and decode_ack(b"12") == 12


def test_a_batch_is_a_msgpack_array_of_bin_and_the_first_byte_tells_the_kind() -> None:
    headers = [b"\x80", b"\x81\xa1a\x01"]
    batch = encode_batch(headers)
    assert batch == b"\x92\xc4\x01\x80\xc4\x04\x81\xa1a\x01"
    assert decode_batch(batch) == headers
    assert delivery_of(batch) is Delivery.BATCH
    assert delivery_of(headers[1]) is Delivery.ITEM
    assert delivery_of(FINISHED) is Delivery.FINISHED and FINISHED == b"F"
    assert delivery_of(b"F\x00") is Delivery.ITEM  # only exactly "F" is FINISHED


@pytest.mark.parametrize("frame", [b"\x90", b"\x91\x01", b"\x92\xc4\x01\x80", b"\xc1"])
def test_an_unreadable_batch_is_a_value_error(frame: bytes) -> None:
    with pytest.raises(ValueError):
        decode_batch(frame)


def test_both_ends_put_exactly_these_frames_on_the_wire() -> None:
    ctx = zmq.Context()
    try:
        upstream = ctx.socket(zmq.ROUTER)
        upstream.bind("inproc://protocol-up")
        channel = InputChannel.connect(
            ctx,
            port="in",
            target="b.in",
            replica=3,
            upstream="a#0.out",
            endpoint="inproc://protocol-up",
            window=8,
            byte_window=1 << 20,
        )
        identity, *hello = upstream.recv_multipart()
        assert hello == [b"H", HELLO]

        port = OutputPort.bind(ctx, "out", "inproc://protocol-down", [Route("b.in", 1)])
        downstream = ctx.socket(zmq.DEALER)
        downstream.connect("inproc://protocol-down")
        downstream.send_multipart(hello)
        port.handle(port.socket.recv_multipart())
        msg = Message(data={"x": 1}, stream="s", id=1)
        frames = encode(msg)
        assert port.try_send(msg, frames, hold=True) and port.try_send(msg, frames, hold=True)
        port.flush()
        port.finish()
        batch = downstream.recv_multipart()
        assert batch == [encode_batch([frames[0], frames[0]])]
        assert not downstream.poll(100)  # FINISHED waits until both are acknowledged

        upstream.send_multipart([identity, *batch])
        for seq in (1, 2):
            channel.receive()
            channel.processed(channel.last_size)
            channel.complete(seq, channel.epoch)
        channel.flush_acks()
        ack = upstream.recv_multipart()[1:]
        assert ack == [b"A", b"2"]
        downstream.send_multipart(ack)
        port.handle(port.socket.recv_multipart())
        assert downstream.recv_multipart() == [b"F"]
        upstream.send_multipart([identity, b"F"])
        assert channel.receive() is None
        size = len(frames[0])
        got = [upstream.recv_multipart()[1:] for _ in range(2)]
        assert got == [[b"C", b"2 %d" % (2 * size)], [b"B"]]  # credit at FINISHED
    finally:
        ctx.destroy(linger=0)
