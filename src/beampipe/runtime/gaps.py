"""Gap detection: the ids a source issued for a stream are 1, 2, 3, ... (as ASAP::O message ids
are); an id the source skipped is waited for and then reported missing.

A source may deliver ids out of order (a detector stream with several sending threads, an
ASAP::O consumer that got a resent message), so a skipped id is not missing at once: it is
*awaited* from the moment a larger id is issued, and reported missing after ``timeout`` seconds
or when the stream ends without it (its :class:`~beampipe.EndOfStream` names the last id). An
awaited id that arrives later is just out of order; one that arrives after it was reported is
*late*.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Ids:
    floor: int = 0
    """Every id up to this one was issued or reported missing."""
    top: int = 0
    """The largest id issued."""
    above: set[int] = field(default_factory=set)
    """Ids issued above ``floor``."""
    awaited: dict[int, float] = field(default_factory=dict)
    """Skipped ids above ``floor`` and since when (monotonic s) they are awaited."""


class GapDetector:
    """Per stream: which ids were issued, which are awaited, which are missing."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._streams: dict[str, _Ids] = {}
        self.reported: dict[str, set[int]] = {}
        """Ids reported missing, per stream (to recognise them if they come late)."""

    def issued(self, stream: str, msg_id: int, now: float) -> bool:
        """Id ``msg_id`` of ``stream`` was issued; False if it had been reported missing."""
        if msg_id in self.reported.get(stream, ()):
            return False
        ids = self._streams.setdefault(stream, _Ids())
        if msg_id <= ids.floor:
            return True
        ids.awaited.pop(msg_id, None)
        for skipped in range(max(ids.floor, ids.top) + 1, msg_id):
            ids.awaited.setdefault(skipped, now)
        ids.top = max(ids.top, msg_id)
        ids.above.add(msg_id)
        while ids.floor + 1 in ids.above:
            ids.floor += 1
            ids.above.discard(ids.floor)
        return True

    @property
    def next_deadline(self) -> float | None:
        """When the oldest awaited id is due, if any is awaited."""
        starts = [t for ids in self._streams.values() for t in ids.awaited.values()]
        return min(starts) + self.timeout if starts else None

    def expired(self, now: float) -> list[tuple[str, int]]:
        """``(stream, id)`` awaited for ``timeout`` seconds: now reported missing."""
        out = []
        for stream, ids in self._streams.items():
            for msg_id, since in list(ids.awaited.items()):
                if now - since >= self.timeout:
                    out.append((stream, msg_id))
        for stream, msg_id in out:
            self._missing(stream, msg_id)
        return out

    def end(self, stream: str, last_id: int) -> list[int]:
        """``stream`` ended with ``last_id``: the ids up to it never issued, reported missing."""
        ids = self._streams.pop(stream, _Ids())
        missing = [i for i in range(ids.floor + 1, last_id + 1) if i not in ids.above]
        self.reported.setdefault(stream, set()).update(missing)
        return missing

    def _missing(self, stream: str, msg_id: int) -> None:
        ids = self._streams[stream]
        del ids.awaited[msg_id]
        self.reported.setdefault(stream, set()).add(msg_id)
        ids.above.add(msg_id)
        while ids.floor + 1 in ids.above:
            ids.floor += 1
            ids.above.discard(ids.floor)
