"""The test harness: :class:`Harness` and :func:`run` (see :mod:`beampipe.testing`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from beampipe.config import NodeSpec
from beampipe.message import EndOfStream, Event, Item, Message, StreamStart
from beampipe.runtime.acks import lineage_of
from beampipe.runtime.batches import Entry, call_batch
from beampipe.runtime.emitter import Emitter
from beampipe.runtime.failure import NodeFailure
from beampipe.runtime.faults import Faults
from beampipe.runtime.intake import Intake
from beampipe.runtime.policy import note_drop
from beampipe.runtime.progress import Progress
from beampipe.runtime.source import SourceLoop
from beampipe.runtime.streams import StreamBook, StreamState
from beampipe.testing.inprocess import RECEIPT, Pipe, Port, SourcePolicy, Wiring, no_wait
from beampipe.testing.results import Results
from beampipe.worker import Params, Source, Worker
from beampipe.worker.base import Node


class Harness:
    """One node, driven a step at a time: :meth:`feed` it items (a worker) or :meth:`generate`
    (a source), then :meth:`finish`. Each call returns what it made the node do; :attr:`results`
    holds everything. :func:`run` does all of it at once.

    Args:
        node: a :class:`~beampipe.Worker` or :class:`~beampipe.Source` (a reducer is a worker),
            or its class, which is made with ``params`` and ``name``.
        params: for a class: its params as a dict (validated by its ``Params`` model; relative
            :data:`~beampipe.InputPath` s are resolved against ``base_dir``, if given) or a
            ``Params`` instance; ``None`` for the defaults.
        replica, restarts: what the node's :attr:`~beampipe.Worker.replica` and
            :attr:`~beampipe.Worker.restarts` say.
        events: the node's ``events:`` options (``timeout`` has no effect here).
        ports: the worker's input ports that are connected (None: all it declares), as a
            pipeline may leave an optional port unconnected.
        check_finite: count the NaN and infinite values sent, as the node option does.

    Raises:
        TypeError: ``node`` is neither a node nor a node class, or ``params`` come with an
            instance.
        pydantic.ValidationError: ``params`` do not validate.
    """

    def __init__(
        self,
        node: Node | type[Node],
        params: dict[str, Any] | Params | None = None,
        *,
        name: str = "",
        base_dir: str | Path | None = None,
        replica: int = 0,
        restarts: int = 0,
        events: dict[str, Any] | None = None,
        ports: Iterable[str] | None = None,
        check_finite: bool = True,
    ) -> None:
        self.node = node = _instance(node, params, name, base_dir)
        self.results = Results(node)
        self._into = [self.results]
        self._closed = False
        worker = isinstance(node, Worker)
        if ports is None:
            ports = () if not worker else ("in",) if node.inputs is None else node.inputs
        outputs = {port: Port(port, self._sent) for port in node.outputs}
        self._wiring = Wiring(node.name, replica, [Pipe(p) for p in ports], outputs)
        self._spec = NodeSpec(
            name=node.name,
            use=f"{type(node).__module__}:{type(node).__qualname__}",
            events=events,
            check_finite=check_finite,
            line=0,
        )
        streams: dict[str, StreamState] = {}
        self._intake = intake = Intake(self._process, self._process_batch)
        self._progress = progress = Progress(self._wiring, intake, streams)
        self._notes = progress.notes
        wiring, outs = self._wiring, node.outputs
        emitter = Emitter(wiring, outs, check_finite, False, Faults(), streams, progress, no_wait)
        batch = (node.max_batch, node.max_wait) if isinstance(node, Worker) else (1, 0.0)
        intake.set_up(self._spec, wiring.inputs, worker and node.events, batch)
        self._book = StreamBook(wiring, streams, node, emitter, intake, self._notes, self._ended)
        node.replica, node.restarts = replica, restarts
        node._drop, node._stream_warnings = self._dropped, {}
        progress.info = node.info

    def feed(self, items: Iterable[Item]) -> Results:
        """Hand ``items`` to a worker, one after the other, as if they arrived on its inputs.

        A :class:`~beampipe.Message` comes in on its ``port`` (the first input port if empty;
        the harness sets it). A stream marker comes on every input port: a ``StreamStart``
        opens its stream (if no message did), an ``EndOfStream`` ends it.

        Raises:
            TypeError: the node is a source, or an item is not a message or stream marker.
            ValueError: a message names an input port the worker does not have.
            Exception: what a hook of the node raised, as it raised it.
        """
        if isinstance(self.node, Source):
            raise TypeError(f"{self.node.name} is a source: it takes no input (see generate())")
        return self._call(lambda: self._feed(items))

    def generate(self) -> Results:
        """Run a source's ``generate`` to its end, as the source loop does.

        Raises:
            TypeError: the node is not a source, or ``generate`` yielded something else than
                an item, a list of items or ``None``.
            Exception: what ``generate`` or a hook of the source raised, as it raised it (the
                source's open streams are ended first, as in a pipeline).
        """
        source = self.node
        if not isinstance(source, Source):
            raise TypeError(f"{source.name} is not a source: feed() it items")
        policy = SourcePolicy(self._progress, self._dead_letter)
        loop = SourceLoop(source, self._spec, self._wiring, self._book, policy, no_wait)

        def generated() -> None:
            failed = loop.run()
            if failed is not None:
                raise failed

        return self._call(generated)

    def finish(self) -> Results:
        """End the run: a worker's open streams end, its ``on_finish`` is called and the
        streams of its own end (a source's end with its generator); then ``close``.

        Raises:
            Exception: what a hook of the node raised, as it raised it.
        """

        def finished() -> None:
            if isinstance(self.node, Worker):
                self._book.finish()
                if not self.node.outputs:
                    self.node.checkpoint()
            self.close()

        return self._call(finished)

    def close(self) -> None:
        """Close the node (once), as the runtime does when a run is over or fails."""
        if not self._closed:
            self._closed = True
            self.node.close()

    # -- what the runtime's parts call back ----------------------------------------------------

    def _feed(self, items: Iterable[Item]) -> None:
        pipes = self._wiring.inputs
        for item in items:
            if isinstance(item, Message):
                if not pipes:
                    raise ValueError(f"{self.node.name} has no input ports")
                port = item.port or pipes[0].port
                pipe = next((i for i, p in enumerate(pipes) if p.port == port), None)
                if pipe is None and self.node.inputs is not None:
                    raise ValueError(
                        f"{self.node.name} has no input port {port!r} "
                        f"(its input ports: {', '.join(p.port for p in pipes)})"
                    )
                item.port = port
                self._book.open(item.stream)
                self._intake.accept(pipe or 0, RECEIPT, item)
            elif isinstance(item, StreamStart | EndOfStream):
                ends = isinstance(item, EndOfStream)
                for pipe in range(len(pipes) if ends else min(1, len(pipes))):
                    self._book.on_marker(pipe, item, None)
            else:
                raise TypeError(
                    "feed() takes Messages, StreamStarts and EndOfStreams, not a "
                    f"{type(item).__name__}"
                )
        self._intake.release()  # what one feed() brings is what a batching worker has at hand

    def _process(self, item: Message | Event, receipts: list[Any]) -> None:
        """The worker call on a message or event, as :class:`~beampipe.runtime.node.NodeRuntime`
        makes it (without metrics, credit and acknowledgements); counted in its stream, whose
        end marker says how many were handled if its source did not."""
        book = self._book
        state = book.streams.get(item.stream) or book.open(item.stream)
        self._notes.stream, self._notes.msg_id = item.stream, item.id
        t_start = time.time()
        result = self.node.process(item)
        book.emitter.emit(result, item, lineage_of(item))
        self._progress.count(state, t_start)

    def _process_batch(self, entries: list[Entry]) -> None:
        """A batching worker's call on several inputs at once, as the runtime makes it; each
        one through :meth:`_process` instead if it raised."""
        assert isinstance(self.node, Worker)  # only a worker batches
        items = [item for item, _ in entries]
        t_start = time.time()
        results = call_batch(self.node, items, self._notes)
        if results is None:
            for item, receipts in entries:
                self._process(item, receipts)
            return
        book = self._book
        for item, result in zip(items, results, strict=True):
            state = book.streams.get(item.stream) or book.open(item.stream)
            book.emitter.emit(result, item, lineage_of(item))
            self._progress.count(state, t_start)

    def _ended(self, stream: str, state: StreamState) -> None:
        """A stream ended: a sink checkpoints."""
        if isinstance(self.node, Worker) and not self.node.outputs:
            self.node.checkpoint()

    def _sent(self, port: str, item: Item) -> None:
        for results in self._into:
            results.sent.append((port, item))

    def _dropped(self, item: Message | Event, reason: str | BaseException) -> None:
        """:meth:`beampipe.Worker.dead_letter`: noted, and kept."""
        note_drop(self._notes, item, reason)
        self._dead_letter(item, reason)

    def _dead_letter(self, item: Message | Event, reason: str | BaseException) -> None:
        for results in self._into:
            results.dead_letters.append((item, reason))

    def _call(self, action: Callable[[], None]) -> Results:
        """Do ``action`` with the node's warnings captured; what it made the node do. A hook's
        :class:`NodeFailure` is raised as the error the hook raised."""
        results = Results(self.node)
        self._into.append(results)
        before = {key: note[1] for key, note in self._notes.notes.items()}
        try:
            with self._notes.capturing():
                action()
        except NodeFailure as failure:
            error: BaseException | None = failure.error
        else:
            error = None
        finally:
            self._into.pop()
            for key, (text, count, *_) in self._notes.notes.items():
                if count > before.get(key, 0):
                    results.warnings[text] = count - before.get(key, 0)
                    self.results.warnings[text] = count
        if error is not None:
            raise error
        return results


def run(
    node: Node | type[Node],
    items: Iterable[Item] | None = None,
    params: dict[str, Any] | Params | None = None,
    **options: Any,
) -> Results:
    """Run ``node`` in-process on ``items`` (a worker) or on what it generates (a source), to
    the end: everything it sent, dropped and warned about.

    Args:
        node, params, options: as for :class:`Harness` (``name``, ``base_dir``, ``replica``,
            ``restarts``, ``events``, ``ports``, ``check_finite``).
        items: for a worker, what arrives on its inputs (see :meth:`Harness.feed`); ``None``
            for a source.

    Raises:
        TypeError: ``items`` given to a source, or see :class:`Harness`.
        Exception: what a hook of the node raised, as it raised it; the node is closed first.
    """
    harness = Harness(node, params, **options)
    try:
        if isinstance(harness.node, Source):
            if items is not None:
                raise TypeError(f"{harness.node.name} is a source: it takes no items")
            harness.generate()
        else:
            harness.feed(() if items is None else items)
        harness.finish()
    except BaseException:
        with contextlib.suppress(Exception):  # the run failed already: that error is the one
            harness.close()
        raise
    return harness.results


def _instance(
    node: Node | type[Node],
    params: dict[str, Any] | Params | None,
    name: str,
    base_dir: str | Path | None,
) -> Node:
    """``node``, or made from its class and ``params``."""
    if isinstance(node, Worker | Source):
        if params is not None:
            raise TypeError("params go with a node class, not with a node already made")
        return node
    if not (isinstance(node, type) and issubclass(node, Worker | Source)):
        raise TypeError(f"{node!r} is not a beampipe.Worker or beampipe.Source (or its class)")
    if not isinstance(params, Params):
        context = {"base_dir": str(base_dir)} if base_dir is not None else None
        params = node.Params.model_validate(params or {}, context=context)
    return node(params, name)
