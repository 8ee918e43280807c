"""The metadata ``process`` of a worker's results (how they were made: program, version,
parameters; the NeXus writer stores it as an NXprocess), sent once per stream and replica rather
than on every message.

The writer reads ``process`` from a port's first message of a stream, and a reducer such as
``map`` from the first it folds. Without ``ordered:`` that is the first message to arrive, which
is some replica's first result of the stream; with ``ordered:`` it is the lowest id, which is
below every id its replica had sent before. :class:`ProcessOnce` puts ``process`` on exactly
those results, so each replica sends it once per stream, or again when a lower id comes after
(frames finishing out of order, e.g. waiting for an event's other part).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProcessOnce"]


class ProcessOnce:
    """Stamps the metadata ``process`` on the results that may be a stream's first.

    Args:
        process: the description (a JSON-able dict), the same for every result of the node.
    """

    def __init__(self, process: dict[str, Any]) -> None:
        self.process = process
        self._lowest: dict[str, int] = {}
        """Per stream, the lowest id this replica sent ``process`` with."""

    def stamp(self, metadata: dict[str, Any], stream: str, msg_id: int) -> None:
        """Set ``metadata["process"]`` if the result ``msg_id`` of ``stream`` is this replica's
        first of the stream or below every id it stamped; otherwise remove a ``process`` that
        came with the input (an upstream node's, which this node's replaces)."""
        if msg_id < self._lowest.get(stream, msg_id + 1):
            metadata["process"] = self.process
            self._lowest[stream] = msg_id
        else:
            metadata.pop("process", None)

    def forget(self, stream: str) -> None:
        """Drop what is kept of ``stream`` (call at its end)."""
        self._lowest.pop(stream, None)
