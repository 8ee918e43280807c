"""Restoring id order on an input port fed by several pipes (the replicas upstream).

Each pipe delivers its messages of a stream in increasing id order (an upstream replica handles
its share of the stream in the order it received it), but the pipes interleave arbitrarily. A
buffered message may therefore go on as soon as no pipe can still deliver a smaller id:

* its id is the next one (last delivered + 1), or
* every pipe of the port has either ended the stream or already delivered an id at least as
  large (a *watermark*, as in stream processors such as Apache Flink).

When an upstream replica dies for good, the messages it had not finished go to the other
replicas again, so their pipes are no longer in id order; the open streams then release only the
next id (:meth:`Reorder.pipe_gone`).

So sparse ids (a worker that drops messages) cost latency, not correctness. Two escapes keep a
stalled pipe (a hung upstream replica) from stalling the port for ever:

* when more than ``capacity`` messages of a stream wait, the lowest goes on anyway (memory stays
  bounded; with credit the windows usually bound the buffer first);
* when a stream has waited ``timeout`` seconds without handing anything on, everything it
  holds goes on (:meth:`Reorder.expire`), and the pipes that had not caught up are left out of
  the watermark until they deliver again.

A message handed on past an id that was not there is counted in :attr:`Reorder.out_of_order`;
an id that comes after the port went past it is handed on at once and counted in
:attr:`Reorder.late`.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SKIPPED_KEPT = 1024
"""Ranges of skipped ids kept per stream to tell a late id (older ones are forgotten)."""

Entry = tuple[int, Any]
"""``(pipe, payload)`` handed back in id order."""


@dataclass
class _Stream:
    heap: list[tuple[int, int, int, Any]] = field(default_factory=list)
    """``(id, arrival number, pipe, payload)``."""
    seen: dict[int, int] = field(default_factory=dict)
    """Highest id delivered by each pipe."""
    ended: set[int] = field(default_factory=set)
    last: int = 0
    """Highest id handed on."""
    strict: bool = False
    """Only the next id goes on (the pipes are not in id order any more)."""
    since: float | None = None
    """Monotonic time since which messages have waited without any going on."""
    stalled: set[int] = field(default_factory=set)
    """Pipes left out of the watermark since an :meth:`Reorder.expire`, until they deliver."""
    skipped: list[tuple[int, int]] = field(default_factory=list)
    """Ranges of ids (first, last) the port went past without having them, increasing; the
    last :data:`SKIPPED_KEPT`."""


class Reorder:
    """The reorder buffer of one ordered input port.

    Args:
        pipes: the indices of the pipes feeding the port.
        capacity: messages per stream that may wait (>= 1).
        timeout: seconds a stream may wait without handing anything on before everything it
            holds goes on (:meth:`expire`); 0: no limit.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        pipes: Sequence[int],
        capacity: int,
        timeout: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipes = frozenset(pipes)
        self.capacity = capacity
        self.timeout = timeout
        self.clock = clock
        self.held = 0
        """Messages waiting, all streams together."""
        self.out_of_order = 0
        """Messages handed on past an id that had not come."""
        self.late = 0
        """Messages whose id the port had gone past (:meth:`expire`, or a full buffer)."""
        self._streams: dict[str, _Stream] = {}
        self._ended: set[str] = set()
        self._arrival = itertools.count()

    def push(self, pipe: int, stream: str, msg_id: int, payload: Any) -> list[Entry]:
        """A message arrived on ``pipe``; the entries that may go on now, in id order.

        A message of a stream every pipe has already ended (a late message) goes on at once.
        """
        if stream in self._ended:
            return [(pipe, payload)]
        state = self._streams.setdefault(stream, _Stream())
        state.seen[pipe] = max(state.seen.get(pipe, 0), msg_id)
        state.stalled.discard(pipe)
        if msg_id <= state.last and _within(state.skipped, msg_id):
            self.late += 1
        heapq.heappush(state.heap, (msg_id, next(self._arrival), pipe, payload))
        self.held += 1
        return self._release(state)

    def end(self, pipe: int, stream: str) -> list[Entry]:
        """``pipe`` ended ``stream``; the entries that may go on now. When every pipe has
        ended it, everything left goes on and the stream is forgotten (a later end of it is
        nothing to do)."""
        if stream in self._ended:
            return []
        state = self._streams.setdefault(stream, _Stream())
        state.ended.add(pipe)
        ready = self._release(state)
        if state.ended >= self.pipes:
            del self._streams[stream]
            self._ended.add(stream)
        return ready

    def pipe_gone(self, pipe: int) -> list[Any]:
        """The replica behind ``pipe`` died for good: the ids it had not finished come again
        on the other pipes, out of their order, so the watermark no longer holds for the open
        streams; each goes on in strict id order (or when the buffer is full) until it ends.
        Returns the payloads held, whose credit the caller gives back (see
        :meth:`is_strict`). Call :meth:`end` for the pipe and each stream after this."""
        held = []
        for state in self._streams.values():
            state.strict = True
            held.extend(payload for _, _, _, payload in state.heap)
        return held

    def is_strict(self, stream: str) -> bool:
        """Whether ``stream`` goes on in strict id order (see :meth:`pipe_gone`): its held
        messages are then bounded by ``capacity``, not by the pipes' credit, which they give
        back on arrival (else the next id could wait behind full windows)."""
        state = self._streams.get(stream)
        return state is not None and state.strict

    @property
    def deadline(self) -> float | None:
        """When the stream that has waited longest times out (:attr:`clock` seconds), if
        any waits and there is a timeout."""
        if not self.timeout:
            return None
        waiting = [s.since for s in self._streams.values() if s.since is not None]
        return min(waiting) + self.timeout if waiting else None

    def expire(self) -> list[Entry]:
        """The entries of every stream that has waited :attr:`timeout` seconds without
        handing anything on, all of them, in id order; the pipes that had not delivered as
        far are left out of the watermark until they deliver again."""
        now = self.clock()
        ready = []
        for state in self._streams.values():
            if not self.timeout or state.since is None or now - state.since < self.timeout:
                continue
            top = max(msg_id for msg_id, *_ in state.heap)
            state.stalled = {
                p for p in self.pipes if p not in state.ended and state.seen.get(p, 0) < top
            }
            ready.extend(self._release(state, everything=True))
        return ready

    def _release(self, state: _Stream, everything: bool = False) -> list[Entry]:
        ready = []
        heap = state.heap
        while heap:
            msg_id = heap[0][0]
            full = everything or len(heap) > self.capacity
            done = state.ended >= self.pipes
            safe = done or (not state.strict and self._safe(state, msg_id))
            if not (msg_id <= state.last + 1 or full or safe):
                break
            _, _, pipe, payload = heapq.heappop(heap)
            if msg_id > state.last + 1 and full:
                self.out_of_order += 1
                state.skipped.append((state.last + 1, msg_id - 1))
                del state.skipped[:-SKIPPED_KEPT]
            state.last = max(state.last, msg_id)
            self.held -= 1
            ready.append((pipe, payload))
        if not heap:
            state.since = None
        elif ready or state.since is None:
            state.since = self.clock()
        return ready

    def _safe(self, state: _Stream, msg_id: int) -> bool:
        """No pipe can still deliver an id below ``msg_id`` (a stalled pipe is not waited
        for)."""
        return all(
            p in state.ended or p in state.stalled or state.seen.get(p, 0) >= msg_id
            for p in self.pipes
        )


def _within(ranges: list[tuple[int, int]], msg_id: int) -> bool:
    """Whether ``msg_id`` lies in one of ``ranges`` (increasing, disjoint)."""
    k = bisect.bisect_right(ranges, (msg_id, math.inf)) - 1
    return k >= 0 and ranges[k][0] <= msg_id <= ranges[k][1]
