"""Moving messages between node processes over ZeroMQ, with credit-based flow control.

Topology: every *output port* of a node binds one ROUTER socket; every *input port* of a
downstream node connects one DEALER socket to each upstream output port that feeds it. Each
(upstream output, downstream input replica) pair is thus one ordered, bidirectional pipe:

* downstream -> upstream: ``HELLO`` (who I am, initial credit in messages and bytes),
  ``CREDIT n bytes`` after processing, ``BYE`` after the upstream said it is finished;
* upstream -> downstream: ``ITEM`` (a message or stream marker in the wire encoding of
  :mod:`beampipe.message.wire`) and ``FINISHED`` (nothing more will come).

A data message is only sent to a peer that has credit, so every receiver holds at most ``window``
unprocessed messages (and about ``byte_window`` bytes) per upstream peer and a slow sink slows the
source instead of growing memory: the credit-based flow control of the ZeroMQ guide, ch. 7
("Credit-Based Flow Control", https://zguide.zeromq.org/docs/chapter7/). Stream markers travel on
every pipe (broadcast) and do not take credit. Socket high-water marks are disabled: credit is the
bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from beampipe.message import Item, Message, WireError, decode
from beampipe.message.key import KeyFunction, replica_of

ITEM, HELLO, CREDIT, FINISHED, BYE = b"I", b"H", b"C", b"F", b"B"
_SNDMORE = int(zmq.SNDMORE)


class TransportError(RuntimeError):
    """A peer broke the protocol (unknown peer, unexpected frame)."""


@dataclass(slots=True, eq=False)
class Peer:
    """One downstream input-port replica, as seen by an output port.

    ``credit`` / ``byte_credit`` are what it can still take; ``window`` / ``byte_window`` what
    it started with, so ``window - credit`` messages are in flight to it.
    """

    identity: bytes
    target: str
    """``node.port`` of the connection it belongs to."""
    replica: int
    credit: int
    byte_credit: int
    window: int
    byte_window: int
    finished: bool = False

    def can_take(self, size: int) -> bool:
        """Room for a message of ``size`` bytes: a message credit, and byte credit for it,
        unless nothing is in flight (so a message bigger than the byte window still moves)."""
        if self.credit <= 0:
            return False
        return self.byte_credit >= size or self.credit >= self.window


@dataclass(eq=False)
class Route:
    """How one connection spreads messages over the replicas of its target.

    ``routing`` is ``round_robin`` (the replica with most credit, i.e. least loaded; ties in
    turn), ``by_key`` (replica ``replica_of(key(msg), replicas)``; equal keys, equal replica) or
    ``broadcast`` (all replicas).
    """

    target: str
    replicas: int
    routing: str = "round_robin"
    key: KeyFunction | None = None
    peers: list[Peer] = field(default_factory=list)
    _turn: int = 0

    def choose(self, msg: Message, size: int) -> list[Peer] | None:
        """The peers that get ``msg`` now, or ``None`` if they have no room yet.

        Raises:
            beampipe.message.key.KeyExpressionError: the key cannot be evaluated on ``msg``.
        """
        peers = self.peers
        if self.routing == "round_robin":
            best: Peer | None = None
            n = len(peers)
            for i in range(n):
                peer = peers[(self._turn + i) % n]
                if peer.can_take(size) and (best is None or peer.credit > best.credit):
                    best = peer
            if best is None:
                return None
            self._turn = (peers.index(best) + 1) % n
            return [best]
        if self.routing == "by_key":
            assert self.key is not None
            peer = peers[replica_of(self.key(msg), self.replicas)]
            return [peer] if peer.can_take(size) else None
        return peers if all(p.can_take(size) for p in peers) else None


@dataclass
class OutputPort:
    """The sending end of one output port: a bound ROUTER and its downstream peers.

    ``routes`` holds one :class:`Route` per connection (keyed by the downstream input,
    ``"node.port"``). Sending waits until every replica of every connection has said HELLO, so
    that the first messages are not routed to whichever peer happened to connect first.

    Counters: :attr:`sent` messages and :attr:`sent_bytes` (wire bytes, once per message however
    many peers got it).
    """

    name: str
    socket: zmq.Socket
    routes: dict[str, Route]
    peers: dict[bytes, Peer] = field(default_factory=dict)
    sent: int = 0
    sent_bytes: int = 0
    in_flight: int = 0
    """Messages sent to peers and not yet processed by them (a broadcast counts per peer)."""
    in_flight_bytes: int = 0
    peak_in_flight: int = 0
    peak_in_flight_bytes: int = 0
    _connected: bool = False

    @classmethod
    def bind(cls, ctx: zmq.Context, name: str, address: str, routes: list[Route]) -> OutputPort:
        """Bind to ``address`` (``ipc://path`` or ``tcp://host:*``); the bound endpoint is
        :attr:`endpoint`."""
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(address)
        return cls(name, sock, {r.target: r for r in routes})

    @property
    def endpoint(self) -> str:
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def connected(self) -> bool:
        """Every expected downstream replica has said HELLO."""
        if not self._connected:
            self._connected = all(len(r.peers) >= r.replicas for r in self.routes.values())
            if self._connected:
                for route in self.routes.values():
                    route.peers.sort(key=lambda p: p.replica)
        return self._connected

    def handle(self, frames: list[bytes]) -> None:
        """Process one control frame sequence from a downstream peer.

        Raises:
            TransportError: a HELLO from a peer of no connection of this port, a second HELLO
                for the same replica, or another frame from a peer that did not say HELLO.
        """
        identity, kind, *body = frames
        if kind == HELLO:
            hello = msgpack.unpackb(body[0])
            route = self.routes.get(hello["target"])
            if route is None:
                raise TransportError(
                    f"output {self.name!r}: HELLO from unexpected peer {hello['target']!r}"
                )
            if any(p.replica == hello["replica"] for p in route.peers):
                raise TransportError(
                    f"output {self.name!r}: second HELLO from {hello['target']!r} replica "
                    f"{hello['replica']}"
                )
            peer = Peer(
                identity,
                hello["target"],
                hello["replica"],
                hello["credit"],
                hello["bytes"],
                hello["credit"],
                hello["bytes"],
            )
            self.peers[identity] = peer
            route.peers.append(peer)
            return
        peer = self.peers.get(identity)
        if peer is None:
            raise TransportError(f"output {self.name!r}: {kind!r} from unknown peer {identity!r}")
        if kind == CREDIT:
            n, nbytes = (int(x) for x in body[0].split())
            peer.credit += n
            peer.byte_credit += nbytes
            self.in_flight -= n
            self.in_flight_bytes -= nbytes
        elif kind == BYE:
            peer.finished = True
        else:
            raise TransportError(f"output {self.name!r}: unexpected frame kind {kind!r}")

    def try_send(self, item: Item, frames: list[Any]) -> bool:
        """Send ``item``, encoded as ``frames``, if it can go now; False if it must wait.

        A message goes to the replica(s) its connection's :class:`Route` chooses, on every
        connection at once or not at all; stream markers go to every peer without credit.
        """
        if not self.connected:
            return False
        if not isinstance(item, Message):
            for peer in self.peers.values():
                self.socket.send_multipart([peer.identity, ITEM, *frames], copy=False)
            return True
        size = wire_size(frames)
        chosen: list[Peer] = []
        for route in self.routes.values():
            peers = route.choose(item, size)
            if peers is None:
                return False
            chosen.extend(peers)
        copy = len(frames) == 1  # only a header: copying beats zero-copy bookkeeping
        send = self.socket.send
        last = len(frames) - 1
        for peer in chosen:
            peer.credit -= 1
            peer.byte_credit -= size
            # send() per part: about half the cost of send_multipart's flag handling
            send(peer.identity, _SNDMORE)
            send(ITEM, _SNDMORE)
            for i, frame in enumerate(frames):
                send(frame, 0 if i == last else _SNDMORE, copy=copy)
        self.sent += 1
        self.sent_bytes += size
        self.in_flight += len(chosen)
        self.in_flight_bytes += size * len(chosen)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, self.in_flight_bytes)
        return True

    def finish(self) -> None:
        """Tell every peer that nothing more will come."""
        for peer in self.peers.values():
            self.socket.send_multipart([peer.identity, FINISHED])

    @property
    def all_bye(self) -> bool:
        return all(p.finished for p in self.peers.values())


def wire_size(frames: list[Any]) -> int:
    """Bytes of an encoded item (``bytes`` or ``zmq.Frame`` / buffer frames)."""
    if len(frames) == 1:
        return len(frames[0])
    return sum(len(f) if isinstance(f, bytes | zmq.Frame) else memoryview(f).nbytes for f in frames)


@dataclass(eq=False)
class InputChannel:
    """The receiving end of one pipe: a DEALER connected to one upstream output port."""

    port: str
    upstream: str
    """``node#replica.port`` of the upstream output, for error messages."""
    socket: zmq.Socket
    window: int
    byte_window: int
    finished: bool = False
    last_size: int = 0
    """Wire bytes of the last item received."""
    _processed: int = 0
    _processed_bytes: int = 0

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
    ) -> InputChannel:
        """Connect to ``endpoint`` and introduce ourselves as ``target`` replica ``replica``
        with a credit of ``window`` messages and ``byte_window`` bytes."""
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        hello = {"target": target, "replica": replica, "credit": window, "bytes": byte_window}
        sock.send_multipart([HELLO, msgpack.packb(hello)])
        return cls(port, upstream, sock, window, byte_window)

    def receive(self, block: bool = True) -> Item | None:
        """Receive one frame sequence: the item it carries, or None for FINISHED (answered
        with BYE; :attr:`finished` is then True).

        Raises:
            zmq.Again: ``block=False`` and nothing is waiting.
            beampipe.message.WireError: the frames are not a valid item.
            TransportError: an unknown frame kind.
        """
        kind, *frames = self.socket.recv_multipart(0 if block else zmq.NOBLOCK, copy=False)
        kind_bytes = kind.bytes
        if kind_bytes == ITEM:
            self.last_size = wire_size(frames)
            try:
                return decode(frames)
            except WireError as exc:
                raise WireError(f"from {self.upstream} on input {self.port!r}: {exc}") from exc
        if kind_bytes == FINISHED:
            self.finished = True
            self._return_credit()
            self.socket.send_multipart([BYE])
            return None
        raise TransportError(f"input {self.port!r} from {self.upstream}: frame {kind_bytes!r}")

    def processed(self, size: int) -> None:
        """One message of ``size`` wire bytes was processed: return credit in batches of half
        the window (messages or bytes, whichever fills first)."""
        self._processed += 1
        self._processed_bytes += size
        if self._processed >= max(1, self.window // 2) or (
            self._processed_bytes >= self.byte_window // 2
        ):
            self._return_credit()

    def _return_credit(self) -> None:
        if self._processed:
            credit = b"%d %d" % (self._processed, self._processed_bytes)
            self.socket.send_multipart([CREDIT, credit])
            self._processed = 0
            self._processed_bytes = 0
