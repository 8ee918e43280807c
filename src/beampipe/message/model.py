"""The units that flow through a pipeline: messages and stream markers.

A *stream* is an ordered, finite sequence of messages (one scan, one acquisition). It is opened by a
:class:`StreamStart` that carries the stream's metadata (e.g. the file header of a scan), holds
:class:`Message` s with ids 1, 2, 3, ... and is closed by an :class:`EndOfStream` that states the
last id and may name the next stream, as ASAP::O's "finished stream" flag does
(https://asapo.pages.desy.de/asapo/docs/consumer-clients).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DataValue = np.ndarray | bytes


@dataclass(slots=True)
class Message:
    """One unit of data: one detector image, one scan point, one spectrum.

    Attributes:
        stream: name of the stream the message belongs to. Left empty by a worker, it is filled in
            by the runtime from the input message being processed.
        id: 1-based position in the stream, as issued by the source. Messages derived from an
            input keep its id (0 = "fill in from the input message").
        data: named arrays (any shape, numeric dtype) or raw ``bytes``. Python scalars given here
            are converted to 0-d numpy arrays. Arrays received from the wire are read-only views
            of the network buffers: copy before modifying.
        metadata: JSON-able dict (str keys; str, int, float, bool, None, lists and dicts thereof).
        timestamps: ``[node, unix time in s]`` pairs: the source's first, then one per hop, so the
            end-to-end latency of every message can be measured.
        port: name of the input port the message arrived on (set by the runtime; not sent).
        lineage: 63-bit fingerprint of where the message came from (set by the runtime: the
            source's stream and id, then each hop's origin and output position), equal for the
            same result computed twice, so a sink can drop the duplicates that redelivery after
            a crash creates (see docs/reliability.md).
    """

    data: dict[str, DataValue] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    stream: str = ""
    id: int = 0
    timestamps: list[list[Any]] = field(default_factory=list)
    port: str = ""
    lineage: int = 0

    def __post_init__(self) -> None:
        for name, value in self.data.items():
            if not isinstance(value, np.ndarray | bytes):
                self.data[name] = np.asarray(value)

    def replace(self, **changes: Any) -> Message:
        """A copy with the given fields changed (arrays are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def stamp(self, node: str) -> None:
        """Append ``[node, now]`` to :attr:`timestamps`."""
        self.timestamps.append([node, time.time()])


@dataclass(slots=True)
class StreamStart:
    """Opens a stream and carries its metadata (e.g. the header of the scan file)."""

    stream: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EndOfStream:
    """Closes a stream: ``last_id`` is the id of its last message, ``next_stream`` its successor
    (ASAP::O's finished-stream marker), if the source knows one. ``warnings``: what the nodes
    the stream went through noted while handling it, ``[[node, text, count], ...]`` (filled by
    the runtime, see :mod:`beampipe.runtime.notes`)."""

    stream: str
    last_id: int
    next_stream: str | None = None
    warnings: list[list[Any]] = field(default_factory=list)


@dataclass(slots=True)
class Event:
    """The messages with the same (stream, id) from several input ports of one node, e.g. a
    detector image and the I0 reading of the same trigger. A worker that sets ``events = True``
    receives these in :meth:`~beampipe.Worker.process` instead of single messages.

    Attributes:
        stream, id: what the messages share.
        messages: ``{input port: message}``.
        missing: the ports whose message had not arrived when the event's timeout expired or
            its stream ended (empty for a complete event).
    """

    stream: str
    id: int
    messages: dict[str, Message]
    missing: tuple[str, ...] = ()

    @property
    def timestamps(self) -> list[list[Any]]:
        """The timestamps of the part that left its source first (for latency)."""
        stamped = [m.timestamps for m in self.messages.values() if m.timestamps]
        return min(stamped, key=lambda t: t[0][1]) if stamped else []


Item = Message | StreamStart | EndOfStream
