"""The emitter: how what a worker returns goes out on the node's output ports.

A result inherits what the worker left empty (stream, id, timestamps) from the message or event
it was computed from and is checked (:func:`~beampipe.worker.base.by_port`: its type and output
ports; :func:`check_message`: a stream, an id of 1 or more, once per stream and port in one
call; the encoding: data and metadata the wire format can carry): what cannot be sent raises a
:class:`~beampipe.ResultError` before anything of the result is sent. The common case, one
message for the input's stream, costs an id check and the encoding that sending needs anyway.
A result gets its lineage (docs/reliability.md, "Acknowledgements and crash recovery") and
this node's timestamp; its NaN and infinite values are counted (``check_finite``). A send waits
for credit (docs/dataflow.md, "Flow control") while the node answers control and output frames,
not its inputs, so backpressure travels up to the source.
While the worker is called, the results hold its inputs' :class:`~beampipe.runtime.acks.Origin`
until they are acknowledged downstream. Small results may wait in output batches while the node
works through input it already has (:data:`FAST_CALL`, :data:`BATCH_DELAY`). A worker may emit
on a stream of its own: it is opened downstream before its first message and ended after
``on_finish`` (docs/dataflow.md, "Reducers").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from typing import Any

from beampipe.message import EndOfStream, Event, Item, Message, StreamStart, encode
from beampipe.runtime.acks import Origin, lineage
from beampipe.runtime.failure import NodeFailure
from beampipe.runtime.faults import Faults
from beampipe.runtime.progress import Progress
from beampipe.runtime.wiring import Wiring
from beampipe.transport import OutputPort
from beampipe.worker.base import Output, ResultError, by_port

FAST_CALL = 5e-5
"""Seconds: what a worker's ``process`` returns within this time, while the node has more
input at hand, may wait in an output batch (small messages only, see
:mod:`beampipe.transport.batching`) ..."""
BATCH_DELAY = 0.001
"""... for at most this many seconds plus one such call: the batches are sent when this time
has passed since they were last sent, before the node waits for anything, and when full."""


class Emitter:
    """Sends the items of one node replica.

    Args:
        wiring: the node's sockets (its output ports and tap).
        ports: the worker's output ports (the first is the default).
        check_finite: count the NaN and infinite values of the messages sent.
        broadcast: the node is fed by broadcast: each replica computes a result of its own,
            so the replica number goes into the lineage of results (else 0: a message
            processed again by another replica gives a result of the same lineage, which a
            sink then drops as a duplicate).
        faults: the faults injected (:mod:`beampipe.runtime.faults`).
        opened: the streams open at the node (the stream book's); a message of another
            stream is on a stream of the worker's own.
        wait: services the node's sockets, not its inputs, for at most that many ms.

    Attributes:
        origin: the inputs of the worker call under way, which what is sent now is held for.
        more_input: the node is working through input it has already received.
        batchable: what is sent now may wait in an output batch (small items only, see
            :mod:`beampipe.transport.batching`) until :meth:`flush`.
    """

    def __init__(
        self,
        wiring: Wiring,
        ports: tuple[str, ...],
        check_finite: bool,
        broadcast: bool,
        faults: Faults,
        opened: Container[str],
        progress: Progress,
        wait: Callable[[int], object],
    ) -> None:
        self.node = wiring.node
        self.outputs = wiring.outputs
        self.tap = wiring.tap
        self.ports = ports
        self.check_finite = check_finite
        self.replica = wiring.replica if broadcast else 0
        self.corrupt = faults.corrupt
        self.opened = opened
        self.notes = progress.notes
        self.metrics = progress.metrics
        self.wait = wait
        self.origin: Origin | None = None
        self.more_input = False
        self.batchable = False
        self._flushed = 0.0
        self.derived: dict[str, int] = {}
        """Streams of the worker's own that are open downstream: ``{stream: last id sent}``."""

    def send(self, port: str, item: Item) -> None:
        """Send ``item`` on output ``port`` (if it is connected), once it has credit.

        Raises:
            ResultError: the wire format cannot carry ``item``; nothing was sent.
        """
        out = self.outputs.get(port)
        if out is None:
            return
        try:  # the hot path: _frames and _put, inlined
            frames = encode(item)
        except TypeError as exc:
            raise unsendable(item, port, exc) from None
        if self.corrupt is not None and isinstance(item, Message):
            frames = self.corrupt.apply(frames)
        if self.check_finite and isinstance(item, Message):
            self.metrics.nonfinite += self.notes.count_nonfinite(item.data, item.stream, item.id)
        while not out.try_send(item, frames, self.origin, self.batchable):
            self.wait(1000)
        if self.tap is not None:
            self.tap.offer(port, item, frames)

    def _frames(self, port: str, item: Item) -> list[Any]:
        """``item`` encoded (and corrupted, if that fault is injected)."""
        try:
            frames = encode(item)
        except TypeError as exc:
            raise unsendable(item, port, exc) from None
        if self.corrupt is not None and isinstance(item, Message):
            frames = self.corrupt.apply(frames)
        return frames

    def _put(self, out: OutputPort, port: str, item: Item, frames: list[Any]) -> None:
        """Send ``item``, encoded as ``frames``, on ``out`` once it has credit."""
        if self.check_finite and isinstance(item, Message):
            self.metrics.nonfinite += self.notes.count_nonfinite(item.data, item.stream, item.id)
        while not out.try_send(item, frames, self.origin, self.batchable):
            self.wait(1000)
        if self.tap is not None:
            self.tap.offer(port, item, frames)

    def broadcast(self, item: StreamStart | EndOfStream) -> None:
        """Send a stream marker on every output port."""
        for port in self.outputs:
            self.send(port, item)

    def emit(
        self, result: Output, origin: Message | Event | None, base: int, hook: str = "process()"
    ) -> None:
        """Send what a worker hook returned; fill stream/id/timestamps from ``origin``. The
        ``k``-th result gets the lineage ``lineage(base, r, k)``, ``base`` being the lineage
        of what the hook was called for and ``r`` the replica (see :class:`Emitter`).

        A message of a stream the node has not opened (a stream of the worker's own, e.g. a
        reducer's ``"merged"``) opens it downstream first; a returned StreamStart or
        EndOfStream opens or ends such a stream explicitly.

        Raises:
            ResultError: ``hook`` (named in the text) returned something that cannot be sent
                (:class:`~beampipe.ResultError`); nothing of it was sent.
        """
        if result is None:
            return
        if (
            isinstance(result, Message)
            and origin is not None
            and self.ports
            and (not result.stream or result.stream == origin.stream)
        ):  # the common case, without the general bookkeeping below
            inherit(result, origin)
            if type(result.id) is not int or result.id < 1:
                check_message(result, self.ports[0], hook)
            result.lineage = lineage(base, self.replica, 0)
            result.stamp(self.node)
            self.send(self.ports[0], result)
            return
        for port, item, frames in self._checked(result, origin, base, hook):
            if not isinstance(item, Message):
                self._own_marker(item)
                continue
            if item.stream not in self.opened:
                if item.stream not in self.derived:
                    self.derived[item.stream] = 0
                    self.broadcast(StreamStart(item.stream, {}))
                self.derived[item.stream] = max(self.derived[item.stream], item.id)
            out = self.outputs.get(port)
            if out is not None and frames is not None:
                self._put(out, port, item, frames)

    def emit_hook(self, result: Output, hook: str, stream: str | None, base: int) -> None:
        """:meth:`emit` what ``hook`` (not ``process``) returned for ``stream``.

        Raises:
            NodeFailure: it cannot be sent (a hook's errors always stop the node).
        """
        try:
            self.emit(result, None, base, hook)
        except ResultError as exc:
            raise NodeFailure(stream, None, exc.with_traceback(None)) from None

    def _checked(
        self, result: Output, origin: Message | Event | None, base: int, hook: str
    ) -> list[tuple[str, Item, list[Any] | None]]:
        """The items of ``result`` with their port and frames (None for a port that is not
        connected), checked before any is sent: the messages with what they inherit from
        ``origin``, their lineage and this node's timestamp."""
        checked: list[tuple[str, Item, list[Any] | None]] = []
        seen: set[tuple[str, str, int]] = set()
        k = 0
        for port, items in by_port(result, self.ports, self.node, hook).items():
            connected = port in self.outputs
            for item in items:
                if not isinstance(item, Message):  # a marker of a stream of the worker's own
                    self._frames(port, item)
                    checked.append((port, item, None))
                    continue
                if origin is not None:
                    inherit(item, origin)
                check_message(item, port, hook)
                key = (port, item.stream, item.id)
                if key in seen:
                    raise ResultError(
                        f"{hook} returned two messages with id {item.id} of stream "
                        f"{item.stream!r} for port {port!r}: an id occurs once per stream and "
                        "port (give further results a stream of their own: stream=..., id=...)",
                        "duplicate",
                    )
                seen.add(key)
                item.lineage = lineage(base, self.replica, k)
                k += 1
                item.stamp(self.node)
                checked.append((port, item, self._frames(port, item) if connected else None))
        return checked

    def _own_marker(self, item: StreamStart | EndOfStream) -> None:
        """A StreamStart or EndOfStream a worker returned: opens or ends a stream of its own."""
        if isinstance(item, StreamStart):
            if item.stream not in self.derived and item.stream not in self.opened:
                self.derived[item.stream] = 0
                self.broadcast(item)
        elif self.derived.pop(item.stream, None) is not None:
            self.broadcast(item)

    def end_derived(self) -> None:
        """End the streams of the worker's own that it did not end itself."""
        for stream, last_id in list(self.derived.items()):
            self.broadcast(EndOfStream(stream, last_id))
        self.derived.clear()

    def flush(self) -> None:
        """Send what the output batches hold."""
        for out in self.outputs.values():
            out.flush()
        self._flushed = time.monotonic()

    def call_starts(self) -> None:
        """A worker call starts: if the node has more input at hand, results may wait in
        output batches (see :data:`FAST_CALL`), for at most :data:`BATCH_DELAY` seconds."""
        if self.more_input and time.monotonic() - self._flushed >= BATCH_DELAY:
            self.flush()

    def call_took(self, seconds: float) -> None:
        """The worker call took ``seconds``: its results may wait in output batches if it was
        fast and more input is at hand."""
        self.batchable = self.more_input and seconds < FAST_CALL

    def finish(self) -> None:
        """Tell every downstream peer that nothing more comes, once each output port is
        connected and has sent what it kept for a replica that died; wait until every peer
        has confirmed and acknowledged everything."""
        for out in self.outputs.values():
            while not out.connected or out.backlogged:
                self.wait(1000)
            out.finish()
        while not all(out.drained for out in self.outputs.values()):
            self.wait(1000)


_ID_HINT = {"process()": "; id 0 keeps the input's", "generate()": ""}


def check_message(msg: Message, port: str, hook: str) -> None:
    """Check that ``msg``, which ``hook`` returned for ``port`` (``generate()``: yielded),
    has a stream and an id of 1 or more (after what it inherited).

    Raises:
        ResultError: it does not; the text names the hook, the stream, the id and the port.
    """
    stream, msg_id = msg.stream, msg.id
    did = "yielded" if hook == "generate()" else "returned"
    if type(stream) is not str or not stream:
        whose = "without a stream" if not stream else f"whose stream is a {type(stream).__name__}"
        raise ResultError(
            f"{hook} {did} a message {whose} (id {msg_id!r}, port {port!r}): set stream=...",
            "stream",
        )
    if type(msg_id) is not int or msg_id < 1:
        hint = _ID_HINT.get(hook, f"; set id= on the messages {hook} returns")
        raise ResultError(
            f"{hook} {did} a message with id {msg_id!r} (stream {stream!r}, port {port!r}): "
            f"ids are 1, 2, 3, ... (an int){hint}",
            "id",
        )


def unsendable(item: Item, port: str, exc: TypeError) -> ResultError:
    """The error for ``item``, which :func:`~beampipe.message.encode` refused with ``exc``."""
    return ResultError(f"{described(item, port)} cannot be sent: {exc}", f"unsendable:{exc}")


def described(item: Item, port: str) -> str:
    """``item`` on ``port``, as an error names it."""
    if isinstance(item, Message):
        return f"message (stream {item.stream!r}, id {item.id!r}, port {port!r})"
    if isinstance(item, StreamStart):
        return f"the start of stream {item.stream!r} (port {port!r})"
    return f"the end of stream {item.stream!r} (port {port!r})"


def inherit(msg: Message, origin: Message | Event) -> None:
    """Fill what a worker left empty in a result from the message (or event) it came from."""
    msg.stream = msg.stream or origin.stream
    msg.id = msg.id or origin.id
    if not msg.timestamps:
        msg.timestamps = list(origin.timestamps)
