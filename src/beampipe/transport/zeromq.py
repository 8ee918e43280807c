"""Moving messages between node processes over ZeroMQ: credit-based flow control and
acknowledgements.

Topology: every *output port* of a node binds one ROUTER socket; every *input port* of a
downstream node connects one DEALER socket to each upstream output port that feeds it. Each
(upstream output, downstream input replica) pair is thus one ordered, bidirectional pipe:

* downstream -> upstream: ``HELLO`` (who I am, initial credit in messages and bytes),
  ``CREDIT n bytes`` after processing, ``ACK k`` (items 1..k of this pipe are done with),
  ``BYE`` after the upstream said it is finished;
* upstream -> downstream: items (messages and stream markers), one or a batch of several per
  ZeroMQ message, and ``FINISHED`` (nothing more will come).

The upstream -> downstream messages carry no kind frame; the first byte of their first frame
tells them apart (after the ROUTER's routing frame):

* an *item*: its frames in the wire encoding of :mod:`beampipe.message.wire`, a msgpack map
  header (first byte ``0x80``-``0x8f``, ``0xde`` or ``0xdf``) and its array buffers;
* a *batch*: one frame, a msgpack array (first byte ``0x90``-``0x9f``, ``0xdc`` or ``0xdd``) of
  ``bin`` objects, each the header of one item that has no buffer frame, in the order sent;
* ``F``: FINISHED.

Batching (for small items: ZeroMQ's and Python's cost is per message, not per byte): an item
that is a single frame of at most :data:`BATCH_ITEM_BYTES` is held in its peer's open batch when
the caller says that more items are on their way (``try_send(..., hold=True)``: a worker
draining input it has already received). The batch goes out when it holds :data:`BATCH_ITEMS`
items or :data:`BATCH_BYTES` bytes, before any other frame to that peer (so the order on the
pipe is the order sent), and at :meth:`OutputPort.flush`, which the node calls before it waits
for anything. Credit and retention are per item, as if each were sent on its own.

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
acknowledgement latency does not throttle throughput. When a receiver process dies, its peer is
marked lost (:meth:`OutputPort.lost`); when its restarted process says HELLO again, everything
it had not acknowledged is sent to it again, renumbered from 1. A retained item may carry a
*token* (:class:`Token`) that is told when every peer has acknowledged it, which is how a node
chains the acknowledgement of its input to that of its outputs.

Scaling while running: a replica that says HELLO to a port already sending *joins*: it first gets
the ends of the streams the port ended recently and the starts of the open ones, so that it, and
the nodes after it, account for every stream. A replica being removed is *retired*: it is sent
FINISHED at once and no further message or marker; once it said BYE and acknowledged everything
it is forgotten. A receiver counts a pipe that finished as having ended every stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import zmq

from beampipe.message import Item, Message, StreamStart, WireError, decode
from beampipe.message.key import KeyFunction, replica_of

HELLO, CREDIT, ACK, FINISHED, BYE = b"H", b"C", b"A", b"F", b"B"
ENDED_KEPT = 1024
"""Ended streams an output port remembers for replicas that join later."""
BATCH_ITEM_BYTES = 16384
"""Items (single-frame) up to this size may travel in a batch."""
BATCH_ITEMS = 64
"""Items in one batch at most ..."""
BATCH_BYTES = 65536
"""... and bytes: a batch is sent when it reaches either. Below pyzmq's copy threshold
(``zmq.COPY_THRESHOLD``), so that a batch is copied once and needs no zero-copy tracking."""
_SNDMORE = int(zmq.SNDMORE)
_BATCH_FIRST = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
"""First bytes of a msgpack array: a batch."""


class Token(Protocol):
    """Told when the items sent on its behalf are acknowledged (see :class:`Retained`)."""

    def hold(self) -> None:
        """One more item (to one peer) waits for an acknowledgement."""

    def release(self) -> None:
        """One of them was acknowledged."""


@dataclass(slots=True)
class Retained:
    """An item sent to a peer and not yet acknowledged: kept to be sent again."""

    seq: int
    item: Item
    frames: list[Any]
    size: int
    token: Token | None


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
    alive: bool = True
    """False from :meth:`OutputPort.lost` until the restarted replica says HELLO."""
    seq: int = 0
    """Items sent on this pipe (the number of the last one)."""
    retained: deque[Retained] = field(default_factory=deque)
    restarts: int = 0
    retiring: bool = False
    """Being removed (:meth:`OutputPort.retire`): told FINISHED, gets nothing more."""
    batch: list[bytes] = field(default_factory=list)
    """Headers of the items held for the next batch to this peer (sent, retained, not yet
    on the socket)."""
    batch_bytes: int = 0

    def can_take(self, size: int) -> bool:
        """Room for a message of ``size`` bytes: a message credit, and byte credit for it,
        unless nothing is in flight (so a message bigger than the byte window still moves)."""
        if self.credit <= 0 or not self.alive or self.retiring:
            return False
        return self.byte_credit >= size or self.credit >= self.window

    def retain(self, item: Item, frames: list[Any], size: int, token: Token | None) -> None:
        self.seq += 1
        self.retained.append(Retained(self.seq, item, frames, size, token))
        if token is not None:
            token.hold()

    def adopt(self, kept: Retained) -> None:
        """Retain an item that another (dead) peer had not acknowledged; its token's hold
        passes to this peer."""
        self.seq += 1
        kept.seq = self.seq
        self.retained.append(kept)

    def acknowledge(self, upto: int) -> None:
        """Items ``1..upto`` are done with: drop them and release their tokens."""
        retained = self.retained
        while retained and retained[0].seq <= upto:
            token = retained.popleft().token
            if token is not None:
                token.release()


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
    backlog: deque[Retained] = field(default_factory=deque)
    """Messages a dead replica had not acknowledged, waiting to go to the others
    (:meth:`OutputPort.forget`)."""
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
        peers = [p for p in peers if not p.retiring]
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
    resent: int = 0
    """Items sent again to a restarted peer."""
    rejected: int = 0
    """Frames dropped because they came from no known peer or are not of the protocol."""
    on_reject: Callable[[str], None] | None = None
    """Told what was dropped, each time (the node logs it)."""
    open_streams: dict[str, tuple[Item, list[Any]]] = field(default_factory=dict)
    """The StreamStart (and its frames) of each stream this port started and did not end:
    sent to a replica that joins later (:meth:`beampipe.manager.LocalLauncher.scale`)."""
    ended_streams: dict[str, tuple[Item, list[Any]]] = field(default_factory=dict)
    """The EndOfStream of the last :data:`ENDED_KEPT` streams this port ended: also sent to a
    replica that joins later, so that downstream nodes waiting for its end of those streams
    get it."""
    backlogged: int = 0
    """Messages of dead replicas waiting in the routes' backlogs to go to the others (checked
    on every send, so counted rather than looked up)."""
    _connected: bool = False
    _finished: bool = False
    _batched: list[Peer] = field(default_factory=list)
    """Peers with an open batch."""

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

        What is not from a known peer, or not a frame of the protocol (a HELLO of no
        connection of this port or not in its format, a frame from a peer that did not say
        HELLO or was forgotten, an unknown frame kind), is dropped, counted in
        :attr:`rejected` and reported to :attr:`on_reject`: it cannot have been sent any
        data, so nothing is lost, and the port goes on.
        """
        identity, kind, *body = frames
        if kind == HELLO:
            try:
                hello = msgpack.unpackb(body[0])
                self._hello(identity, hello)
            except (TransportError, ValueError, TypeError, KeyError, IndexError) as exc:
                self._reject(f"a HELLO that is not one of this port's peers ({exc})")
            return
        peer = self.peers.get(identity)
        if peer is None:
            self._reject(f"{kind!r} from unknown peer {identity!r}")
            return
        if kind == CREDIT:
            n, nbytes = map(int, body[0].split())
            peer.credit += n
            peer.byte_credit += nbytes
            self.in_flight -= n
            self.in_flight_bytes -= nbytes
            if self.backlogged:
                self.pump()
        elif kind == ACK:
            peer.acknowledge(int(body[0]))
        elif kind == BYE:
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
        self._drop_batch(peer)
        del self.peers[peer.identity]
        self.routes[peer.target].peers.remove(peer)
        self.in_flight -= peer.window - peer.credit
        self.in_flight_bytes -= peer.byte_window - peer.byte_credit

    def _hello(self, identity: bytes, hello: dict[str, Any]) -> None:
        route = self.routes.get(hello["target"])
        if route is None:
            raise TransportError(
                f"output {self.name!r}: HELLO from unexpected peer {hello['target']!r}"
            )
        known = next((p for p in route.peers if p.replica == hello["replica"]), None)
        if known is not None:
            self._revive(known, identity, hello)
            return
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
        if self._connected:  # a replica added while running: it joins the open streams
            self._join(peer)

    def _join(self, peer: Peer) -> None:
        """Send a replica that joined while this port runs the ends of recently ended streams
        and the starts of open ones (then FINISHED if this port has finished), so that it
        and the nodes after it account for every stream."""
        for item, frames in [*self.ended_streams.values(), *self.open_streams.values()]:
            peer.retain(item, frames, wire_size(frames), None)
            self._put(peer, frames, True)
        self._flush_peer(peer)
        if self._finished:
            self._send_finished(peer)

    def retire(self, target: str, replica: int) -> None:
        """Remove ``target`` replica ``replica`` (scaling down): it gets no more messages and
        is told FINISHED; once it said BYE and acknowledged everything it is forgotten."""
        for peer in list(self.peers.values()):
            if peer.target == target and peer.replica == replica and not peer.retiring:
                peer.retiring = True
                if peer.alive:
                    self._flush_peer(peer)
                    self._send_finished(peer)
                if peer.finished and not peer.retained:
                    self._remove(peer)

    def _revive(self, peer: Peer, identity: bytes, hello: dict[str, Any]) -> None:
        """A restarted replica said HELLO: send it again everything it had not acknowledged
        (numbered from 1), then FINISHED if this port has finished."""
        self._drop_batch(peer)  # retained: sent again below
        del self.peers[peer.identity]
        self.peers[identity] = peer
        self.in_flight -= peer.window - peer.credit
        self.in_flight_bytes -= peer.byte_window - peer.byte_credit
        peer.identity = identity
        peer.credit = peer.window = hello["credit"]
        peer.byte_credit = peer.byte_window = hello["bytes"]
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
            self._put(peer, kept.frames, True)
            self.resent += 1
        self._flush_peer(peer)
        if self._finished or peer.retiring:
            self._send_finished(peer)

    def forget(self, target: str, replica: int) -> None:
        """The process of ``target`` replica ``replica`` died for good (no restart): forget
        it, and send the messages it had not acknowledged to the other replicas of its
        connection (:meth:`pump`). Stream markers kept for it are dropped: the downstream
        nodes count its pipes as finished.

        Raises:
            TransportError: this port has finished (its other peers may be gone), so the
                messages cannot be sent again.
        """
        for peer in list(self.peers.values()):
            if peer.target != target or peer.replica != replica:
                continue
            unacknowledged = sum(isinstance(k.item, Message) for k in peer.retained)
            if self._finished and unacknowledged:
                raise TransportError(
                    f"output {self.name!r}: {target} replica {replica} died with "
                    f"{unacknowledged} unacknowledged messages after this port finished; "
                    "they cannot be sent to another replica (use restart: on-failure)"
                )
            self._remove(peer)
            backlog = self.routes[target].backlog
            for kept in peer.retained:
                if isinstance(kept.item, Message):
                    backlog.append(kept)
                    self.backlogged += 1
                elif kept.token is not None:
                    kept.token.release()
            peer.retained.clear()
        self.pump()

    def pump(self) -> None:
        """Send what waits in the backlogs to replicas with credit."""
        for route in self.routes.values():
            backlog = route.backlog
            while backlog:
                kept = backlog[0]
                peers = route.choose(kept.item, kept.size)  # type: ignore[arg-type]
                if peers is None:
                    break
                backlog.popleft()
                self.backlogged -= 1
                peer = peers[0]
                peer.credit -= 1
                peer.byte_credit -= kept.size
                peer.adopt(kept)
                self.in_flight += 1
                self.in_flight_bytes += kept.size
                self.resent += 1
                self._put(peer, kept.frames, True)
        self.flush()

    def lost(self, target: str, replica: int) -> None:
        """The process of ``target`` replica ``replica`` died: send it nothing until it says
        HELLO again (what it had not acknowledged is kept for then)."""
        for peer in self.peers.values():
            if peer.target == target and peer.replica == replica:
                peer.alive = False
                self._drop_batch(peer)  # retained: sent when it comes back

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
                    self._put(peer, frames, hold)
            return True
        size = wire_size(frames)
        chosen: list[Peer] = []
        for route in self.routes.values():
            peers = route.choose(item, size)
            if peers is None:
                return False
            chosen.extend(peers)
        for peer in chosen:
            peer.credit -= 1
            peer.byte_credit -= size
            peer.retain(item, frames, size, token)
            self._put(peer, frames, hold)
        self.sent += 1
        self.sent_bytes += size
        self.in_flight += len(chosen)
        self.in_flight_bytes += size * len(chosen)
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        if self.in_flight_bytes > self.peak_in_flight_bytes:
            self.peak_in_flight_bytes = self.in_flight_bytes
        return True

    def _put(self, peer: Peer, frames: list[Any], hold: bool) -> None:
        """Send one item's ``frames`` to ``peer`` after what its batch holds; a small item
        joins the batch instead if ``hold`` or the batch is open (see the module docstring).
        An unreachable peer is marked lost: the item is retained for its restarted process."""
        batch = peer.batch
        if len(frames) == 1 and len(frames[0]) <= BATCH_ITEM_BYTES:
            if hold or batch:
                if not batch:
                    self._batched.append(peer)
                batch.append(frames[0])
                peer.batch_bytes += len(frames[0])
                if not hold or len(batch) >= BATCH_ITEMS or peer.batch_bytes >= BATCH_BYTES:
                    self._flush_peer(peer)
                return
        elif batch:
            self._flush_peer(peer)
        if self._reachable(peer):
            # send() per part: about half the cost of send_multipart's flag handling;
            # only a header: copying beats zero-copy bookkeeping
            send = self.socket.send
            last = len(frames) - 1
            copy = not last
            for i, frame in enumerate(frames):
                send(frame, 0 if i == last else _SNDMORE, copy=copy)

    def flush(self) -> None:
        """Send every open batch."""
        batched = self._batched
        while batched:
            self._flush_peer(batched[-1])

    def _flush_peer(self, peer: Peer) -> None:
        """Send ``peer``'s open batch, if any (one item alone, as an item)."""
        batch = peer.batch
        if not batch:
            return
        self._drop_batch(peer)
        if self._reachable(peer):
            self.socket.send(batch[0] if len(batch) == 1 else msgpack.packb(batch))

    def _drop_batch(self, peer: Peer) -> None:
        if peer.batch:
            self._batched.remove(peer)
            peer.batch = []
            peer.batch_bytes = 0

    def _send_finished(self, peer: Peer) -> None:
        if self._reachable(peer):
            self.socket.send(FINISHED)

    def _reachable(self, peer: Peer) -> bool:
        """Start a message to ``peer`` (its routing frame); False, and the peer marked lost,
        if its process is gone (ZeroMQ knew before the launcher said so)."""
        try:
            self.socket.send(peer.identity, _SNDMORE)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            peer.alive = False
            return False
        return True

    def finish(self) -> None:
        """Tell every peer that nothing more will come (a lost peer when it comes back)."""
        self._finished = True
        self.flush()
        for peer in self.peers.values():
            if peer.alive and not peer.retiring:
                self._send_finished(peer)

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


def wire_size(frames: list[Any]) -> int:
    """Bytes of an encoded item (``bytes`` or ``zmq.Frame`` / buffer frames)."""
    if len(frames) == 1:
        return len(frames[0])
    return sum(len(f) if isinstance(f, bytes | zmq.Frame) else memoryview(f).nbytes for f in frames)


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
    ) -> InputChannel:
        """Connect to ``endpoint`` and introduce ourselves as ``target`` replica ``replica``
        with a credit of ``window`` messages and ``byte_window`` bytes."""
        hello = {"target": target, "replica": replica, "credit": window, "bytes": byte_window}
        channel = cls(
            port, upstream, ctx.socket(zmq.DEALER), window, byte_window, msgpack.packb(hello)
        )
        channel._open(endpoint)
        return channel

    def _open(self, endpoint: str) -> None:
        sock = self.socket
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        sock.send_multipart([HELLO, self.hello])

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
        if data and data[0] in _BATCH_FIRST:
            try:
                headers = msgpack.unpackb(data)
                if not headers or not all(isinstance(h, bytes) for h in headers):
                    raise TypeError("not a non-empty array of bin")
            except Exception as exc:
                raise TransportError(
                    f"input {self.port!r} from {self.upstream}: unreadable batch: {exc}"
                ) from exc
            batch.extend(headers)
            return self._item([batch.popleft()])
        if data == FINISHED:
            self.finished = True
            self._return_credit()
            self.socket.send_multipart([BYE])
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
            self.socket.send(ACK, _SNDMORE)
            self.socket.send(b"%d" % self._acked)
            self._ack_sent = self._acked

    @property
    def unacknowledged(self) -> int:
        """Items received and not yet acknowledged."""
        return self.received - self._ack_sent

    def _return_credit(self) -> None:
        if self._processed:
            self.socket.send(CREDIT, _SNDMORE)
            self.socket.send(b"%d %d" % (self._processed, self._processed_bytes))
            self._processed = 0
            self._processed_bytes = 0
