"""Durability: what keeps a node's work safe when its process dies (docs/reliability.md,
"Acknowledgements and crash recovery").

* Sink checkpoints: a node without outputs acknowledges its inputs only after
  :meth:`beampipe.Worker.checkpoint` (e.g. the NeXus writer flushes its files), which is called
  at least every :data:`CHECKPOINT_EVERY` messages, half its input credit in bytes or
  :data:`CHECKPOINT_INTERVAL` seconds, and at every stream end.
* Snapshots: a stateful worker (``stateful = True``, :meth:`beampipe.Worker.snapshot`) is
  checkpointed the same way: once the results of what it processed are acknowledged downstream,
  its snapshot is pickled to the run directory, and only then are its inputs (and stream
  markers) acknowledged. A restarted process restores the last snapshot before anything else.
* De-duplication: a sink drops a message whose lineage it saw among the last ones from the same
  upstream node and port (:class:`beampipe.runtime.acks.Seen`); after a restore, a message the
  snapshot covers already is skipped if it comes again. Both count as ``duplicates``.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path

from beampipe.message import Event, Message
from beampipe.runtime.acks import Origin, Seen
from beampipe.runtime.failure import call
from beampipe.runtime.progress import Progress
from beampipe.runtime.streams import StreamBook
from beampipe.transport import InputChannel
from beampipe.worker.base import Node

CHECKPOINT_EVERY = 256
"""A sink checkpoints (:meth:`Worker.checkpoint`) at least every this many messages, or half
its input credit in bytes (so that what its upstream retains for it stays near one window) ..."""
CHECKPOINT_INTERVAL = 0.05
"""... and at most this many seconds after the oldest message not yet checkpointed."""


class Durability:
    """Checkpoints, snapshots and de-duplication of one node replica.

    Args:
        worker: the node's worker or source (only a :class:`~beampipe.Worker` is a sink or
            stateful, whose hooks are called here).
        book: the node's streams, which a snapshot lists.
        sink: the node has no output ports: inputs are acknowledged after checkpoints.
        snapshots: where a stateful worker's snapshots go (None: the worker is not stateful,
            or there is no run directory).
        byte_window: the input credit of each pipe in bytes.
        wait: services the node's sockets, not its inputs, for at most that many ms.

    Attributes:
        holds: inputs are acknowledged at checkpoints (:meth:`settle`), not when processed.
    """

    def __init__(
        self,
        worker: Node,
        book: StreamBook,
        sink: bool,
        snapshots: Path | None,
        byte_window: int,
        progress: Progress,
        wait: Callable[[int], object],
    ) -> None:
        self.worker = worker
        self.book = book
        self.sink = sink
        self.snapshots = snapshots
        self.byte_window = byte_window
        self.progress = progress
        self.notes = progress.notes
        self.metrics = progress.metrics
        self.wait = wait
        self.holds = sink or snapshots is not None
        self._unsaved: list[Origin] = []
        """Processed inputs that wait for the next checkpoint."""
        self._unsaved_since = 0.0
        self._unsaved_bytes = 0
        self._covered: list[int] = []
        """Lineages of the messages a stateful worker processed since its last snapshot."""
        self._skip: set[int] = set()
        """After a restore: lineages of messages the snapshot holds already, which may come
        again if their acknowledgement was lost with the process."""
        self._seen: dict[tuple[str, str], Seen] = {}
        """A sink's recent lineages per (upstream node, input port)."""

    def restore(self) -> None:
        """Restore the worker from the last snapshot of a process of this replica, if any."""
        if self.snapshots is None or not self.snapshots.exists():
            return
        state = pickle.loads(self.snapshots.read_bytes())
        call(self.notes, None, None, self.worker.restore, state["worker"])
        self.book.restore(state["open"], state["closed"])
        self._skip = set(state["covered"])

    def duplicate(self, msg: Message, channel: InputChannel) -> bool:
        """Whether ``msg`` (received on ``channel``) was processed already: covered by the
        restored snapshot, or, at a sink, seen recently. Counted."""
        if self._skip and msg.lineage in self._skip:
            self._skip.discard(msg.lineage)
        elif self.sink and msg.lineage:
            key = (channel.upstream.partition("#")[0], channel.port)
            seen = self._seen.get(key) or self._seen.setdefault(key, Seen())
            if seen.add(msg.lineage):
                return False
        else:
            return False
        self.metrics.duplicates += 1
        self.progress.changed = True
        return True

    def settle(self, origin: Origin, item: Message | Event | None = None) -> None:
        """The worker was called for ``item`` (None: a stream marker was handled):
        ``origin``'s inputs are acknowledged when its results are, or, if :attr:`holds`, after
        the next checkpoint (a sink's stream markers at once: a sink's checkpoint holds no
        stream state)."""
        if self.snapshots is None and (not self.sink or item is None):
            origin.done()
            return
        if not self._unsaved:
            self._unsaved_since = time.monotonic()
        self._unsaved.append(origin)
        self._unsaved_bytes += sum(r.size for r in origin.receipts)
        if self.snapshots is not None:
            if isinstance(item, Message):
                self._covered.append(item.lineage)
            elif item is not None:
                self._covered.extend(m.lineage for m in item.messages.values())

    @property
    def deadline(self) -> float | None:
        """When (monotonic seconds) the next checkpoint is due at the latest, if one is."""
        return self._unsaved_since + CHECKPOINT_INTERVAL if self._unsaved else None

    def due(self) -> bool:
        """A checkpoint is due."""
        return bool(self._unsaved) and (
            len(self._unsaved) >= CHECKPOINT_EVERY
            or self._unsaved_bytes >= self.byte_window // 2
            or time.monotonic() - self._unsaved_since >= CHECKPOINT_INTERVAL
        )

    def checkpoint(self) -> None:
        """A sink makes what it processed durable, a stateful worker saves its snapshot; then
        their inputs are acknowledged."""
        if self.snapshots is not None:
            # Take no input until the results of what was processed are acknowledged
            # downstream: the snapshot then holds exactly the messages it acknowledges, whose
            # results are safe, so after a restart they may be skipped if they come again.
            while any(origin.outstanding for origin in self._unsaved):
                self.wait(100)
            state = pickle.dumps(
                {
                    "worker": call(self.notes, None, None, self.worker.snapshot),
                    "open": list(self.book.streams),
                    "closed": list(self.book.closed),
                    "covered": self._covered,
                }
            )
            self._covered = []
            partial = self.snapshots.with_suffix(".partial")
            partial.write_bytes(state)
            partial.replace(self.snapshots)  # atomic: a kill leaves the old or the new one
        call(self.notes, None, None, self.worker.checkpoint)
        unsaved, self._unsaved = self._unsaved, []
        self._unsaved_bytes = 0
        for origin in unsaved:
            origin.done()
