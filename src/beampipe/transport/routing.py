"""Which replica(s) of a connection's target get a message: ``round_robin``, ``by_key`` or
``broadcast`` (see ``docs/dataflow.md``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from beampipe.message import Message
from beampipe.message.key import KeyFunction, replica_of
from beampipe.transport.peer import Peer, Retained


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
    (:meth:`beampipe.transport.OutputPort.forget`)."""
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
