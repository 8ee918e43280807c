"""What happens to a message between its arrival and the worker call: an ordered input port's
reorder buffer (:mod:`beampipe.runtime.ordering`) and event formation
(:mod:`beampipe.runtime.events`); docs/dataflow.md, "Ordered input ports" and "Events"; the
batch of a batching worker (:mod:`beampipe.runtime.batches`).

A message waiting here keeps its credit (its :class:`~beampipe.runtime.acks.Receipt` gives it
back when it is processed), except in a reorder buffer that releases in strict id order, which
is bounded by its capacity instead (:meth:`beampipe.runtime.ordering.Reorder.is_strict`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from beampipe.config import NodeSpec
from beampipe.message import Event, Message
from beampipe.runtime.acks import Receipt
from beampipe.runtime.batches import Batch, ProcessBatch
from beampipe.runtime.events import EventBuilder, Formed
from beampipe.runtime.metrics import NodeMetrics
from beampipe.runtime.ordering import Reorder
from beampipe.transport import InputChannel

Process = Callable[[Message | Event, list[Receipt]], None]
"""Calls the worker on a message or event made of the messages of these receipts."""


class Intake:
    """The reorder buffers and the event formation of one node; empty until :meth:`set_up`.

    Args:
        process: what is next in line goes there ...
        process_batch: ... or, for a batching worker (:meth:`set_up`), there, several at once.
    """

    def __init__(self, process: Process, process_batch: ProcessBatch | None = None) -> None:
        self.process = process
        self.process_batch = process_batch
        self.batch: Batch | None = None
        """The inputs waiting for a batching worker's ``process_batch``."""
        self._deliver: Process = process
        """Where what is next in line goes: ``process``, or the batch."""
        self.reorders: dict[str, Reorder] = {}
        """The reorder buffer of each ordered input port."""
        self.events: EventBuilder | None = None
        """Event formation, for a worker with ``events = True``."""
        self._late = 0
        """Late ids of the reorder buffers already added to the metrics."""

    def set_up(
        self,
        spec: NodeSpec,
        inputs: list[InputChannel],
        events: bool,
        batch: tuple[int, float] = (1, 0.0),
    ) -> None:
        """Make the reorder buffers of the node's ordered input ports, if the worker forms
        ``events`` its event builder, and if it batches (``batch``: its ``max_batch`` > 1 and
        ``max_wait``) its batch.

        Raises:
            ValueError: ``batch`` is out of range (see :class:`~beampipe.runtime.batches.Batch`).
        """
        size, wait = batch
        if size != 1 and self.process_batch is not None:
            self.batch = Batch(size, wait, self.process_batch, spec.name)
            self._deliver = self.batch.add
        ports = list(dict.fromkeys(ch.port for ch in inputs))
        for port in ports:
            if spec.is_ordered(port):
                pipes = [i for i, ch in enumerate(inputs) if ch.port == port]
                self.reorders[port] = Reorder(pipes, spec.reorder_buffer, spec.reorder_timeout)
        if events:
            options = spec.events or {}
            self.events = EventBuilder(
                ports, options.get("timeout", 5.0), options.get("incomplete", "deliver")
            )

    @property
    def deadline(self) -> float | None:
        """When the oldest event waiting for parts or the longest wait of a reorder buffer
        times out (monotonic seconds), if any."""
        deadlines = [r.deadline for r in self.reorders.values()]
        if self.events is not None:
            deadlines.append(self.events.next_deadline)
        if self.batch is not None:
            deadlines.append(self.batch.deadline)
        return min((d for d in deadlines if d is not None), default=None)

    def accept(self, pipe: int, receipt: Receipt, msg: Message) -> None:
        """``msg`` arrived on input pipe ``pipe``: process what is next in line."""
        reorder = self.reorders.get(msg.port)
        if reorder is None:
            if self.events is None:  # the common case, one call less
                self._deliver(msg, [receipt])
            else:
                self._next(receipt, msg)
            return
        if reorder.is_strict(msg.stream):
            receipt.credit()
        for _, (r, m) in reorder.push(pipe, msg.stream, msg.id, (receipt, msg)):
            self._next(r, m)

    def end(self, pipe: int, port: str, stream: str) -> None:
        """Pipe ``pipe`` (of input ``port``) ended ``stream``: release what its reorder buffer
        may now let go."""
        reorder = self.reorders.get(port)
        if reorder is not None:
            for _, (receipt, msg) in reorder.end(pipe, stream):
                self._next(receipt, msg)

    def pipe_gone(self, pipe: int, port: str) -> None:
        """The upstream replica of pipe ``pipe`` (of input ``port``) died for good: its
        reorder buffer releases in strict id order, the messages it holds with their credit
        back (:meth:`beampipe.runtime.ordering.Reorder.pipe_gone`)."""
        reorder = self.reorders.get(port)
        if reorder is not None:
            for receipt, _ in reorder.pipe_gone(pipe):
                receipt.credit()

    def flush(self, stream: str) -> None:
        """``stream`` ends here: its events still waiting for parts go on, and what waits in
        the batch."""
        if self.events is not None:
            for formed in self.events.flush(stream):
                self._form(formed)
        self.release()

    def release(self) -> None:
        """What waits in the batch (of a batching worker) goes now."""
        if self.batch is not None:
            self.batch.release()

    def expire(self) -> None:
        """What reorder buffers held for longer than their timeout goes on; so do the events
        whose parts did not all come in time."""
        for reorder in self.reorders.values():
            if reorder.deadline is not None and reorder.deadline <= time.monotonic():
                for _, (receipt, msg) in reorder.expire():
                    self._next(receipt, msg)
        if self.events is not None:
            for formed in self.events.expire(time.monotonic()):
                self._form(formed)
        if self.batch is not None:
            self.batch.expire(time.monotonic())

    def count(self, metrics: NodeMetrics) -> None:
        """Put the messages held here and what went out of order or incomplete in
        ``metrics``."""
        metrics.held = sum(r.held for r in self.reorders.values())
        metrics.out_of_order = sum(r.out_of_order for r in self.reorders.values())
        late = sum(r.late for r in self.reorders.values())
        metrics.late += late - self._late  # the node counts late messages of ended streams
        self._late = late
        if self.events is not None:
            metrics.held += self.events.held
            metrics.incomplete_events = self.events.incomplete
            metrics.dropped_events = self.events.dropped
        if self.batch is not None:
            metrics.held += self.batch.held

    def _next(self, receipt: Receipt, msg: Message) -> None:
        """``msg`` is next in line: process it, or add it to its event."""
        if self.events is None:
            self._deliver(msg, [receipt])
            return
        for formed in self.events.add(msg.port, msg, receipt, time.monotonic()):
            self._form(formed)

    def _form(self, formed: Formed) -> None:
        if formed.drop:
            for receipt in formed.tokens:
                receipt.discard()
        else:
            self._deliver(formed.event, formed.tokens)
