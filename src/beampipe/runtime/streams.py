"""The stream book: which streams are open at a node, which input pipes ended them, and the
worker's stream hooks (docs/architecture.md, "Runtime").

A stream opens at the first :class:`StreamStart` or message of it that arrives:
:meth:`Worker.on_stream_start` is called and the start marker is forwarded. It ends when every
input pipe has delivered its :class:`EndOfStream` or finished: :meth:`Worker.on_stream_end` is
called, its results are sent and the end marker is forwarded. The end marker carries what every
node noted while handling the stream (:mod:`beampipe.runtime.notes`): what the end markers of
the input pipes brought, with this node's own notes added. An end that comes on some pipes for
a stream not (yet) open here is kept pending: a pipe to a replica added while running gets the
ends of streams it never saw. Markers that a restarted upstream sends again for a stream that
ended here are ignored.

A message of a stream that ended here (a *late* one: a dead upstream sibling's message sent
again) opens it again, until the pipe it came on ends it again (:meth:`StreamBook.reopen`): the
upstream port sends the end again after such messages. The pipe of an upstream replica that died
for good ends its streams only once what it held was sent again and processed
(:meth:`StreamBook.pipe_gone`, then :meth:`StreamBook.pipe_finished`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from beampipe.message import EndOfStream, StreamStart
from beampipe.runtime.acks import Origin, lineage
from beampipe.runtime.emitter import Emitter
from beampipe.runtime.failure import call
from beampipe.runtime.intake import Intake
from beampipe.runtime.notes import NoteLog
from beampipe.runtime.progress import StreamCount
from beampipe.runtime.wiring import Wiring
from beampipe.worker.base import Node


@dataclass
class StreamState(StreamCount):
    """Per-stream bookkeeping of one node: its counts, and how it ends."""

    ended: set[int] = field(default_factory=set)
    """Indices of the input pipes that delivered the end-of-stream marker."""
    end: EndOfStream | None = None


class StreamBook:
    """The streams of one node replica.

    Args:
        wiring: the node's sockets; its input pipes are the wiring's list, which grows when
            replicas are added upstream.
        streams: where the open streams are kept (shared with the emitter and the progress
            reports).
        ended: told after a stream ended here and its end marker went out.
        end_hook: calls the worker's ``on_stream_end`` as ``end_hook(stream, last_id, hook)``
            (the node's error policy, :meth:`~beampipe.runtime.policy.ErrorPolicy.stream_end`);
            None: an exception there stops the node.
    """

    def __init__(
        self,
        wiring: Wiring,
        streams: dict[str, StreamState],
        worker: Node,
        emitter: Emitter,
        intake: Intake,
        notes: NoteLog,
        ended: Callable[[str, StreamState], None],
        end_hook: Callable[[str, int, Callable[[str], Any]], Any] | None = None,
    ) -> None:
        self.node = wiring.node
        self.replica = wiring.replica
        self.inputs = wiring.inputs
        self.streams = streams
        self.worker = worker
        self.emitter = emitter
        self.intake = intake
        self.notes = notes
        self.ended = ended
        self.end_hook = end_hook
        self.closed: set[str] = set()
        """Streams that ended here."""
        self.pending_ends: dict[str, tuple[set[int], EndOfStream]] = {}
        """Streams not (yet) open here that some input pipes ended: the pipes, and the end."""
        self.upstream_notes: dict[str, dict[tuple[str, str], int]] = {}
        """Per stream, what upstream nodes noted while handling it (the ``warnings`` of the
        end markers of its input pipes): ``{(node, text): count}``."""

    def open(self, stream: str, metadata: dict[str, Any] | None = None) -> StreamState:
        """The state of ``stream``, opened first if it is not open."""
        state = self.streams.get(stream)
        if state is None:
            metadata = {} if metadata is None else metadata
            state = self.streams[stream] = StreamState()
            pending = self.pending_ends.pop(stream, None)
            if pending is not None:
                state.ended, state.end = pending
            result = call(self.notes, stream, None, self.worker.on_stream_start, stream, metadata)
            self.emitter.broadcast(StreamStart(stream, metadata))
            self.emitter.emit_hook(
                result, "on_stream_start()", stream, lineage("start", stream, self.replica)
            )
        return state

    def reopen(self, pipe: int, stream: str) -> StreamState:
        """A message of ``stream``, which ended here, arrived on input pipe ``pipe``: the
        stream is open again until that pipe (and any other that brings such a message) ends
        it again."""
        state = self.streams.get(stream)
        if state is None:
            state = self.open(stream)
            state.ended = set(range(len(self.inputs)))
        state.ended.discard(pipe)
        return state

    def restore(self, open_streams: list[str], closed: list[str]) -> None:
        """After a restart: these streams are open already, here and downstream (no hooks are
        called), and these ended here."""
        for stream in open_streams:
            self.streams[stream] = StreamState()
        self.closed.update(closed)

    def close(self, stream: str, state: StreamState) -> None:
        """End ``stream`` here: its waiting events go on, ``on_stream_end`` is called, its
        results and the end marker are sent."""
        worker = self.worker
        self.emitter.flush()  # results held for a batch do not wait for on_stream_end
        self.intake.flush(stream)
        noted = self._noted(EndOfStream(stream, 0), forget=False)
        worker._stream_warnings[stream] = [
            {"node": node, "text": text, "count": count} for node, text, count in noted.warnings
        ]  # as beampipe.Worker.stream_warnings returns them
        try:
            if self.end_hook is None:
                result = call(self.notes, stream, None, worker.on_stream_end, stream)
            else:
                last_id = state.end.last_id if state.end else state.messages
                result = self.end_hook(stream, last_id, worker.on_stream_end)
        finally:
            del worker._stream_warnings[stream]
        base = lineage("end", stream, self.replica)
        self.emitter.emit_hook(result, "on_stream_end()", stream, base)
        self.emitter.broadcast(self._noted(state.end or EndOfStream(stream, state.messages)))
        del self.streams[stream]
        self.closed.add(stream)
        self.ended(stream, state)

    def close_all(self) -> None:
        """End every open stream (a source that stops)."""
        for stream, state in list(self.streams.items()):
            self.close(stream, state)

    def on_marker(self, pipe: int, item: StreamStart | EndOfStream, origin: Origin) -> None:
        """A stream marker arrived on input pipe ``pipe``: what the hooks it causes send is
        held for ``origin``."""
        emitter = self.emitter
        previous, emitter.origin = emitter.origin, origin
        try:
            self._marker(pipe, item)
        finally:
            emitter.origin = previous

    def _marker(self, pipe: int, item: StreamStart | EndOfStream) -> None:
        if item.stream in self.closed and item.stream not in self.streams:
            return  # sent again by a restarted upstream: the stream is over here
        if isinstance(item, StreamStart):
            self.open(item.stream, item.metadata)
            return
        if item.warnings:
            notes = self.upstream_notes.setdefault(item.stream, {})
            for node, text, count in item.warnings:
                notes[node, text] = notes.get((node, text), 0) + count
        self.intake.end(pipe, self.inputs[pipe].port, item.stream)
        state = self.streams.get(item.stream)
        if state is None:  # not started here (yet): count the end; the start may follow
            ended, _ = self.pending_ends.setdefault(item.stream, (set(), item))
            ended.add(pipe)
            self._end_pending(item.stream)
            return
        state.end = state.end or item
        state.ended.add(pipe)
        if self._all_ended(state.ended):
            self.close(item.stream, state)

    def pipe_gone(self, pipe: int) -> None:
        """The upstream replica of input pipe ``pipe`` died for good: its ids come again on
        other pipes, so the reorder buffers stop waiting for it (the open streams go on in
        strict id order, :meth:`Intake.pipe_gone`); the streams still wait for it, until
        :meth:`pipe_finished`."""
        port = self.inputs[pipe].port
        self.intake.pipe_gone(pipe, port)
        for stream in list(self.streams):
            self.intake.end(pipe, port, stream)

    def pipe_finished(self, pipe: int) -> None:
        """Input pipe ``pipe`` finished: the streams that waited only for it end."""
        port = self.inputs[pipe].port
        for stream, state in list(self.streams.items()):
            self.intake.end(pipe, port, stream)
            if self._all_ended(state.ended):
                self.close(stream, state)
        for stream in list(self.pending_ends):
            self._end_pending(stream)

    def finish(self) -> None:
        """Every input pipe finished: every open stream ends, ``on_finish`` is called and its
        results sent, and the streams of the worker's own end."""
        for stream, state in list(self.streams.items()):
            for pipe, channel in enumerate(self.inputs):
                if pipe not in state.ended:
                    self.intake.end(pipe, channel.port, stream)
            state.ended = set(range(len(self.inputs)))
            self.close(stream, state)
        result = call(self.notes, None, None, self.worker.on_finish)
        self.emitter.emit_hook(result, "on_finish()", None, lineage("finish", self.replica))
        self.emitter.end_derived()

    def _all_ended(self, ended: set[int]) -> bool:
        """Every input pipe ended the stream, or finished (a pipe from a replica removed
        while running ends only the streams it saw)."""
        return all(i in ended or ch.finished for i, ch in enumerate(self.inputs))

    def _end_pending(self, stream: str) -> None:
        """A stream that never started here ended on every pipe: pass its end on."""
        ended, end = self.pending_ends[stream]
        if self._all_ended(ended):
            del self.pending_ends[stream]
            self.emitter.broadcast(self._noted(end))
            self.closed.add(stream)

    def _noted(self, end: EndOfStream, forget: bool = True) -> EndOfStream:
        """``end`` carrying what the nodes upstream and this one noted while handling its
        stream (forgotten here if ``forget``)."""
        stream = end.stream
        if forget:
            upstream, own = self.upstream_notes.pop(stream, {}), self.notes.end_stream(stream)
        else:
            upstream, own = self.upstream_notes.get(stream, {}), self.notes.streams.get(stream, {})
        merged = dict(upstream)
        for text, count in own.values():
            merged[self.node, text] = merged.get((self.node, text), 0) + count
        warnings = [[node, text, count] for (node, text), count in merged.items()]
        return EndOfStream(stream, end.last_id, end.next_stream, warnings)
