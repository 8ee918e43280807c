"""The error policy: what an exception in a worker's ``process`` does, and the dead-letter
records of what a node could not use (docs/reliability.md, "Errors inside a worker").

:meth:`ErrorPolicy.process` sees the exception as the worker raised it: a
:class:`beampipe.TransientError` is tried again up to ``retries`` times, ``retry_delay`` seconds
apart; then the node's ``on_error`` applies: ``fail_fast`` stops the node with a
:class:`~beampipe.runtime.failure.NodeFailure` (as an exception in any other hook does),
``skip`` records the message in the dead-letter file (:mod:`beampipe.runtime.deadletter`) and
goes on; so does a result that cannot be sent (:meth:`ErrorPolicy.refused`, a
:class:`beampipe.ResultError`). The dead-letter file also gets the inputs a worker drops
(:meth:`beampipe.Worker.dead_letter`, :meth:`ErrorPolicy.dropped`), the frame sequences that
could not be decoded (:meth:`ErrorPolicy.corrupt`) and the ids a source never issued
(:meth:`ErrorPolicy.missing`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import GeneratorType

from beampipe.config import NodeSpec
from beampipe.message import Event, Message, WireError
from beampipe.runtime import deadletter
from beampipe.runtime.batches import call_batch
from beampipe.runtime.failure import NodeFailure, in_hook
from beampipe.runtime.notes import NoteLog
from beampipe.runtime.progress import Progress
from beampipe.runtime.wiring import Wiring, log
from beampipe.transport import InputChannel
from beampipe.worker import TransientError, Worker
from beampipe.worker.base import Node, Output, ResultError


class ErrorPolicy:
    """Calls a worker's ``process`` under the node's ``retries`` and ``on_error``, and writes
    the node's dead-letter records.

    Args:
        dead_letter: the pipeline's dead-letter file.
        worker: the node's worker or source (:meth:`process` is for a
            :class:`~beampipe.Worker` only).
        wait: services the node's sockets, not its inputs, for at most that many ms.
    """

    def __init__(
        self,
        wiring: Wiring,
        spec: NodeSpec,
        dead_letter: str,
        worker: Node,
        progress: Progress,
        wait: Callable[[int], object],
    ) -> None:
        self.node = wiring.node
        self.replica = wiring.replica
        self.path = dead_letter
        self.worker = worker
        self.progress = progress
        self.notes = progress.notes
        self.metrics = progress.metrics
        self.wait = wait
        self.retries = spec.retries
        self.retry_delay = spec.retry_delay
        self.skip = spec.on_error == "skip"

    def process(self, item: Message | Event) -> Output:
        """``worker.process(item)``, tried again after a TransientError up to ``retries``
        times; if it still raises, nothing (``skip``, recorded in the dead-letter file).

        Raises:
            NodeFailure: it raised and the policy is ``fail_fast``.
        """
        attempt = 0
        while True:
            self.notes.stream, self.notes.msg_id = item.stream, item.id  # what it warns
            try:
                result = self.worker.process(item)
                if type(result) is GeneratorType:  # its code runs now, under the policy
                    return list(result)
                return result
            except Exception as raised:
                exc = in_hook(raised)
                if isinstance(exc, TransientError) and attempt < self.retries:
                    attempt += 1
                    self.metrics.retries += 1
                    self._pause(self.retry_delay)
                    continue
                if not self.skip:
                    raise NodeFailure(item.stream, item.id, exc) from exc
                self._skipped(item, exc)
                return None

    def process_batch(self, items: list[Message | Event]) -> list[Output] | None:
        """``worker.process_batch(items)`` (:func:`~beampipe.runtime.batches.call_batch`): one
        result per item, or None if it raised: the caller then processes the items one by one,
        under :meth:`process`.

        Raises:
            ResultError: it returned something else than a list of ``len(items)`` results.
        """
        assert isinstance(self.worker, Worker)  # only a worker batches
        return call_batch(self.worker, items, self.notes)

    def refused(self, item: Message | Event, exc: ResultError) -> None:
        """What ``process`` returned for ``item`` (or, from a source, the message ``item``
        itself) cannot be sent: skip it (recorded in the dead-letter file) or fail.

        Raises:
            NodeFailure: the policy is ``fail_fast``.
        """
        exc = exc.with_traceback(None)  # the runtime's frames: the text says it all
        if not self.skip:
            raise NodeFailure(item.stream, item.id, exc)
        self._skipped(item, exc)

    def stream_end(self, stream: str, last_id: int, hook: Callable[[str], Output]) -> Output:
        """``hook(stream)`` (the worker's ``on_stream_end``) under ``on_error``: with ``skip``,
        an exception records the stream's end (id ``last_id``) in the dead-letter file, is
        counted as skipped, and nothing is sent for it; the stream still ends downstream.

        Raises:
            NodeFailure: it raised and the policy is ``fail_fast``.
        """
        self.notes.stream, self.notes.msg_id = stream, None
        try:
            result = hook(stream)
            if type(result) is GeneratorType:  # its code runs now, under the policy
                return list(result)
            return result
        except Exception as raised:
            exc = in_hook(raised)
            if not self.skip:
                raise NodeFailure(stream, None, exc) from exc
            self._skipped(Message(stream=stream, id=last_id), exc)
            return None

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` while answering control and credit frames (not reading inputs)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.wait(max(1, int(left * 1000)))

    def _skipped(self, item: Message | Event, exc: Exception) -> None:
        deadletter.record(self.path, self.node, self.replica, item, exc)
        cause = f":{exc.cause}" if isinstance(exc, ResultError) else ""
        self.notes.add(
            f"skipped:{type(exc).__name__}{cause}",
            f"messages skipped after {type(exc).__name__}: {exc} (on_error: skip)",
        )
        self.metrics.skipped += 1
        self.progress.changed = True

    def dropped(self, item: Message | Event, reason: str | BaseException) -> None:
        """:meth:`beampipe.Worker.dead_letter`: count the input the worker dropped, note its
        reason, and record it in the dead-letter file."""
        self.metrics.dropped += 1
        self.progress.changed = True
        text = note_drop(self.notes, item, reason)
        if text is not None:
            log(f"{self.node}: dropped stream {item.stream!r} id {item.id}: {text}")
        deadletter.record(self.path, self.node, self.replica, item, reason)

    def corrupt(self, channel: InputChannel, exc: WireError) -> None:
        """The last frame sequence from ``channel`` could not be decoded: count it and record
        it (the caller gives its credit back and acknowledges it)."""
        self.metrics.corrupt_frames += 1
        self.progress.changed = True
        deadletter.record_corrupt(
            self.path, self.node, self.replica, channel.upstream, channel.last_size, exc
        )

    def missing(self, stream: str, first: int, last: int, why: str) -> None:
        """Ids ``first`` to ``last`` (both included) of ``stream`` were never issued by this
        source: count them and record them (one dead-letter line for the range)."""
        self.metrics.missing += last - first + 1
        self.progress.changed = True
        deadletter.record_missing(self.path, self.node, self.replica, stream, first, last, why)


def note_drop(notes: NoteLog, item: Message | Event, reason: str | BaseException) -> str | None:
    """Note an input the worker dropped (:meth:`beampipe.Worker.dead_letter`) in ``notes``, on
    its stream, keyed by the reason's exception type (or its first 60 characters); the
    reason's text if it is the first of its kind, else None."""
    kind = type(reason).__name__ if isinstance(reason, BaseException) else str(reason)[:60]
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else reason
    new = notes.add(f"dropped:{kind}", f"inputs dropped: {text}", 1, (item.stream, item.id))
    return text if new else None
