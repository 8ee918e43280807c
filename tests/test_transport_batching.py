"""Small items travel in batches (several per ZeroMQ message) on a pipe, with credit, numbering
and acknowledgement per item as if each had gone on its own; the order on the pipe is the
order sent (beampipe.transport.protocol, beampipe.transport.batching)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq

from beampipe.message import EndOfStream, Message, StreamStart, WireError, encode
from beampipe.transport import InputChannel, OutputPort, Route
from beampipe.transport.batching import BATCH_ITEMS

_names = itertools.count()


class Tally:
    """A token that counts the items (per peer) still waiting for an acknowledgement."""

    def __init__(self) -> None:
        self.waiting = 0

    def hold(self) -> None:
        self.waiting += 1

    def release(self) -> None:
        self.waiting -= 1


@pytest.fixture
def pipe() -> Iterator[tuple[OutputPort, Callable[..., InputChannel]]]:
    """An output port on inproc and a factory of input channels connected to it (replica
    ``r`` of ``b.in``) that have said HELLO."""
    ctx = zmq.Context()
    endpoint = f"inproc://batching-{next(_names)}"
    port = OutputPort.bind(ctx, "out", endpoint, [Route("b.in", 1)])

    def channel(replica: int = 0, window: int = 64) -> InputChannel:
        ch = InputChannel.connect(
            ctx,
            port="in",
            target="b.in",
            replica=replica,
            upstream="a#0.out",
            endpoint=endpoint,
            window=window,
            byte_window=1 << 24,
        )
        handle_control(port)
        return ch

    try:
        yield port, channel
    finally:
        ctx.destroy(linger=0)


def handle_control(port: OutputPort) -> None:
    """Hand every control frame sequence (HELLO, CREDIT, ACK, BYE) waiting to the port."""
    while port.socket.poll(200):
        port.handle(port.socket.recv_multipart())


def message(i: int, payload: int = 8) -> Message:
    return Message(data={"x": np.full(payload, i, dtype=np.uint8)}, stream="s", id=i)


def queued(ch: InputChannel) -> int:
    """ZeroMQ messages waiting on the channel's socket (taken off it: the channel will not
    see them)."""
    n = 0
    while ch.socket.poll(100):
        ch.socket.recv_multipart()
        n += 1
    return n


def test_held_items_go_as_one_zeromq_message_at_flush_in_order(pipe) -> None:
    port, channel = pipe
    ch = channel()
    items = [StreamStart("s", {"n": 5}), *(message(i) for i in range(1, 6))]
    for item in items:
        assert port.try_send(item, encode(item), hold=True)
    assert not ch.socket.poll(100)  # held: nothing on the wire yet
    port.flush()
    got = [ch.receive()]
    assert ch.pending and not ch.socket.poll(0)  # the other five came in the same message
    got += [ch.receive() for _ in range(5)]
    assert not ch.pending
    assert isinstance(got[0], StreamStart) and got[0].metadata == {"n": 5}
    assert [m.id for m in got[1:]] == [1, 2, 3, 4, 5]
    assert [int(m.data["x"][0]) for m in got[1:]] == [1, 2, 3, 4, 5]
    assert ch.received == 6  # numbered one by one
    assert port.sent == 5 and port.in_flight == 5  # credit taken per message


def test_an_item_sent_without_hold_goes_at_once_with_what_was_held(pipe) -> None:
    port, channel = pipe
    ch = channel()
    assert port.try_send(message(1), encode(message(1)), hold=True)
    assert port.try_send(message(2), encode(message(2)))  # hold=False: the batch goes now
    assert ch.socket.poll(1000)
    assert [ch.receive().id, ch.receive().id] == [1, 2]
    assert not ch.pending and not ch.socket.poll(0)
    assert port.try_send(message(3), encode(message(3)))  # alone: a plain item
    assert ch.receive().id == 3 and not ch.pending


def test_a_full_batch_goes_without_a_flush(pipe) -> None:
    port, channel = pipe
    ch = channel(window=BATCH_ITEMS + 8)
    for i in range(1, BATCH_ITEMS + 2):
        assert port.try_send(message(i), encode(message(i)), hold=True)
    assert queued(ch) == 1  # the first BATCH_ITEMS; the last one is still held
    port.flush()
    assert queued(ch) == 1


def test_a_large_item_goes_after_the_small_ones_held_before_it(pipe) -> None:
    port, channel = pipe
    ch = channel()
    big = Message(data={"image": np.arange(100_000, dtype=np.uint16)}, stream="s", id=4)
    for item in [message(1), message(2), message(3), big, message(5)]:
        assert port.try_send(item, encode(item), hold=True)
    port.flush()
    got = [ch.receive() for _ in range(5)]
    assert [m.id for m in got] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(got[3].data["image"], big.data["image"])


def test_credit_and_acknowledgement_stay_per_item(pipe) -> None:
    port, channel = pipe
    ch = channel(window=8)
    tokens = [Tally() for _ in range(9)]
    for i in range(8):
        assert port.try_send(message(i + 1), encode(message(i + 1)), tokens[i], hold=True)
    assert not port.try_send(message(9), encode(message(9)), tokens[8], hold=True)  # no credit
    port.flush()
    for _ in range(8):
        ch.receive()
        ch.processed(ch.last_size)
    for seq in (1, 2, 3, 5):  # 4 is not done with: only 1..3 are acknowledged
        ch.complete(seq, ch.epoch)
    ch.flush_acks()
    handle_control(port)
    assert [t.waiting for t in tokens[:8]] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert port.retained == 5 and port.in_flight == 0  # credit came back for all 8
    assert port.try_send(message(9), encode(message(9)), tokens[8], hold=True)


def test_a_corrupt_item_in_a_batch_is_counted_and_the_others_arrive(pipe) -> None:
    port, channel = pipe
    ch = channel()
    for i in range(1, 4):
        frames = encode(message(i))
        if i == 2:  # truncated, as the "corrupt" fault does
            frames = [frames[0][:-1]]
        assert port.try_send(message(i), frames, hold=True)
    port.flush()
    assert ch.receive().id == 1
    with pytest.raises(WireError, match=r"from a#0\.out on input 'in'"):
        ch.receive()
    assert ch.received == 2  # counted: the node completes it
    assert ch.receive().id == 3


def test_finish_and_retire_send_what_is_held_first(pipe) -> None:
    port, channel = pipe
    first = channel()
    assert port.try_send(message(1), encode(message(1)), hold=True)
    port.retire("b.in", 0)
    assert first.receive().id == 1
    assert first.receive() is None and first.finished


def test_a_restarted_replica_gets_what_was_held_for_its_predecessor(pipe) -> None:
    port, channel = pipe
    dead = channel(replica=0)
    items = [StreamStart("s", {}), message(1), message(2), EndOfStream("s", 2)]
    for item in items:
        assert port.try_send(item, encode(item), hold=True)
    port.lost("b.in", 0)
    port.flush()  # nothing goes to a lost peer
    assert not dead.socket.poll(100)
    dead.socket.close(linger=0)
    restarted = channel(replica=0)  # HELLO again: everything unacknowledged comes again
    got = [restarted.receive() for _ in range(4)]
    assert [type(x).__name__ for x in got] == ["StreamStart", "Message", "Message", "EndOfStream"]
    assert restarted.received == 4 and port.resent == 4
