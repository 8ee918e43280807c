"""The wire protocol of a pipe: its frame kinds, and the encoding and decoding of its frames.

Topology: every *output port* of a node binds one ROUTER socket; every *input port* of a
downstream node connects one DEALER socket to each upstream output port that feeds it. Each
(upstream output, downstream input replica) pair is thus one ordered, bidirectional pipe:

* downstream -> upstream (:class:`Control`, the first frame after the ROUTER's routing frame):
  ``HELLO`` (who I am, initial credit in messages and bytes: :func:`encode_hello`),
  ``CREDIT n bytes`` after processing (:func:`encode_credit`), ``ACK k`` (items 1..k of this
  pipe are done with: :func:`encode_ack`), ``BYE`` after the upstream said it is finished;
* upstream -> downstream (:class:`Delivery`): items (messages and stream markers), one or a
  batch of several per ZeroMQ message, and ``FINISHED`` (nothing more will come).

The upstream -> downstream messages carry no kind frame; the first byte of their first frame
tells them apart (:func:`delivery_of`):

* an *item*: its frames in the wire encoding of :mod:`beampipe.message.wire`, a msgpack map
  header (first byte ``0x80``-``0x8f``, ``0xde`` or ``0xdf``) and its array buffers;
* a *batch*: one frame, a msgpack array (first byte ``0x90``-``0x9f``, ``0xdc`` or ``0xdd``) of
  ``bin`` objects, each the header of one item that has no buffer frame, in the order sent
  (:func:`encode_batch`). When a sender batches is its choice
  (:mod:`beampipe.transport.batching`); credit, numbering and acknowledgement are per item, as
  if each had been sent on its own;
* ``F``: FINISHED.

Flow control: a data message is only sent to a peer that has credit, so every receiver holds at
most ``window`` unprocessed messages (and about ``byte_window`` bytes) per upstream peer and a
slow sink slows the source instead of growing memory: the credit-based flow control of the
ZeroMQ guide, ch. 7 ("Credit-Based Flow Control", https://zguide.zeromq.org/docs/chapter7/).
Stream markers travel on every pipe (broadcast) and do not take credit. Socket high-water marks
are disabled: credit is the bound.

Acknowledgements (at-least-once delivery): the items of a pipe are numbered 1, 2, 3, ... in the
order sent; both ends count them, so the number is not sent. The sender *retains* every item
until the receiver acknowledges it; the receiver acknowledges cumulatively (``ACK k``) once an
item is done with: processed and its results acknowledged further downstream, or, at a sink,
made durable (:meth:`beampipe.Worker.checkpoint`). Credit and acknowledgement are separate, so
acknowledgement latency does not throttle throughput. When a receiver's process restarts and
says HELLO again, everything it had not acknowledged is sent to it again, renumbered from 1.
A sender that has finished sends FINISHED once every item it sent is acknowledged.

A replica that says HELLO to a port already sending first gets the ends of the streams the port
ended recently and the starts of the open ones; a replica being removed is sent FINISHED at once.
A receiver counts a pipe that finished as having ended every stream.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

import msgpack
import zmq


class TransportError(RuntimeError):
    """A peer broke the protocol (unknown peer, unexpected frame)."""


class Control(bytes, Enum):
    """The kind of a message a receiver sends up its pipe: its first frame."""

    HELLO = b"H"
    """Followed by :func:`encode_hello`'s frame."""
    CREDIT = b"C"
    """Followed by :func:`encode_credit`'s frame."""
    ACK = b"A"
    """Followed by :func:`encode_ack`'s frame."""
    BYE = b"B"
    """Alone: the answer to FINISHED."""


class Delivery(Enum):
    """The kind of a message a sender sends down its pipe (:func:`delivery_of`)."""

    ITEM = "item"
    BATCH = "batch"
    FINISHED = "finished"


FINISHED = b"F"
"""The one frame of a FINISHED message."""
_ITEM, _BATCH, _FINISHED = Delivery.ITEM, Delivery.BATCH, Delivery.FINISHED
"""Looked up once: an enum member costs about 80 ns to look up on its class (Python 3.11)."""
_BATCH_FIRST = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
"""First bytes of a msgpack array: a batch."""


def delivery_of(frame: bytes) -> Delivery:
    """What a single-frame message from the sender is (a message of several frames is an
    item)."""
    if frame and frame[0] in _BATCH_FIRST:
        return _BATCH
    if frame == FINISHED:
        return _FINISHED
    return _ITEM


def encode_batch(headers: list[bytes]) -> bytes:
    """The frame of a batch of items, each given by its one (header) frame."""
    return msgpack.packb(headers)


def decode_batch(frame: bytes) -> list[bytes]:
    """The item headers of a batch (:func:`encode_batch`), in the order sent.

    Raises:
        ValueError: ``frame`` is not a non-empty msgpack array of ``bin``.
    """
    try:
        headers = msgpack.unpackb(frame)
        if not headers or not all(isinstance(h, bytes) for h in headers):
            raise TypeError("not a non-empty array of bin")
    except Exception as exc:
        raise ValueError(str(exc)) from exc
    return headers


class Hello(NamedTuple):
    """A receiver introducing itself: ``target`` replica ``replica``, with a credit of
    ``credit`` messages and ``byte_credit`` bytes."""

    target: str
    replica: int
    credit: int
    byte_credit: int


def encode_hello(hello: Hello) -> bytes:
    """The frame that follows :attr:`Control.HELLO`."""
    target, replica, credit, byte_credit = hello
    return msgpack.packb(
        {"target": target, "replica": replica, "credit": credit, "bytes": byte_credit}
    )


def decode_hello(frame: bytes) -> Hello:
    """The :class:`Hello` in ``frame`` (:func:`encode_hello`); its fields as the peer sent them.

    Raises:
        ValueError: not msgpack.
        TypeError, KeyError: not a map of the four fields.
    """
    hello = msgpack.unpackb(frame)
    return Hello(hello["target"], hello["replica"], hello["credit"], hello["bytes"])


def encode_credit(messages: int, nbytes: int) -> bytes:
    """The frame that follows :attr:`Control.CREDIT`: ``messages`` and ``nbytes`` more."""
    return b"%d %d" % (messages, nbytes)


def decode_credit(frame: bytes) -> tuple[int, int]:
    """The messages and bytes of credit in ``frame`` (:func:`encode_credit`).

    Raises:
        ValueError: not two integers.
    """
    messages, nbytes = map(int, frame.split())
    return messages, nbytes


def encode_ack(upto: int) -> bytes:
    """The frame that follows :attr:`Control.ACK`: items ``1..upto`` are done with."""
    return b"%d" % upto


def decode_ack(frame: bytes) -> int:
    """The number of the last item acknowledged in ``frame`` (:func:`encode_ack`).

    Raises:
        ValueError: not an integer.
    """
    return int(frame)


def wire_size(frames: list[Any]) -> int:
    """Bytes of an encoded item (``bytes`` or ``zmq.Frame`` / buffer frames)."""
    if len(frames) == 1:
        return len(frames[0])
    return sum(len(f) if isinstance(f, bytes | zmq.Frame) else memoryview(f).nbytes for f in frames)
