"""Moving messages between node processes over ZeroMQ, with credit-based flow control.

Topology: every *output port* of a node binds one ROUTER socket; every *input port* of a
downstream node connects one DEALER socket to each upstream output port that feeds it. Each
(upstream output, downstream input replica) pair is thus one ordered, bidirectional pipe:

* downstream -> upstream: ``HELLO`` (who I am, initial credit), ``CREDIT n`` after processing,
  ``BYE`` after the upstream said it is finished;
* upstream -> downstream: ``ITEM`` (a message or stream marker in the wire encoding of
  :mod:`beampipe.message.wire`) and ``FINISHED`` (nothing more will come).

A data message is only sent to a peer that has credit, so every receiver holds at most ``window``
unprocessed messages per upstream peer and a slow sink slows the source instead of growing
memory: the credit-based flow control of the ZeroMQ guide, ch. 7 ("Credit-Based Flow Control",
https://zguide.zeromq.org/docs/chapter7/). Stream markers travel on every pipe (broadcast) and do
not take credit. Socket high-water marks are disabled: credit is the bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
import zmq

from beampipe.message import Item, Message, decode, encode

ITEM, HELLO, CREDIT, FINISHED, BYE = b"I", b"H", b"C", b"F", b"B"


class TransportError(RuntimeError):
    """A peer broke the protocol (unknown peer, unexpected frame)."""


@dataclass(slots=True)
class Peer:
    """One downstream input-port replica, as seen by an output port."""

    identity: bytes
    target: str
    """``node.port`` of the connection it belongs to."""
    replica: int
    credit: int
    finished: bool = False


@dataclass
class OutputPort:
    """The sending end of one output port: a bound ROUTER and its downstream peers.

    ``expected`` gives, per connection (``"node.port"`` of the downstream input), how many
    replicas will connect. Sending waits until all of them have said HELLO, so that the first
    messages are not routed to whichever peer happened to connect first.
    """

    name: str
    socket: zmq.Socket
    expected: dict[str, int]
    peers: dict[bytes, Peer] = field(default_factory=dict)
    sent: int = 0
    _connected: bool = False

    @classmethod
    def bind(
        cls, ctx: zmq.Context, name: str, address: str, expected: dict[str, int]
    ) -> OutputPort:
        """Bind to ``address`` (``ipc://path`` or ``tcp://host:*``); the bound endpoint is
        :attr:`endpoint`."""
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(address)
        return cls(name, sock, expected)

    @property
    def endpoint(self) -> str:
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def connected(self) -> bool:
        """Every expected downstream replica has said HELLO."""
        if not self._connected:
            counts: dict[str, int] = {}
            for peer in self.peers.values():
                counts[peer.target] = counts.get(peer.target, 0) + 1
            self._connected = all(counts.get(t, 0) >= n for t, n in self.expected.items())
        return self._connected

    def handle(self, frames: list[bytes]) -> None:
        """Process one control frame sequence from a downstream peer."""
        identity, kind, *body = frames
        if kind == HELLO:
            hello = msgpack.unpackb(body[0])
            if hello["target"] not in self.expected:
                raise TransportError(
                    f"output {self.name!r}: HELLO from unexpected peer {hello['target']!r}"
                )
            self.peers[identity] = Peer(
                identity, hello["target"], hello["replica"], hello["credit"]
            )
            return
        peer = self.peers.get(identity)
        if peer is None:
            raise TransportError(f"output {self.name!r}: {kind!r} from unknown peer {identity!r}")
        if kind == CREDIT:
            peer.credit += int(body[0])
        elif kind == BYE:
            peer.finished = True
        else:
            raise TransportError(f"output {self.name!r}: unexpected frame kind {kind!r}")

    def try_send(self, item: Item) -> bool:
        """Send ``item`` if every connection has a peer with credit; False if it must wait.

        A message goes to one replica per connection (the one with most credit: least loaded);
        stream markers go to every peer.
        """
        if not self.connected:
            return False
        if not isinstance(item, Message):
            frames = encode(item)
            for peer in self.peers.values():
                self.socket.send_multipart([peer.identity, ITEM, *frames], copy=False)
            return True
        chosen = []
        for target in self.expected:
            best = max(
                (p for p in self.peers.values() if p.target == target),
                key=lambda p: p.credit,
            )
            if best.credit <= 0:
                return False
            chosen.append(best)
        frames = encode(item)
        for peer in chosen:
            peer.credit -= 1
            self.socket.send_multipart([peer.identity, ITEM, *frames], copy=False)
        self.sent += 1
        return True

    def finish(self) -> None:
        """Tell every peer that nothing more will come."""
        for peer in self.peers.values():
            self.socket.send_multipart([peer.identity, FINISHED])

    @property
    def all_bye(self) -> bool:
        return all(p.finished for p in self.peers.values())


@dataclass(eq=False)
class InputChannel:
    """The receiving end of one pipe: a DEALER connected to one upstream output port."""

    port: str
    upstream: str
    """``node#replica.port`` of the upstream output, for error messages."""
    socket: zmq.Socket
    window: int
    _processed: int = 0
    finished: bool = False

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
    ) -> InputChannel:
        """Connect to ``endpoint`` and introduce ourselves as ``target`` replica ``replica``
        with ``window`` messages of credit."""
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        hello = {"target": target, "replica": replica, "credit": window}
        sock.send_multipart([HELLO, msgpack.packb(hello)])
        return cls(port, upstream, sock, window)

    def receive(self) -> Item | None:
        """Receive one frame sequence: the item it carries, or None for FINISHED (answered
        with BYE; :attr:`finished` is then True).

        Raises:
            beampipe.message.WireError: the frames are not a valid item.
            TransportError: an unknown frame kind.
        """
        kind, *frames = self.socket.recv_multipart(copy=False)
        kind_bytes = kind.bytes
        if kind_bytes == ITEM:
            return decode(frames)
        if kind_bytes == FINISHED:
            self.finished = True
            self.socket.send_multipart([BYE])
            return None
        raise TransportError(f"input {self.port!r} from {self.upstream}: frame {kind_bytes!r}")

    def processed(self) -> None:
        """One message was processed: return credit in batches of half the window."""
        self._processed += 1
        if self._processed >= max(1, self.window // 2):
            self.socket.send_multipart([CREDIT, str(self._processed).encode()])
            self._processed = 0
