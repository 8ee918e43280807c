"""Gap detection: the ids a source issued for a stream are 1, 2, 3, ... (as ASAP::O message ids
are); an id the source skipped is waited for and then reported missing.

A source may deliver ids out of order (a detector stream with several sending threads, an
ASAP::O consumer that got a resent message), so a skipped id is not missing at once: it is
*awaited* from the moment a larger id is issued, and reported missing after ``timeout`` seconds
or when the stream ends without it (its :class:`~beampipe.EndOfStream` names the last id). An
awaited id that arrives later is just out of order; one that arrives after it was reported is
*late*.

Skipped ids are kept as ranges (``first``, ``last``), so a jump of a billion ids costs one range,
not a billion entries, and is reported as one range.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

Range = tuple[int, int]
"""Ids ``first`` to ``last``, both included."""


@dataclass
class _Awaited:
    first: int
    last: int
    since: float
    """Monotonic time (s) from which these ids are awaited."""


@dataclass
class _Ids:
    floor: int = 0
    """Every id up to this one was issued or reported missing."""
    top: int = 0
    """The largest id issued."""
    above: set[int] = field(default_factory=set)
    """Ids issued above ``floor``."""
    awaited: list[_Awaited] = field(default_factory=list)
    """Skipped ids above ``floor``, as disjoint ranges in id order."""


class GapDetector:
    """Per stream: which ids were issued, which are awaited, which are missing."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._streams: dict[str, _Ids] = {}
        self.reported: dict[str, list[Range]] = {}
        """Ranges of ids reported missing, per stream, in id order (to recognise them if they
        come late)."""

    def was_reported(self, stream: str, msg_id: int) -> bool:
        """Whether id ``msg_id`` of ``stream`` was reported missing."""
        ranges = self.reported.get(stream, ())
        i = bisect.bisect_right(ranges, (msg_id, float("inf"))) - 1
        return i >= 0 and ranges[i][0] <= msg_id <= ranges[i][1]

    def issued(self, stream: str, msg_id: int, now: float) -> bool:
        """Id ``msg_id`` of ``stream`` was issued; False if it had been reported missing."""
        if self.was_reported(stream, msg_id):
            return False
        ids = self._streams.setdefault(stream, _Ids())
        if msg_id <= ids.floor or msg_id in ids.above:
            return True
        start = max(ids.floor, ids.top) + 1
        if msg_id > start:
            ids.awaited.append(_Awaited(start, msg_id - 1, now))
        elif msg_id < start:
            _unawait(ids.awaited, msg_id)
        ids.top = max(ids.top, msg_id)
        ids.above.add(msg_id)
        self._advance(stream, ids)
        return True

    @property
    def next_deadline(self) -> float | None:
        """When the oldest awaited id is due, if any is awaited."""
        starts = [a.since for ids in self._streams.values() for a in ids.awaited]
        return min(starts) + self.timeout if starts else None

    def expired(self, now: float) -> list[tuple[str, int, int]]:
        """``(stream, first, last)``: ranges of ids awaited for ``timeout`` seconds, now
        reported missing."""
        out = []
        for stream, ids in self._streams.items():
            due = [a for a in ids.awaited if now - a.since >= self.timeout]
            if not due:
                continue
            ids.awaited = [a for a in ids.awaited if now - a.since < self.timeout]
            for a in due:
                self._report(stream, a.first, a.last)
                out.append((stream, a.first, a.last))
            self._advance(stream, ids)
        return out

    def end(self, stream: str, last_id: int) -> list[Range]:
        """``stream`` ended with ``last_id``: the ranges of ids up to it never issued, now
        reported missing."""
        ids = self._streams.pop(stream, _Ids())
        missing = [(a.first, min(a.last, last_id)) for a in ids.awaited if a.first <= last_id]
        start = max(ids.floor, ids.top) + 1
        if last_id >= start:
            missing.append((start, last_id))
        for first, last in missing:
            self._report(stream, first, last)
        return missing

    def _report(self, stream: str, first: int, last: int) -> None:
        bisect.insort(self.reported.setdefault(stream, []), (first, last))

    def _advance(self, stream: str, ids: _Ids) -> None:
        """Raise ``ids.floor`` over the ids issued and the ranges reported just above it."""
        ranges = self.reported.get(stream, [])
        while True:
            if ids.floor + 1 in ids.above:
                ids.floor += 1
                ids.above.discard(ids.floor)
                continue
            i = bisect.bisect_left(ranges, (ids.floor + 1, ids.floor + 1))
            if i < len(ranges) and ranges[i][0] == ids.floor + 1:
                ids.floor = ranges[i][1]
                continue
            return


def _unawait(awaited: list[_Awaited], msg_id: int) -> None:
    """Take ``msg_id`` out of the awaited range holding it (split in two if inside)."""
    for i, a in enumerate(awaited):
        if a.first <= msg_id <= a.last:
            parts = [
                _Awaited(first, last, a.since)
                for first, last in ((a.first, msg_id - 1), (msg_id + 1, a.last))
                if first <= last
            ]
            awaited[i : i + 1] = parts
            return
