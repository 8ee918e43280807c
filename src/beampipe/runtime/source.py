"""The source loop: sending what a source's ``generate`` yields (docs/reliability.md, "Stream
lifecycle: gaps, late messages, shutdown").

Items are sent as they come; a list yielded is a *burst*, items the source has at hand: all are
sent (a drain asked for meanwhile stops the source after the burst), small ones in batches
(:mod:`beampipe.transport.batching`) which go out at the end of the burst at the latest. ``None``
means the source is waiting for data: a chance to answer the launcher. The sockets are serviced
at least every :data:`SERVICE_EVERY` items. The ids the source skips are reported missing
(:mod:`beampipe.runtime.gaps`), checked after each item: a generator that blocks delays the
report until it yields again.

A drain ends the open streams and closes the generator. When ``generate`` raises, the source is
restarted if its node says so (``restart: on-failure``: what it sent is kept upstream, so
nothing more is done here); otherwise it ends its open streams, as a drain does, and its error
is reported once everything it sent is processed downstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from beampipe.config import NodeSpec
from beampipe.message import EndOfStream, Item, Message, StreamStart
from beampipe.runtime.acks import Held, lineage
from beampipe.runtime.emitter import check_message
from beampipe.runtime.failure import NodeFailure, call, in_hook
from beampipe.runtime.faults import Faults
from beampipe.runtime.gaps import GapDetector
from beampipe.runtime.policy import ErrorPolicy
from beampipe.runtime.progress import PROGRESS_INTERVAL
from beampipe.runtime.streams import StreamBook
from beampipe.runtime.wiring import Wiring
from beampipe.worker import ResultError, Source

SERVICE_EVERY = 64
"""A source services its sockets (credit, stop) at least every this many items."""


class SourceLoop:
    """Runs one source: see the module docstring.

    Args:
        spec: the node's ``gap_timeout`` and ``restart`` apply.
        wiring: the node's sockets; a ``drain`` sets its :attr:`~Wiring.draining`.
        book, policy: the node's stream book (with its emitter) and error policy (with the
            node's progress).
        wait: services the node's sockets, not its inputs, for at most that many ms.
        kill_after: the ``kill`` fault (:mod:`beampipe.runtime.faults`): SIGKILL once this
            many messages were sent (0: never).
    """

    def __init__(
        self,
        source: Source,
        spec: NodeSpec,
        wiring: Wiring,
        book: StreamBook,
        policy: ErrorPolicy,
        wait: Callable[[int], object],
        kill_after: int = 0,
    ) -> None:
        self.node = wiring.node
        self.source = source
        self.restarted = spec.restart != "never"
        self.wiring = wiring
        self.book = book
        self.emitter = book.emitter
        self.policy = policy
        self.progress = policy.progress
        self.notes = self.progress.notes
        self.metrics = self.progress.metrics
        self.wait = wait
        self.default = source.outputs[0] if source.outputs else ""
        self.gaps = GapDetector(spec.gap_timeout)
        self.kill_after = kill_after
        self.sent = 0
        self.tracks = type(source).acknowledged is not Source.acknowledged
        """The source wants to know what was acknowledged (it defines ``acknowledged``)."""
        self.resumed: set[str] = set()
        """The streams whose ids sent before a restart were counted (``sent_before``)."""

    def run(self) -> NodeFailure | None:
        """Send what the source generates until it is exhausted, drained or fails; the failure
        to report once what it sent is processed downstream, if it failed.

        Raises:
            NodeFailure: ``generate`` failed and the source is restarted, or a hook failed.
        """
        generator = iter(call(self.notes, None, None, self.source.generate))
        unserviced = 0
        serviced = time.monotonic()
        while True:
            now = time.monotonic()
            if unserviced >= SERVICE_EVERY or now - serviced > PROGRESS_INTERVAL / 5:
                self.wait(0)
                serviced, unserviced = now, 0
            if self.wiring.draining:
                close = getattr(generator, "close", None)  # a generator's cleanup runs
                if close is not None:
                    call(self.notes, None, None, close)
                self.book.close_all()
                return None
            try:
                got = next(generator)
            except StopIteration:
                return None
            except Exception as exc:
                failure = NodeFailure(None, None, in_hook(exc))
                if self.restarted:  # what it sent is kept upstream
                    raise failure from exc
                self.book.close_all()
                return failure
            if got is None:  # the source is waiting for data: a chance to drain or stop
                self.wait(0)
                serviced, unserviced = time.monotonic(), 0
                continue
            unserviced += self._send(got, now)
            self._check_gaps(now)

    def _send(self, got: Item | list[Item], now: float) -> int:
        """Send an item or a burst the source yielded at monotonic time ``now``; how many
        items that was."""
        if type(got) is not list:
            self._item(got, now)
            return 1
        self.emitter.batchable = True
        try:
            for item in got:
                self._item(item, now)
        finally:
            self.emitter.batchable = False
        self.emitter.flush()
        return len(got)

    def _item(self, item: Item, now: float) -> None:
        """Send one item the source generated at monotonic time ``now``.

        Raises:
            NodeFailure: ``item`` is not an item, or a message that cannot be sent under
                ``on_error: fail_fast``.
        """
        if isinstance(item, StreamStart):
            self.book.open(item.stream, item.metadata)
        elif isinstance(item, Message):
            self.notes.stream, self.notes.msg_id = item.stream, item.id
            try:
                self._message(item, now)
            except ResultError as exc:
                self.policy.refused(item, exc)
        elif isinstance(item, EndOfStream):
            state = self.book.open(item.stream)
            state.end = item
            why = f"the stream ended with id {item.last_id} without it"
            for first, last in self.gaps.end(item.stream, item.last_id):
                self.policy.missing(item.stream, first, last, why)
            acked = self._watch(item)
            self.book.close(item.stream, state)
            self._sent(acked)
        else:
            raise NodeFailure(
                None,
                None,
                ResultError(
                    f"generate() yielded a {type(item).__name__}: expected a Message, "
                    "StreamStart, EndOfStream, a list of them (a burst) or None",
                    f"type:{type(item).__name__}",
                ),
            )

    def _message(self, msg: Message, now: float) -> None:
        """Send a message the source generated. An id it has (a valid one) counts as issued,
        even if the message cannot be sent: it is not reported missing as well.

        Raises:
            ResultError: no stream, an id below 1, an output port the source does not have,
                or data or metadata the wire format cannot carry; nothing was sent.
        """
        port = msg.port or self.default
        check_message(msg, port, "generate()")
        state = self.book.open(msg.stream)
        if self.tracks and msg.stream not in self.resumed:
            self.resumed.add(msg.stream)
            for msg_id in self.source.sent_before(msg.stream):
                self.gaps.issued(msg.stream, msg_id, now)
        if not self.gaps.issued(msg.stream, msg.id, now):
            self.metrics.late += 1
        if port not in self.source.outputs:
            have = ", ".join(repr(p) for p in self.source.outputs) or "none"
            raise ResultError(
                f"generate() yielded a message for output port {port!r}, which node "
                f"{self.node!r} does not have (its output ports: {have})",
                f"port:{port}",
            )
        msg.lineage = lineage(self.node, msg.stream, msg.id)
        msg.stamp(self.node)
        acked = self._watch(msg)
        try:
            self.emitter.send(port, msg)
        finally:
            self._sent(acked)
        self.progress.count(state, msg.timestamps[0][1])
        self.sent += 1
        if self.sent == self.kill_after:
            Faults.kill()

    def _watch(self, item: Message | EndOfStream) -> Acked | None:
        """For a source that wants to know (it defines ``acknowledged``): the token that tells
        it when ``item`` is acknowledged downstream, held by what is sent now."""
        if not self.tracks:
            return None
        self.emitter.origin = token = Acked(self.source, item)
        return token

    def _sent(self, token: Acked | None) -> None:
        if token is not None:
            self.emitter.origin = None
            token.done()

    def _check_gaps(self, now: float) -> None:
        """Report the ids awaited for ``gap_timeout`` seconds as missing."""
        gaps = self.gaps
        deadline = gaps.next_deadline
        if deadline is not None and now >= deadline:
            why = f"not issued within gap_timeout = {gaps.timeout} s of a later id"
            for stream, first, last in gaps.expired(now):
                self.policy.missing(stream, first, last, why)


class Acked(Held):
    """The token of an item a source sent (:class:`beampipe.transport.peer.Token`): once every
    peer it went to has acknowledged it, the source's ``acknowledged`` is told."""

    __slots__ = ("item", "source")

    def __init__(self, source: Source, item: Message | EndOfStream) -> None:
        super().__init__()
        self.source = source
        self.item = item

    def _complete(self) -> None:
        self.source.acknowledged(self.item)
