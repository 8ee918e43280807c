"""Reducers: fold the results of all upstream replicas into one, per stream or per group.

A reducer is the "reduce" of a constrained map-reduce (MAX IV's Dranspose): the map runs as many
replicas, each seeing part of a stream; the reducer runs as one process, receives everything they
emit, and folds it into a state (a sum image, an XRF map, a merged spectrum) that it emits
periodically and at the end. The pipeline refuses ``replicas`` > 1 on a reducer node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field

from beampipe.message import Item, Message
from beampipe.worker.base import Output, Params, Worker, by_port

State = TypeVar("State")


class ReducerParams(Params):
    """When a reducer emits, besides the end of each group: after every ``every`` messages
    folded into a group, and/or when ``interval`` seconds have passed since the group's last
    emission (checked as messages arrive). ``0`` turns either off."""

    every: int = Field(default=0, ge=0)
    interval: float = Field(default=0.0, ge=0)


@dataclass
class _Group(Generic[State]):
    state: State
    folded: int = 0
    last_id: int = 0
    """The highest id folded."""
    emitted: int = 0
    streams: set[str] = field(default_factory=set)
    since_emit: int = 0
    t_emit: float = 0.0


class Reducer(Worker, Generic[State]):
    """Base class of reducers. Implement :meth:`start`, :meth:`reduce` and :meth:`result`.

    Messages are folded per *group*: by default a group is a stream (its result is emitted when
    the stream ends), but :meth:`group` may map messages of several streams to one group (e.g.
    all repeats of a scan); such a group's final result is emitted when every input has
    finished. Results left without stream and id by :meth:`result` get the group's name as
    stream (a stream of the reducer's own when it is not an input stream) and, as id, the
    highest id folded (a group of one stream) or the number of the emission (1, 2, ...).

    Class attributes:
        reducer: ``True``; the pipeline checks it to refuse ``replicas`` > 1.
    """

    Params: ClassVar[type[Params]] = ReducerParams
    reducer: ClassVar[bool] = True
    params: ReducerParams

    def __init__(self, params: Params, name: str = "") -> None:
        super().__init__(params, name)
        self._groups: dict[str, _Group[State]] = {}
        self._metadata: dict[str, dict[str, Any]] = {}

    # -- what a reducer implements -------------------------------------------------------------

    def group(self, msg: Message) -> str:
        """The group ``msg`` folds into; default: its stream."""
        return msg.stream

    def start(self, group: str, metadata: dict[str, Any]) -> State:
        """The initial state of ``group``; ``metadata`` is its first stream's header."""
        raise NotImplementedError(f"{type(self).__name__}.start")

    def reduce(self, state: State, msg: Message) -> State:
        """Fold ``msg`` into ``state``; return the new state (may be ``state`` itself)."""
        raise NotImplementedError(f"{type(self).__name__}.reduce")

    def result(self, group: str, state: State, final: bool) -> Output:
        """What to emit for ``group`` now; ``final`` at the group's end."""
        raise NotImplementedError(f"{type(self).__name__}.result")

    # -- the Worker hooks, implemented once for all reducers -----------------------------------

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> Output:
        self._metadata[stream] = metadata
        return None

    def process(self, msg: Message) -> Output:
        key = self.group(msg)
        group = self._groups.get(key)
        if group is None:
            state = self.start(key, self._metadata.get(msg.stream, {}))
            group = self._groups[key] = _Group(state, t_emit=time.monotonic())
        group.state = self.reduce(group.state, msg)
        group.folded += 1
        group.last_id = max(group.last_id, msg.id)
        group.streams.add(msg.stream)
        group.since_emit += 1
        every, interval = self.params.every, self.params.interval
        due = (every and group.since_emit >= every) or (
            interval and time.monotonic() - group.t_emit >= interval
        )
        if not due:
            return None
        group.since_emit = 0
        group.t_emit = time.monotonic()
        return self._result(key, group, final=False)

    def on_stream_end(self, stream: str) -> Output:
        self._metadata.pop(stream, None)
        group = self._groups.get(stream)
        if group is None or group.streams != {stream}:
            return None  # a group of several streams ends when every input has finished
        del self._groups[stream]
        return self._result(stream, group, final=True)

    def on_finish(self) -> Output:
        results: dict[str, list[Item]] = {}
        for key, group in list(self._groups.items()):
            for port, messages in self._result(key, group, final=True).items():
                results.setdefault(port, []).extend(messages)
        self._groups.clear()
        return results

    def _result(self, key: str, group: _Group[State], final: bool) -> dict[str, list[Item]]:
        """:meth:`result`, with stream and id filled in where it left them empty: the group's
        name, and the highest id folded (a group of one stream) or 1, 2, 3, ... per emission
        (a group of several streams)."""
        out = by_port(self.result(key, group.state, final), self.outputs, self.name, "result()")
        group.emitted += 1
        single = group.streams == {key}
        for items in out.values():
            for m in items:
                if isinstance(m, Message):
                    m.stream = m.stream or key
                    m.id = m.id or (group.last_id if single else group.emitted)
        return out
