"""The receiving end of a pipe: an input port's connection to one upstream output port, which
takes its items, returns credit and acknowledges (:mod:`beampipe.transport.protocol`)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from beampipe.message import Item, WireError, decode
from beampipe.transport.protocol import (
    Control,
    Delivery,
    Hello,
    TransportError,
    decode_batch,
    delivery_of,
    encode_ack,
    encode_credit,
    encode_hello,
    wire_size,
)
from beampipe.transport.security import Credentials

_SNDMORE = int(zmq.SNDMORE)
_ACK, _CREDIT = Control.ACK, Control.CREDIT
_BATCH, _FINISHED = Delivery.BATCH, Delivery.FINISHED
"""Looked up once: an enum member costs about 80 ns to look up on its class (Python 3.11)."""


@dataclass(eq=False)
class InputChannel:
    """The receiving end of one pipe: a DEALER connected to one upstream output port.

    Every item received gets the pipe's next number (:attr:`received`); the node calls
    :meth:`complete` with it when the item is done with, and :meth:`flush_acks` sends the
    cumulative acknowledgement. :attr:`epoch` counts reconnections to a restarted upstream:
    a completion from an earlier epoch is ignored.
    """

    port: str
    upstream: str
    """``node#replica.port`` of the upstream output, for error messages."""
    socket: zmq.Socket
    window: int
    byte_window: int
    hello: bytes
    credentials: Credentials | None = None
    """What the pipe presents to the upstream port (:mod:`beampipe.transport.security`)."""
    finished: bool = False
    last_size: int = 0
    """Wire bytes of the last item received."""
    received: int = 0
    """Items received in this epoch: the number of the last one."""
    epoch: int = 0
    _processed: int = 0
    _processed_bytes: int = 0
    _acked: int = 0
    _ack_sent: int = 0
    _done: set[int] = field(default_factory=set)
    _batch: deque[bytes] = field(default_factory=deque)
    """Headers of the items of the last batch received that were not yet taken."""

    @classmethod
    def connect(
        cls,
        ctx: zmq.Context,
        *,
        port: str,
        target: str,
        replica: int,
        upstream: str,
        endpoint: str,
        window: int,
        byte_window: int,
        credentials: Credentials | None = None,
    ) -> InputChannel:
        """Connect to ``endpoint`` and introduce ourselves as ``target`` replica ``replica``
        with a credit of ``window`` messages and ``byte_window`` bytes, presenting
        ``credentials`` if given."""
        hello = encode_hello(Hello(target, replica, window, byte_window))
        sock = ctx.socket(zmq.DEALER)
        channel = cls(port, upstream, sock, window, byte_window, hello, credentials)
        channel._open(endpoint)
        return channel

    def _open(self, endpoint: str) -> None:
        sock = self.socket
        if self.credentials is not None:
            self.credentials.client(sock)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        sock.send_multipart([Control.HELLO, self.hello])

    def reconnect(self, ctx: zmq.Context, endpoint: str) -> None:
        """The upstream process was restarted (at ``endpoint``): drop what is still queued
        from its predecessor (unacknowledged, so it comes again) and start a new epoch."""
        self.socket.close(linger=0)
        self.socket = ctx.socket(zmq.DEALER)
        self.epoch += 1
        self.finished = False
        self.received = self._acked = self._ack_sent = 0
        self._processed = self._processed_bytes = 0
        self._done.clear()
        self._batch.clear()
        self._open(endpoint)

    @property
    def pending(self) -> bool:
        """Items of a batch already received wait to be taken."""
        return bool(self._batch)

    def receive(self, block: bool = True) -> Item | None:
        """The next item (from the last batch received, or a new ZeroMQ message), or None for
        FINISHED (answered with BYE; :attr:`finished` is then True).

        Raises:
            zmq.Again: ``block=False`` and nothing is waiting.
            beampipe.message.WireError: the frames are not a valid item (it is still counted:
                complete it).
            TransportError: a batch that is not a msgpack array of ``bin``.
        """
        batch = self._batch
        if batch:
            return self._item([batch.popleft()])
        first = self.socket.recv(0 if block else zmq.NOBLOCK, copy=False)
        if first.more:
            return self._item([first, *self.socket.recv_multipart(copy=False)])
        data = first.bytes
        kind = delivery_of(data)
        if kind is _BATCH:
            try:
                batch.extend(decode_batch(data))
            except ValueError as exc:
                raise TransportError(
                    f"input {self.port!r} from {self.upstream}: unreadable batch: {exc}"
                ) from exc
            return self._item([batch.popleft()])
        if kind is _FINISHED:
            self.finished = True
            self._return_credit()
            self.socket.send_multipart([Control.BYE])
            return None
        return self._item([data])

    def _item(self, frames: list[Any]) -> Item:
        """Count and decode one item."""
        self.received += 1
        self.last_size = wire_size(frames)
        try:
            return decode(frames)
        except WireError as exc:
            raise WireError(f"from {self.upstream} on input {self.port!r}: {exc}") from exc

    def processed(self, size: int) -> None:
        """One message of ``size`` wire bytes was processed: return credit in batches of half
        the window (messages or bytes, whichever fills first)."""
        self._processed += 1
        self._processed_bytes += size
        if self._processed >= max(1, self.window // 2) or (
            self._processed_bytes >= self.byte_window // 2
        ):
            self._return_credit()

    def complete(self, seq: int, epoch: int) -> None:
        """Item ``seq`` (of ``epoch``) is done with; acknowledged at the next :meth:`flush_acks`
        once every item before it is done with too."""
        if epoch != self.epoch:
            return
        if seq == self._acked + 1:
            self._acked = seq
            done = self._done
            while done and self._acked + 1 in done:
                self._acked += 1
                done.discard(self._acked)
        elif seq > self._acked:
            self._done.add(seq)

    def flush_acks(self) -> None:
        """Send ``ACK k`` if more items were done with since the last one."""
        if self._acked > self._ack_sent:
            self.socket.send(_ACK, _SNDMORE)
            self.socket.send(encode_ack(self._acked))
            self._ack_sent = self._acked

    @property
    def unacknowledged(self) -> int:
        """Items received and not yet acknowledged."""
        return self.received - self._ack_sent

    def _return_credit(self) -> None:
        if self._processed:
            self.socket.send(_CREDIT, _SNDMORE)
            self.socket.send(encode_credit(self._processed, self._processed_bytes))
            self._processed = 0
            self._processed_bytes = 0
