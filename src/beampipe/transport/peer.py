"""One pipe as its sender sees it: the receiver's credit, the items it retains until they are
acknowledged, and the items held for its next batch."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from beampipe.message import Item


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
    """False from :meth:`beampipe.transport.OutputPort.lost` until the restarted replica says
    HELLO."""
    seq: int = 0
    """Items sent on this pipe (the number of the last one)."""
    retained: deque[Retained] = field(default_factory=deque)
    restarts: int = 0
    retiring: bool = False
    """Being removed (:meth:`beampipe.transport.OutputPort.retire`): told FINISHED, gets
    nothing more."""
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
        """Keep ``item`` (sent as ``frames``, ``size`` wire bytes) as this pipe's next item
        until it is acknowledged; ``token`` holds it meanwhile."""
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
