"""What a node needs to acknowledge its inputs and to drop duplicates.

* :class:`Receipt`: an item as received: its pipe, wire size and number on the pipe; it gives
  the item's credit back (once) and acknowledges it.
* :class:`Origin`: the input(s) a worker call was made for. Every result sent on their behalf
  holds the origin (once per peer it went to); the inputs are acknowledged upstream when the
  call has returned and every result was acknowledged downstream. So a message is always kept
  by some sender until its consequences are safe further down, and a process that dies loses
  nothing: its unacknowledged inputs are sent again to its restarted self.
* :func:`lineage`: the fingerprint that makes a recomputed result recognisable (and
  :func:`lineage_of` the one a worker call starts from).
* :class:`Seen`: a sink's memory of recent lineages, to drop what redelivery sent twice.
"""

from __future__ import annotations

import zlib
from collections import deque

from beampipe.message import Event, Message
from beampipe.transport import InputChannel

MASK = (1 << 63) - 1
SEEN_WINDOW = 1 << 16
"""Lineages remembered per (upstream node, input port) of a sink. Duplicates can only come from
redelivery of unacknowledged items, far fewer than this (windows times pipeline depth)."""


class Receipt:
    """One received item: the pipe it came on, its wire bytes and its number in the pipe's
    epoch; made right after :meth:`InputChannel.receive` returned the item.

    Flow control and acknowledgement are separate: :meth:`credit` lets the pipe's sender send
    another item (the item was processed, or waits where credit must not bound it), and
    :meth:`complete` says the item is done with (its consequences are safe further down).
    """

    __slots__ = ("channel", "credited", "epoch", "seq", "size")

    def __init__(self, channel: InputChannel) -> None:
        self.channel = channel
        self.size = channel.last_size
        self.seq = channel.received
        self.epoch = channel.epoch
        self.credited = False
        """Its credit went back (see :meth:`credit`)."""

    def credit(self) -> None:
        """Give the item's credit back to its pipe, unless that was done already."""
        if not self.credited:
            self.credited = True
            self.channel.processed(self.size)

    def complete(self) -> None:
        """The item is done with: acknowledged at the pipe's next ``flush_acks``."""
        self.channel.complete(self.seq, self.epoch)

    def discard(self) -> None:
        """The item is done with without being processed (a duplicate, a dropped event part, a
        frame sequence that could not be decoded): its credit back, and acknowledged."""
        self.credit()
        self.channel.complete(self.seq, self.epoch)


class Held:
    """Work whose results are held by downstream peers: told each hold and release
    (:class:`beampipe.transport.peer.Token`), and :meth:`done` when everything was sent; once
    both are over, :meth:`_complete` runs, once."""

    __slots__ = ("outstanding", "running")

    def __init__(self) -> None:
        self.outstanding = 0
        self.running = True

    def hold(self) -> None:
        self.outstanding += 1

    def release(self) -> None:
        self.outstanding -= 1
        if not self.outstanding and not self.running:
            self._complete()

    def done(self) -> None:
        """The work is over and its results were sent."""
        self.running = False
        if not self.outstanding:
            self._complete()

    def _complete(self) -> None:
        raise NotImplementedError


class Origin(Held):
    """The inputs of one worker call, acknowledged when the call is over and its results are
    acknowledged downstream (see the module docstring)."""

    __slots__ = ("receipts",)

    def __init__(self, receipts: list[Receipt]) -> None:
        super().__init__()
        self.receipts = receipts

    def credit(self) -> None:
        """The worker call returned: give the inputs' credit back (their acknowledgement
        waits for :meth:`done` and the results')."""
        for receipt in self.receipts:
            receipt.credit()

    def _complete(self) -> None:
        for receipt in self.receipts:
            receipt.complete()


def lineage(*parts: int | str) -> int:
    """A 63-bit fingerprint of ``parts`` (ints, or strings hashed with CRC-32), the same in
    every process (unlike ``hash()`` of a string)."""
    for part in parts:
        if isinstance(part, str):
            return hash(tuple([_crc32(p) if isinstance(p, str) else p for p in parts])) & MASK
    return hash(parts) & MASK


def lineage_of(item: Message | Event) -> int:
    """The lineage a worker call on ``item`` starts from: a message's own; for an event, the
    fingerprint of its parts' lineages in the order of their ports' names."""
    if isinstance(item, Message):
        return item.lineage
    return lineage(*(item.messages[p].lineage for p in sorted(item.messages)))


def _crc32(text: str) -> int:
    crc = _CRCS.get(text)
    if crc is None:
        crc = zlib.crc32(text.encode())
        if len(_CRCS) < 4096:
            _CRCS[text] = crc
    return crc


_CRCS: dict[str, int] = {}
"""CRC-32 of the strings seen (node and stream names), up to 4096 of them."""


class Seen:
    """The last :data:`SEEN_WINDOW` lineages that reached a sink from one (upstream node, input
    port)."""

    __slots__ = ("keys", "order")

    def __init__(self) -> None:
        self.keys: set[int] = set()
        self.order: deque[int] = deque()

    def add(self, key: int) -> bool:
        """Remember ``key``; False if it was already there (a duplicate)."""
        if key in self.keys:
            return False
        self.keys.add(key)
        self.order.append(key)
        if len(self.order) > SEEN_WINDOW:
            self.keys.discard(self.order.popleft())
        return True
