"""The loop inside one node process: receive -> process -> send.

Started by a launcher (:mod:`beampipe.manager`) with the address of its control channel, a node
process joins its pipeline and builds its worker and parts (:mod:`~beampipe.runtime.startup`),
runs until every upstream peer has finished (a worker) or its generator is exhausted (a source,
:mod:`~beampipe.runtime.source`), tells its downstream peers it has finished, waits until they
confirm, and reports ``done``. :class:`NodeRuntime` keeps :meth:`~NodeRuntime.run`, the service
loop (one poll of every socket) and the worker loop.

A message through a worker: :meth:`~NodeRuntime._run_worker` receives it; ``_on_item`` makes
its :class:`~beampipe.runtime.acks.Receipt`, drops it if it is a duplicate
(:mod:`~beampipe.runtime.durability`), opens its stream (:mod:`~beampipe.runtime.streams`) and
hands it to :meth:`Intake.accept` (reorder buffer, event), which passes what is next in line to
``_process``: :meth:`ErrorPolicy.process` calls the worker, :meth:`Emitter.emit` checks and
sends the results (what cannot be sent goes to :meth:`ErrorPolicy.refused`), the receipt gives
the credit back, and the input is acknowledged once the results are. A batching worker's inputs
wait in the intake's batch (:mod:`~beampipe.runtime.batches`) and go to ``_process_batch``
together: one :meth:`ErrorPolicy.process_batch` call, then each input's results are sent, its
credit given back and its acknowledgement settled as above, one input after the other.
"""

from __future__ import annotations

import math
import time
import traceback

import zmq

from beampipe.config import Pipeline
from beampipe.message import Event, Item, Message, WireError
from beampipe.runtime.acks import Origin, Receipt, lineage_of
from beampipe.runtime.batches import Entry
from beampipe.runtime.failure import NodeFailure, call
from beampipe.runtime.intake import Intake
from beampipe.runtime.progress import Progress
from beampipe.runtime.source import SourceLoop
from beampipe.runtime.startup import Parts, build
from beampipe.runtime.streams import StreamState
from beampipe.runtime.wiring import Stopped, Wiring
from beampipe.transport import InputChannel
from beampipe.transport.security import Credentials
from beampipe.worker import ResultError, Source
from beampipe.worker.base import Node

RECEIVE_BATCH = 64
"""Items taken from one ready input before polling all sockets again ..."""
RECEIVE_TIME = 0.01
"""... or seconds spent on them: a slow worker (or sink) still sends its acknowledgements and
checkpoints in time, so that its upstream node does not retain more than its credit window
(a sink taking 0.1 s per message once acknowledged 64 messages at a time, and a 4 MiB-frame
worker before it held 64 frames instead of 16)."""


class NodeRuntime:
    """Runs one replica of one node. See the module docstring."""

    def __init__(
        self, control_endpoint: str, node: str, replica: int, incarnation: int = 0
    ) -> None:
        self.node = node
        self.replica = replica
        self.incarnation = incarnation
        """How often this replica was restarted before this process."""
        self.ctx = zmq.Context()
        self.wiring = Wiring(self.ctx, control_endpoint, node, replica, Credentials.from_env())
        self.worker: Node | None = None
        self.streams: dict[str, StreamState] = {}
        """The streams open here (kept by the stream book)."""
        self.intake = Intake(self._process, self._process_batch)
        self.progress = Progress(self.wiring, self.intake, self.streams)
        self.metrics = self.progress.metrics
        self.notes = self.progress.notes
        self.parts: Parts
        """The parts that need the worker, built by :meth:`_setup`."""

    def run(self) -> int:
        """Run to completion; the process exit status (0 done, 1 failed, 2 stopped).

        The worker is closed before ``done`` is reported, so a sink's files are complete when
        the launcher hears that the node is done; an error in ``close`` fails the run. A source
        whose ``generate`` raised (and that is not restarted) reports its error only once what
        it sent is processed downstream; its report says ``drained``.
        """
        status = 0
        failed: NodeFailure | None = None
        try:
            worker = self._setup()
            parts = self.parts
            if isinstance(worker, Source):
                loop = SourceLoop(
                    worker,
                    parts.spec,
                    self.wiring,
                    parts.book,
                    parts.policy,
                    self._wait,
                    parts.faults.kill_after,
                )
                failed = loop.run()
            else:
                self._run_worker()
            parts.emitter.finish()
            if failed is not None:
                self.progress.report(force=True)
                raise failed
            self.worker = None
            call(self.notes, None, None, worker.close)
            self.progress.done()
        except Stopped:
            status = 2
            self.progress.report(force=True)  # the launcher counts what was processed
        except Exception as exc:
            failure = exc if isinstance(exc, NodeFailure) else NodeFailure(None, None, exc)
            self.progress.report(force=True)
            failure.report(self.wiring.control, self.node, self.replica, failure is failed)
            status = 1
        finally:
            if self.worker is not None:
                try:
                    self.worker.close()
                except Exception:  # the run is already failing or stopping: log it only
                    traceback.print_exc()
            self.wiring.gate.close()
            self.ctx.destroy(linger=2000)
        return status

    def _setup(self) -> Node:
        """Join the pipeline, build the worker and the parts (:mod:`~beampipe.runtime.startup`);
        the worker."""
        self.notes.install()
        node = self.node
        setup = self.wiring.hello()
        pipeline = Pipeline.from_dict(setup.pipeline)
        cls = pipeline.node_class(node)
        worker = self.worker = call(self.notes, None, None, cls, pipeline.node_params(node), node)
        self.parts = build(
            self.wiring,
            pipeline,
            setup,
            worker,
            self.incarnation,
            self.streams,
            self.intake,
            self.progress,
            self._wait,
            self._stream_ended,
        )
        return worker

    # -- the service loop ----------------------------------------------------------------------

    def _service(self, timeout_ms: int, inputs: bool) -> list[InputChannel]:
        """Send what output batches hold, poll once (:meth:`Wiring.poll`), checkpoint a sink
        if due, send acknowledgements and progress; the input pipes with items, if
        ``inputs``."""
        parts = self.parts
        parts.emitter.flush()
        ready = self.wiring.poll(timeout_ms, inputs)
        if parts.durable.sink and parts.durable.due():
            parts.durable.checkpoint()
        for channel in self.wiring.inputs:
            channel.flush_acks()
        self.progress.report()
        return ready

    def _wait(self, timeout_ms: int) -> None:
        """Service the sockets, not the inputs, waiting at most ``timeout_ms``."""
        self._service(timeout_ms, inputs=False)

    def _stream_ended(self, stream: str, state: StreamState) -> None:
        """``stream`` ended here: a checkpoint holds it, the launcher hears of it."""
        if self.parts.durable.holds:
            self.parts.durable.checkpoint()
        self.progress.stream_ended(stream, state)

    # -- the worker loop -----------------------------------------------------------------------

    def _run_worker(self) -> None:
        """Receive and process until every input pipe has finished; then end the open streams
        and finish the worker (:meth:`StreamBook.finish`)."""
        wiring, intake, parts = self.wiring, self.intake, self.parts
        book, emitter, durable = parts.book, parts.emitter, parts.durable
        while not all(ch.finished for ch in wiring.inputs):
            timeout = 1000
            for deadline in (intake.deadline, durable.deadline):
                if deadline is not None:
                    wait = math.ceil((deadline - time.monotonic()) * 1000)
                    timeout = max(0, min(timeout, wait))
            ready = self._service(timeout, inputs=True)
            if durable.snapshots is not None and durable.due():
                durable.checkpoint()
            while wiring.gone:
                book.pipe_gone(wiring.gone.pop())
            while wiring.redelivered:
                book.pipe_finished(wiring.redelivered.pop())
            intake.expire()
            emitter.more_input = bool(wiring.outputs)
            for channel in ready:
                self._receive(channel)
            emitter.more_input = emitter.batchable = False
        book.finish()
        if durable.holds:
            durable.checkpoint()
        for channel in wiring.inputs:
            channel.flush_acks()

    def _receive(self, channel: InputChannel) -> None:
        """Handle what ``channel`` has, up to :data:`RECEIVE_BATCH` items or
        :data:`RECEIVE_TIME` seconds."""
        pipe = self.wiring.index[channel]
        due = time.monotonic() + RECEIVE_TIME
        for _ in range(RECEIVE_BATCH):
            try:
                item = channel.receive(block=False)
            except zmq.Again:
                break
            except WireError as exc:
                self.parts.policy.corrupt(channel, exc)
                Receipt(channel).discard()
                continue
            if item is None:
                self.parts.book.pipe_finished(pipe)
                break
            self._on_item(pipe, channel, item)
            if time.monotonic() >= due:
                break

    def _on_item(self, pipe: int, channel: InputChannel, item: Item) -> None:
        """An item arrived on input pipe ``pipe``."""
        receipt, parts = Receipt(channel), self.parts
        if not isinstance(item, Message):  # what the hooks it causes send is held for it
            origin = Origin([receipt])
            parts.book.on_marker(pipe, item, origin)
            parts.durable.settle(origin)
            return
        metrics = self.metrics
        metrics.messages_in += 1
        metrics.bytes_in += receipt.size
        if parts.durable.duplicate(item, channel):
            receipt.discard()
            return
        if item.stream in parts.book.closed:
            metrics.late += 1
            self.progress.changed = True
            parts.book.reopen(pipe, item.stream)
        else:
            parts.book.open(item.stream)
        item.port = channel.port
        if item.timestamps:
            metrics.latency.add(time.time() - item.timestamps[0][1])
        self.intake.accept(pipe, receipt, item)

    def _process(self, item: Message | Event, receipts: list[Receipt]) -> None:
        """Call the worker on a message or event; then return the credit of its parts, which
        are acknowledged when the results are (see :meth:`Durability.settle`)."""
        parts = self.parts
        state = self.streams.get(item.stream) or parts.book.open(item.stream)
        base = lineage_of(item)
        emitter = parts.emitter
        emitter.call_starts()
        origin = Origin(receipts)
        previous, emitter.origin = emitter.origin, origin
        t_start = time.time()
        try:
            result = parts.policy.process(item)
            elapsed = time.time() - t_start
            self.metrics.process_time.add(elapsed)
            emitter.call_took(elapsed)
            emitter.emit(result, item, base)
        except ResultError as exc:
            parts.policy.refused(item, exc)
        finally:
            emitter.origin = previous
        self._settle(origin, item, state, t_start)

    def _process_batch(self, entries: list[Entry]) -> None:
        """Call a batching worker on several inputs at once; then each one's results go out and
        its credit and acknowledgement are settled as in :meth:`_process`. If the call raised,
        each input goes through :meth:`_process` instead."""
        parts = self.parts
        policy, emitter = parts.policy, parts.emitter
        items = [item for item, _ in entries]
        emitter.call_starts()
        t_start = time.time()
        refused: ResultError | None = None
        try:
            results = policy.process_batch(items)
        except ResultError as exc:
            results, refused = [None] * len(items), exc
        if results is None:
            for item, receipts in entries:
                self._process(item, receipts)
            return
        elapsed = (time.time() - t_start) / len(items)
        emitter.call_took(elapsed)
        for (item, receipts), result in zip(entries, results, strict=True):
            state = self.streams.get(item.stream) or parts.book.open(item.stream)
            self.metrics.process_time.add(elapsed)
            origin = Origin(receipts)
            previous, emitter.origin = emitter.origin, origin
            try:
                if refused is not None:
                    raise refused
                emitter.emit(result, item, lineage_of(item))
            except ResultError as exc:
                policy.refused(item, exc)
            finally:
                emitter.origin = previous
            self._settle(origin, item, state, t_start)

    def _settle(
        self, origin: Origin, item: Message | Event, state: StreamState, t_start: float
    ) -> None:
        """The worker call on ``item`` is over: its inputs' credit goes back, their
        acknowledgement is settled, the stream counts it."""
        parts = self.parts
        origin.credit()
        parts.durable.settle(origin, item)
        self.progress.count(state, t_start)
        if parts.faults.kill_after and self.metrics.messages_in >= parts.faults.kill_after:
            parts.faults.kill()
