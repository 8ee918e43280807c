"""Putting an output port's items on its ROUTER socket, peer by peer, small ones in batches.

Batching (for small items: ZeroMQ's and Python's cost is per message, not per byte): an item
that is a single frame of at most :data:`BATCH_ITEM_BYTES` is held in its peer's open batch when
the caller says that more items are on their way (``hold``: a worker draining input it has
already received). The batch goes out when it holds :data:`BATCH_ITEMS` items or
:data:`BATCH_BYTES` bytes, before any other frame to that peer (so the order on the pipe is the
order sent), and at :meth:`BatchedSender.flush`, which the node calls (through
:meth:`beampipe.transport.OutputPort.flush`) before it waits for anything. The framing is
:func:`beampipe.transport.protocol.encode_batch`'s.
"""

from __future__ import annotations

from typing import Any

import zmq

from beampipe.transport.peer import Peer
from beampipe.transport.protocol import FINISHED, encode_batch

BATCH_ITEM_BYTES = 16384
"""Items (single-frame) up to this size may travel in a batch."""
BATCH_ITEMS = 64
"""Items in one batch at most ..."""
BATCH_BYTES = 65536
"""... and bytes: a batch is sent when it reaches either. Below pyzmq's copy threshold
(``zmq.COPY_THRESHOLD``), so that a batch is copied once and needs no zero-copy tracking."""
_SNDMORE = int(zmq.SNDMORE)


class BatchedSender:
    """Sends items and FINISHED to the peers of one ROUTER ``socket``, each peer's in the
    order given; holds small items in the peers' open batches (see the module docstring).

    A peer whose process is gone (ZeroMQ cannot route to it) is marked lost (``alive`` False)
    and sent nothing: its items stay retained for its restarted process.
    """

    def __init__(self, socket: zmq.Socket) -> None:
        self.socket = socket
        self._batched: list[Peer] = []
        """Peers with an open batch."""

    def put(self, peer: Peer, frames: list[Any], hold: bool) -> None:
        """Send one item's ``frames`` to ``peer`` after what its batch holds; a small item
        joins the batch instead if ``hold`` or the batch is open."""
        batch = peer.batch
        if len(frames) == 1 and len(frames[0]) <= BATCH_ITEM_BYTES:
            if hold or batch:
                if not batch:
                    self._batched.append(peer)
                batch.append(frames[0])
                peer.batch_bytes += len(frames[0])
                if not hold or len(batch) >= BATCH_ITEMS or peer.batch_bytes >= BATCH_BYTES:
                    self.flush_peer(peer)
                return
        elif batch:
            self.flush_peer(peer)
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
            self.flush_peer(batched[-1])

    def flush_peer(self, peer: Peer) -> None:
        """Send ``peer``'s open batch, if any (one item alone, as an item)."""
        batch = peer.batch
        if not batch:
            return
        self.drop_batch(peer)
        if self._reachable(peer):
            self.socket.send(batch[0] if len(batch) == 1 else encode_batch(batch))

    def drop_batch(self, peer: Peer) -> None:
        """Close ``peer``'s open batch without sending it (its items stay retained)."""
        if peer.batch:
            self._batched.remove(peer)
            peer.batch = []
            peer.batch_bytes = 0

    def finish(self, peer: Peer) -> None:
        """Send ``peer`` FINISHED."""
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
