"""Event formation: joining the messages of several input ports that share (stream, id).

A node whose worker sets ``events = True`` gets one :class:`~beampipe.Event` per (stream, id)
holding the message of each of its input ports. Parts wait here until every port has delivered;
if some are still missing ``timeout`` seconds after the first part arrived (or when the stream
ends), the event is delivered incomplete, naming the missing ports, or dropped, as the node's
``events: {incomplete: deliver | drop}`` says. Both are counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from beampipe.message import Event, Message


@dataclass
class _Pending:
    deadline: float
    parts: dict[str, tuple[Message, Any]] = field(default_factory=dict)


@dataclass
class Formed:
    """An event and the opaque ``token`` of each part (given back to return credit)."""

    event: Event
    tokens: list[Any]
    drop: bool = False
    """The event is incomplete and the node's policy drops it."""


class EventBuilder:
    """Joins the parts of events for one node.

    Args:
        ports: the input ports an event has a part from.
        timeout: seconds to wait for the missing parts after the first one arrived.
        incomplete: ``"deliver"`` or ``"drop"`` an incomplete event.
    """

    def __init__(self, ports: Sequence[str], timeout: float, incomplete: str) -> None:
        self.ports = tuple(ports)
        self.timeout = timeout
        self.drop = incomplete == "drop"
        self.incomplete = 0
        """Events delivered incomplete."""
        self.dropped = 0
        """Incomplete events dropped."""
        self._pending: OrderedDict[tuple[str, int], _Pending] = OrderedDict()

    @property
    def held(self) -> int:
        """Parts waiting for the rest of their event."""
        return sum(len(p.parts) for p in self._pending.values())

    @property
    def next_deadline(self) -> float | None:
        """When the oldest waiting event times out (monotonic seconds), if any."""
        for pending in self._pending.values():
            return pending.deadline
        return None

    def add(self, port: str, msg: Message, token: Any, now: float) -> list[Formed]:
        """Part ``msg`` arrived on ``port`` at monotonic time ``now``: the events it completes.

        A second part for a port already held (a duplicate) completes nothing: the event held
        so far goes on incomplete, and the new part starts a new one.
        """
        key = (msg.stream, msg.id)
        pending = self._pending.get(key)
        out = []
        if pending is not None and port in pending.parts:
            out.append(self._form(key, self._pending.pop(key)))
            pending = None
        if pending is None:
            pending = self._pending[key] = _Pending(now + self.timeout)
        pending.parts[port] = (msg, token)
        if len(pending.parts) == len(self.ports):
            out.append(self._form(key, self._pending.pop(key)))
        return out

    def expire(self, now: float) -> list[Formed]:
        """The events whose deadline has passed at monotonic time ``now``."""
        out = []
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                break
            del self._pending[key]
            out.append(self._form(key, pending))
        return out

    def flush(self, stream: str) -> list[Formed]:
        """The events of ``stream`` still waiting (its end has come), in arrival order."""
        keys = [k for k in self._pending if k[0] == stream]
        return [self._form(k, self._pending.pop(k)) for k in keys]

    def _form(self, key: tuple[str, int], pending: _Pending) -> Formed:
        messages = {p: m for p, (m, _) in pending.parts.items()}
        missing = tuple(p for p in self.ports if p not in messages)
        tokens = [t for _, t in pending.parts.values()]
        event = Event(key[0], key[1], messages, missing)
        if missing and self.drop:
            self.dropped += 1
            return Formed(event, tokens, drop=True)
        if missing:
            self.incomplete += 1
        return Formed(event, tokens)
