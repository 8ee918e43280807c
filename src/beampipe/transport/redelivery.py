"""An output port's replicas that died for good: the messages each had not acknowledged go to
the other replicas of its connection, and the streams they belong to end again after them.

:meth:`Redelivering.forget` moves what a dead peer retained into its connection's backlog, and
:meth:`Redelivering.pump` sends the backlog to replicas with credit before anything new. A
peer had ended the streams whose end marker it got; it opens such a stream again with the
dead replica's messages of it, so after the last of them it is sent the stream's end again
(:meth:`Redelivering._end_again`). The caller of ``forget`` is told once every message passed on
is acknowledged: downstream nodes then stop waiting for the dead replica
(docs/reliability.md, "Acknowledgements and crash recovery").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from beampipe.message import Message
from beampipe.transport.peer import Token
from beampipe.transport.protocol import wire_size


class Redelivering:
    """The part of :class:`~beampipe.transport.output.OutputPort` that passes a dead
    replica's messages on (its fields are the port's)."""

    def forget(self, target: str, replica: int, settled: Callable[[], None]) -> None:
        """The process of ``target`` replica ``replica`` died for good (no restart): forget
        it, and send the messages it had not acknowledged to the other replicas of its
        connection (:meth:`pump`). Stream markers kept for it are dropped: the streams end
        downstream without it once its messages are through. ``settled`` is called once
        every one of those messages is acknowledged by another replica (at once if there
        are none)."""
        redelivery = _Redelivery(settled)
        for peer in list(self.peers.values()):
            if peer.target != target or peer.replica != replica:
                continue
            self._remove(peer)
            backlog = self.routes[target].backlog
            for kept in peer.retained:
                if isinstance(kept.item, Message):
                    kept.token = _Passed(kept.token, redelivery)
                    redelivery.outstanding += 1
                    backlog.append(kept)
                    self.backlogged += 1
                elif kept.token is not None:
                    kept.token.release()
            peer.retained.clear()
        self.pump()
        if not redelivery.outstanding:
            settled()
        if self._finished and not self._told:
            self._tell_finished()

    def pump(self) -> None:
        """Send what waits in the backlogs to replicas with credit; after the last of a stream
        this port has ended, that stream's end again to the replicas that got them."""
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
                self._sender.put(peer, kept.frames, True)
                self._resent_to.setdefault(kept.item.stream, set()).add(peer)
        if self._resent_to:
            self._end_again()
        self.flush()

    def _end_again(self) -> None:
        """Send the end of each stream this port has ended again to the peers that got a dead
        replica's messages of it, once none of them waits in a backlog any more: the peers had
        ended the stream, open it again with those messages and end it after them. (A stream
        still open here ends in order: nothing is sent while a backlog waits.)"""
        waiting = {k.item.stream for r in self.routes.values() for k in r.backlog}
        for stream in [s for s in self._resent_to if s not in waiting]:
            peers = self._resent_to.pop(stream)
            ended = self.ended_streams.get(stream)
            if ended is None:
                continue
            item, frames = ended
            for peer in peers:
                if self.peers.get(peer.identity) is peer and not peer.retiring:
                    peer.retain(item, frames, wire_size(frames), None)
                    if peer.alive:
                        self._sender.put(peer, frames, True)


class _Redelivery:
    """The messages a dead replica had not acknowledged, counted until each is acknowledged
    by another replica; then ``settled`` is called."""

    __slots__ = ("outstanding", "settled")

    def __init__(self, settled: Callable[[], None]) -> None:
        self.outstanding = 0
        self.settled = settled


@dataclass(slots=True)
class _Passed:
    """The token of a message passed on from a dead replica: releases the message's own token
    and counts it in its :class:`_Redelivery`."""

    token: Token | None
    redelivery: _Redelivery

    def hold(self) -> None:
        if self.token is not None:
            self.token.hold()

    def release(self) -> None:
        if self.token is not None:
            self.token.release()
        redelivery = self.redelivery
        redelivery.outstanding -= 1
        if not redelivery.outstanding:
            redelivery.settled()
