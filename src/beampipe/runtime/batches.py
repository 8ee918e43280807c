"""The batch of a batching worker (:attr:`beampipe.Worker.max_batch` > 1): its inputs that wait
for one :meth:`beampipe.Worker.process_batch` call (docs/nodes.md, "Your own node").

The inputs come in the order the worker would have been called on them (after the reorder
buffers and event formation of :mod:`beampipe.runtime.intake`) and go out together, in that
order: when ``max_batch`` of them are there, when ``max_wait`` seconds have passed since the
first came (the node loop wakes up for it: :attr:`Batch.deadline`), and before a stream ends
(:meth:`Batch.release`). Waiting inputs keep their credit, as the parts of an event do; each is
acknowledged once its own results are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from beampipe.message import Event, Message
from beampipe.runtime.failure import in_hook
from beampipe.runtime.notes import NoteLog
from beampipe.worker import ResultError, Worker
from beampipe.worker.base import Output

Entry = tuple[Message | Event, list[Any]]
"""An input and the receipts of its messages (:class:`beampipe.runtime.acks.Receipt`)."""

ProcessBatch = Callable[[list[Entry]], None]
"""Calls the worker on the inputs of these entries at once."""


class Batch:
    """The inputs waiting for one ``process_batch`` call.

    Args:
        size: ``max_batch``, an int of 1 or more.
        wait: ``max_wait``, seconds >= 0.
        process: where a full or due batch goes.
        node: the node's name, for the errors.

    Raises:
        ValueError: ``size`` or ``wait`` is out of range (the text names the node).
    """

    def __init__(self, size: int, wait: float, process: ProcessBatch, node: str = "") -> None:
        if type(size) is not int or size < 1:
            raise ValueError(f"{node}: max_batch is {size!r}: an int of 1 or more")
        if not isinstance(wait, int | float) or not wait >= 0:
            raise ValueError(f"{node}: max_wait is {wait!r}: seconds >= 0")
        self.size = size
        self.wait = float(wait)
        self.process = process
        self.entries: list[Entry] = []
        self.deadline: float | None = None
        """When (monotonic seconds) the waiting inputs go at the latest; None if none wait."""

    def add(self, item: Message | Event, receipts: list[Any]) -> None:
        """``item`` is next in line: it waits, and the batch goes if it is full."""
        if not self.entries:
            self.deadline = time.monotonic() + self.wait
        self.entries.append((item, receipts))
        if len(self.entries) >= self.size:
            self.release()

    def expire(self, now: float) -> None:
        """The batch goes if its deadline has passed by ``now`` (monotonic seconds)."""
        if self.deadline is not None and self.deadline <= now:
            self.release()

    def release(self) -> None:
        """What waits goes now (if anything does)."""
        if self.entries:
            entries, self.entries, self.deadline = self.entries, [], None
            self.process(entries)

    @property
    def held(self) -> int:
        """Inputs waiting."""
        return len(self.entries)


def call_batch(worker: Worker, items: list[Message | Event], notes: NoteLog) -> list[Output] | None:
    """``worker.process_batch(items)``, the generators among its results run: one result per
    item. None if it raised, which is noted in ``notes`` once per kind of exception: the caller
    then calls ``process`` on each item, so that an error names the item that caused it.

    Raises:
        ResultError: it returned something else than a list of ``len(items)`` results.
    """
    notes.stream, notes.msg_id = items[0].stream, items[0].id
    try:
        results = worker.process_batch(items)
        if isinstance(results, list):  # their code runs now, where its errors are caught
            results = [list(r) if type(r) is GeneratorType else r for r in results]
    except Exception as raised:
        exc = in_hook(raised)
        kind = type(exc).__name__
        notes.add(
            f"batch:{kind}",
            f"process_batch() raised {kind}: {exc}; its messages were processed one by one",
        )
        return None
    if not isinstance(results, list) or len(results) != len(items):
        kind = type(results).__name__
        got = f"{len(results)} results" if isinstance(results, list) else f"a {kind}"
        raise ResultError(
            f"process_batch() returned {got} for {len(items)} messages: it returns a list with "
            "one result per message, in their order",
            "batch",
        )
    return results
