"""The sending end of an output port: its downstream peers, their credit, the items retained
until acknowledged and sent again, and replicas that join, leave or die while it runs.

The protocol is :mod:`beampipe.transport.protocol`'s; a connection's choice of replicas,
:mod:`~beampipe.transport.routing`'s; each pipe's state, a
:class:`~beampipe.transport.peer.Peer`; batching, :mod:`~beampipe.transport.batching`'s.

A retained item may carry a *token* (:class:`~beampipe.transport.peer.Token`) that is told when
every peer has acknowledged it, which is how a node chains the acknowledgement of its input to
that of its outputs. Peers that come and go:

* a replica whose process died is marked lost (:meth:`OutputPort.lost`) and sent nothing; when
  its restarted process says HELLO again, everything it had not acknowledged is sent to it
  again, renumbered from 1;
* a replica that died for good is forgotten (:meth:`OutputPort.forget`): the messages it had
  not acknowledged wait in its connection's backlog and go to the other replicas first; after
  the last of them of a stream this port has ended, the replicas that got them are sent the
  stream's end again, so that they end it again after them; the caller is told once every one
  of them is acknowledged (downstream nodes then stop waiting for the dead replica);
* a replica that says HELLO to a port already sending *joins*: it first gets the ends of the
  streams the port ended recently and the starts of the open ones, so that it, and the nodes
  after it, account for every stream;
* a replica being removed is *retired* (:meth:`OutputPort.retire`): it is sent FINISHED at once
  and no further message or marker; once it said BYE and acknowledged everything it is
  forgotten.

A port that has finished (:meth:`OutputPort.finish`) tells its peers FINISHED only once every
item it sent is acknowledged: until then a replica that dies has its messages taken by the
others, which are still there to take them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from beampipe.message import Item, Message, StreamStart
from beampipe.transport.batching import BatchedSender
from beampipe.transport.peer import Peer, Token
from beampipe.transport.protocol import (
    Control,
    Hello,
    TransportError,
    decode_ack,
    decode_credit,
    decode_hello,
    wire_size,
)
from beampipe.transport.redelivery import Redelivering
from beampipe.transport.routing import Route
from beampipe.transport.security import Gate

_HELLO, _CREDIT, _ACK, _BYE = Control.HELLO, Control.CREDIT, Control.ACK, Control.BYE
"""Looked up once: an enum member costs about 80 ns to look up on its class (Python 3.11)."""
ENDED_KEPT = 1024
"""Ended streams an output port remembers for replicas that join later."""


@dataclass
class OutputPort(Redelivering):
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
    resent: int = 0
    """Items sent again to a restarted peer."""
    rejected: int = 0
    """Frames dropped because they came from no known peer or are not of the protocol."""
    on_reject: Callable[[str], None] | None = None
    """Told what was dropped, each time (the node logs it)."""
    open_streams: dict[str, tuple[Item, list[Any]]] = field(default_factory=dict)
    """The StreamStart (and its frames) of each stream this port started and did not end:
    sent to a replica that joins later (:meth:`beampipe.launch.Launcher.scale`)."""
    ended_streams: dict[str, tuple[Item, list[Any]]] = field(default_factory=dict)
    """The EndOfStream of the last :data:`ENDED_KEPT` streams this port ended: also sent to a
    replica that joins later, so that downstream nodes waiting for its end of those streams
    get it."""
    backlogged: int = 0
    """Messages of dead replicas waiting in the routes' backlogs to go to the others (checked
    on every send, so counted rather than looked up)."""
    _connected: bool = False
    _finished: bool = False
    """:meth:`finish` was called: nothing more is sent."""
    _told: bool = False
    """The peers were told FINISHED (once everything was acknowledged)."""
    _resent_to: dict[str, set[Peer]] = field(default_factory=dict)
    """Per stream, the peers that got a dead replica's messages of it (:meth:`pump`)."""
    _sender: BatchedSender = field(init=False)

    def __post_init__(self) -> None:
        self._sender = BatchedSender(self.socket)

    @classmethod
    def bind(
        cls,
        ctx: zmq.Context,
        name: str,
        address: str,
        routes: list[Route],
        gate: Gate | None = None,
    ) -> OutputPort:
        """Bind to ``address`` (``ipc://path`` or ``tcp://host:*``); the bound endpoint is
        :attr:`endpoint`. With a ``gate``, only peers with its credentials connect
        (:mod:`beampipe.transport.security`)."""
        sock = ctx.socket(zmq.ROUTER)
        if gate is not None:
            gate.serve(sock, f"output {name!r}")
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

        What is not from a known peer, or not a frame of the protocol (a HELLO of no
        connection of this port or not in its format, a frame from a peer that did not say
        HELLO or was forgotten, an unknown frame kind), is dropped, counted in
        :attr:`rejected` and reported to :attr:`on_reject`: it cannot have been sent any
        data, so nothing is lost, and the port goes on.
        """
        identity, kind, *body = frames
        if kind == _HELLO:
            try:
                self._hello(identity, decode_hello(body[0]))
            except (TransportError, ValueError, TypeError, KeyError, IndexError) as exc:
                self._reject(f"a HELLO that is not one of this port's peers ({exc})")
            return
        peer = self.peers.get(identity)
        if peer is None:
            self._reject(f"{kind!r} from unknown peer {identity!r}")
            return
        if kind == _CREDIT:
            n, nbytes = decode_credit(body[0])
            peer.credit += n
            peer.byte_credit += nbytes
            self.in_flight -= n
            self.in_flight_bytes -= nbytes
            if self.backlogged:
                self.pump()
        elif kind == _ACK:
            peer.acknowledge(decode_ack(body[0]))
            if self._finished and not self._told:
                self._tell_finished()
        elif kind == _BYE:
            peer.finished = True
        else:
            self._reject(f"frame kind {kind!r} from {peer.target} replica {peer.replica}")
            return
        if peer.retiring and peer.finished and not peer.retained:
            self._remove(peer)

    def _reject(self, what: str) -> None:
        self.rejected += 1
        if self.on_reject is not None:
            self.on_reject(f"output {self.name!r}: dropped {what}")

    def _remove(self, peer: Peer) -> None:
        """A retired peer is done with everything: forget it."""
        self._sender.drop_batch(peer)
        del self.peers[peer.identity]
        self.routes[peer.target].peers.remove(peer)
        self.in_flight -= peer.window - peer.credit
        self.in_flight_bytes -= peer.byte_window - peer.byte_credit

    def _hello(self, identity: bytes, hello: Hello) -> None:
        route = self.routes.get(hello.target)
        if route is None:
            raise TransportError(
                f"output {self.name!r}: HELLO from unexpected peer {hello.target!r}"
            )
        known = next((p for p in route.peers if p.replica == hello.replica), None)
        if known is not None:
            self._revive(known, identity, hello)
            return
        peer = Peer(
            identity,
            hello.target,
            hello.replica,
            hello.credit,
            hello.byte_credit,
            hello.credit,
            hello.byte_credit,
        )
        self.peers[identity] = peer
        route.peers.append(peer)
        if self._connected:  # a replica added while running: it joins the open streams
            self._join(peer)

    def _join(self, peer: Peer) -> None:
        """Send a replica that joined while this port runs the ends of recently ended streams
        and the starts of open ones (then FINISHED if this port has finished), so that it
        and the nodes after it account for every stream."""
        for item, frames in [*self.ended_streams.values(), *self.open_streams.values()]:
            peer.retain(item, frames, wire_size(frames), None)
            self._sender.put(peer, frames, True)
        self._sender.flush_peer(peer)
        if self._told:
            self._sender.finish(peer)

    def retire(self, target: str, replica: int) -> None:
        """Remove ``target`` replica ``replica`` (scaling down): it gets no more messages and
        is told FINISHED; once it said BYE and acknowledged everything it is forgotten."""
        for peer in list(self.peers.values()):
            if peer.target == target and peer.replica == replica and not peer.retiring:
                peer.retiring = True
                if peer.alive:
                    self._sender.flush_peer(peer)
                    self._sender.finish(peer)
                if peer.finished and not peer.retained:
                    self._remove(peer)

    def _revive(self, peer: Peer, identity: bytes, hello: Hello) -> None:
        """A restarted replica said HELLO: send it again everything it had not acknowledged
        (numbered from 1), then FINISHED if this port has finished."""
        self._sender.drop_batch(peer)  # retained: sent again below
        del self.peers[peer.identity]
        self.peers[identity] = peer
        self.in_flight -= peer.window - peer.credit
        self.in_flight_bytes -= peer.byte_window - peer.byte_credit
        peer.identity = identity
        peer.credit = peer.window = hello.credit
        peer.byte_credit = peer.byte_window = hello.byte_credit
        peer.alive, peer.finished = True, False
        peer.restarts += 1
        peer.seq = 0
        for i, kept in enumerate(peer.retained, 1):
            kept.seq = peer.seq = i
            if isinstance(kept.item, Message):
                peer.credit -= 1
                peer.byte_credit -= kept.size
                self.in_flight += 1
                self.in_flight_bytes += kept.size
            self._sender.put(peer, kept.frames, True)
            self.resent += 1
        self._sender.flush_peer(peer)
        if self._told or peer.retiring:
            self._sender.finish(peer)

    def lost(self, target: str, replica: int) -> None:
        """The process of ``target`` replica ``replica`` died: send it nothing until it says
        HELLO again (what it had not acknowledged is kept for then)."""
        for peer in self.peers.values():
            if peer.target == target and peer.replica == replica:
                peer.alive = False
                self._sender.drop_batch(peer)  # retained: sent when it comes back

    def try_send(
        self, item: Item, frames: list[Any], token: Token | None = None, hold: bool = False
    ) -> bool:
        """Send ``item``, encoded as ``frames``, if it can go now; False if it must wait.

        A message goes to the replica(s) its connection's :class:`Route` chooses, on every
        connection at once or not at all; stream markers go to every peer without credit (a
        lost peer gets them when it comes back). Each peer retains the item until it is
        acknowledged; ``token`` is held once per peer meanwhile. ``hold``: more items follow
        soon, so a small item may wait in its peer's batch until :meth:`flush`.
        """
        if not self.connected or self.backlogged:  # a dead replica's messages go first
            return False
        if not isinstance(item, Message):
            self._send_marker(item, frames, token, hold)
            return True
        size = wire_size(frames)
        chosen: list[Peer] = []
        for route in self.routes.values():
            peers = route.choose(item, size)
            if peers is None:
                return False
            chosen.extend(peers)
        put = self._sender.put
        for peer in chosen:
            peer.credit -= 1
            peer.byte_credit -= size
            peer.retain(item, frames, size, token)
            put(peer, frames, hold)
        self.sent += 1
        self.sent_bytes += size
        self.in_flight += len(chosen)
        self.in_flight_bytes += size * len(chosen)
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        if self.in_flight_bytes > self.peak_in_flight_bytes:
            self.peak_in_flight_bytes = self.in_flight_bytes
        return True

    def _send_marker(self, item: Item, frames: list[Any], token: Token | None, hold: bool) -> None:
        """Send a stream marker to every peer that is not retiring (a lost one retains it for
        its restarted process) and remember it for replicas that join later."""
        size = wire_size(frames)
        if isinstance(item, StreamStart):
            self.open_streams[item.stream] = (item, frames)
        else:
            self.open_streams.pop(item.stream, None)
            self.ended_streams[item.stream] = (item, frames)
            if len(self.ended_streams) > ENDED_KEPT:
                del self.ended_streams[next(iter(self.ended_streams))]
        for peer in self.peers.values():
            if peer.retiring:
                continue
            peer.retain(item, frames, size, token)
            if peer.alive:
                self._sender.put(peer, frames, hold)

    def flush(self) -> None:
        """Send every open batch."""
        self._sender.flush()

    def finish(self) -> None:
        """Nothing more will be sent: tell every peer so (a lost peer when it comes back)
        once every item sent is acknowledged."""
        self._finished = True
        self.flush()
        self._tell_finished()

    def _tell_finished(self) -> None:
        """Send FINISHED to the peers if nothing waits for an acknowledgement any more."""
        if self.backlogged or any(p.retained for p in self.peers.values()):
            return
        self._told = True
        for peer in self.peers.values():
            if peer.alive and not peer.retiring:
                self._sender.finish(peer)

    @property
    def drained(self) -> bool:
        """Every peer said BYE and acknowledged everything: the port may close."""
        return not self.backlogged and all(
            p.finished and not p.retained for p in self.peers.values()
        )

    @property
    def retained(self) -> int:
        """Items (per peer) sent and not yet acknowledged."""
        return sum(len(p.retained) for p in self.peers.values())
