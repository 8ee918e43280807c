"""What a node measures about itself: counts, bytes, processing time, latency, in-flight.

Each node replica keeps a :class:`NodeMetrics` and sends :meth:`NodeMetrics.snapshot` with its
progress reports; the launcher merges the replicas of a node with :func:`merge`. Times go into
:class:`Histogram` s with fixed log-spaced buckets, so histograms of several replicas add up
exactly and quantiles (p50, p99) of the merged distribution can be read off, at the resolution of
one bucket (20 per decade: a quantile is exact to within 12 %).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, fields
from typing import Any

BUCKETS_PER_DECADE = 20
LOWEST = 1e-6
"""Seconds: the upper edge of the first bucket (everything faster counts as 1 µs)."""
EDGES = [LOWEST * 10 ** (i / BUCKETS_PER_DECADE) for i in range(8 * BUCKETS_PER_DECADE + 1)]
"""Upper bucket edges in seconds, 1 µs to 100 s; a last bucket holds anything slower."""
INFO_SEPARATOR = ", "
"""Between the distinct values of an info key in merged metrics (replicas that differ)."""


@dataclass
class Histogram:
    """Counts of durations (s) per log-spaced bucket of :data:`EDGES`."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(EDGES) + 1))
    total: int = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(EDGES, seconds)] += 1
        self.total += 1

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total

    def quantile(self, q: float) -> float:
        """The duration (s) below which a fraction ``q`` of the samples lie: the upper edge of
        the bucket holding that sample (``nan`` without samples)."""
        if self.total == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return EDGES[min(i, len(EDGES) - 1)]
        return EDGES[-1]  # pragma: no cover - counts add up to total

    def to_list(self) -> list[int]:
        """Sparse form for the control channel: ``[index, count, index, count, ...]``."""
        return [x for i, n in enumerate(self.counts) if n for x in (i, n)]

    @classmethod
    def from_list(cls, pairs: list[int]) -> Histogram:
        h = cls()
        for i, n in zip(pairs[::2], pairs[1::2], strict=True):
            h.counts[i] += n
            h.total += n
        return h


@dataclass
class NodeMetrics:
    """Counters of one node replica (or, merged, of a node).

    Attributes:
        messages_in, bytes_in: messages received and their wire size in bytes.
        messages_out, bytes_out: messages sent on all output ports and their wire bytes (a
            message broadcast to several replicas counts once).
        process_time: seconds spent in the worker's ``process`` per message (a batching
            worker's ``process_batch`` call: its time divided among its messages).
        latency: seconds from the source's timestamp to this node's receipt, per message (at a
            sink: the end-to-end latency).
        held: messages received and not yet processed (waiting in a reorder buffer, for the
            other parts of an event, or in the batch of a batching worker).
        unacknowledged: input items received and not yet acknowledged upstream (being
            processed, held, or with results not yet acknowledged downstream): what the
            launcher's hang detection calls holding messages (docs/reliability.md, "Hangs").
        in_flight: messages sent downstream and not yet processed there (credit in use; a
            message sent to several replicas counts once per replica).
        in_flight_bytes: their wire bytes.
        peak_in_flight, peak_in_flight_bytes: the largest values these reached in the run (per
            output port, summed over ports and replicas).
        incomplete_events, dropped_events: events delivered with missing parts, or dropped.
        out_of_order: messages an ordered port had to let through out of order because its
            reorder buffer was full.
        cpu_time: CPU seconds (user + system, all threads) the process has used so far.
        corrupt_frames: received frame sequences that could not be decoded (dropped, recorded
            in the dead-letter file).
        skipped: messages whose processing failed and that went to the dead-letter file.
        retries: attempts repeated after a :class:`beampipe.TransientError`.
        retained: items sent downstream and not yet acknowledged (kept to be sent again).
        resent: items sent again to a restarted downstream replica.
        duplicates: messages a sink received twice (same lineage, after a redelivery) and
            dropped.
        late: messages that arrived after their stream had ended here.
        restarts: processes of the node that died and were restarted (set by the launcher).
        missing: ids a source skipped and never issued (recorded in the dead-letter file).
        rejected_frames: control frames an output port dropped: from no known peer, or not of
            the protocol (each one is named in the node's log).
        refused_connections: connections to the node's output ports or tap refused because
            the peer did not prove the run's credentials (:mod:`beampipe.transport.security`;
            named in the node's log).
        warnings: warnings raised inside the node: Python ``warnings`` (numpy's floating-point
            warnings among them) and ``logging`` records at WARNING and above.
        dropped: inputs the node's own code dropped through :meth:`beampipe.Worker.dead_letter`
            (e.g. a corrupt detector image; recorded in the dead-letter file).
        nonfinite: NaN and infinite values in the floating-point arrays the node sent.
        notes: the distinct warnings, drops, skips and non-finite results, at most
            :data:`beampipe.runtime.notes.MAX_NOTES`: ``{key: [first text, count, stream,
            id]}``, stream and id (or None) of the first occurrence (see
            :mod:`beampipe.runtime.notes`).
        info: facts the node reported about itself that are not counts
            (:meth:`beampipe.Worker.report_info`): ``{key: value}``, both text, e.g.
            ``{"execution_provider": "CPUExecutionProvider"}``; merged, the distinct values of
            each key joined by :data:`INFO_SEPARATOR` in the order the parts give them.
    """

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    process_time: Histogram = field(default_factory=Histogram)
    latency: Histogram = field(default_factory=Histogram)
    held: int = 0
    unacknowledged: int = 0
    in_flight: int = 0
    in_flight_bytes: int = 0
    peak_in_flight: int = 0
    peak_in_flight_bytes: int = 0
    incomplete_events: int = 0
    dropped_events: int = 0
    out_of_order: int = 0
    cpu_time: float = 0.0
    corrupt_frames: int = 0
    skipped: int = 0
    retries: int = 0
    retained: int = 0
    resent: int = 0
    duplicates: int = 0
    late: int = 0
    restarts: int = 0
    missing: int = 0
    rejected_frames: int = 0
    refused_connections: int = 0
    warnings: int = 0
    dropped: int = 0
    nonfinite: int = 0
    notes: dict[str, list[Any]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """A msgpack-able dict; :meth:`from_snapshot` rebuilds it."""
        out: dict[str, Any] = {}
        for name, value in vars(self).items():
            out[name] = value.to_list() if isinstance(value, Histogram) else value
        return out

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> NodeMetrics:
        histograms = {f.name for f in fields(cls) if f.type in (Histogram, "Histogram")}
        values = {k: Histogram.from_list(v) if k in histograms else v for k, v in data.items()}
        return cls(**values)


def merge(parts: list[NodeMetrics]) -> NodeMetrics:
    """The metrics of a node from those of its replicas: counts add, histograms merge, notes of
    the same key add their counts (the first part's text and place are kept), info keeps the
    distinct values of each key (:func:`merge_info`)."""
    total = NodeMetrics()
    for part in parts:
        for name, value in vars(part).items():
            if isinstance(value, Histogram):
                getattr(total, name).merge(value)
            elif name == "info":
                total.info = merge_info([total.info, value])
            elif isinstance(value, dict):
                notes = getattr(total, name)
                for key, (text, count, stream, msg_id) in value.items():
                    if key in notes:
                        notes[key][1] += count
                    else:
                        notes[key] = [text, count, stream, msg_id]
            else:
                setattr(total, name, getattr(total, name) + value)
    return total


def merge_info(parts: list[dict[str, str]]) -> dict[str, str]:
    """The info of several replicas as one: per key, its distinct values in the order first
    given, joined by :data:`INFO_SEPARATOR` (a value already joined counts as its parts, so
    merging merged info gives the same). ``[{"p": "CUDA"}, {"p": "CPU"}, {"p": "CUDA"}]`` gives
    ``{"p": "CUDA, CPU"}``."""
    values: dict[str, list[str]] = {}
    for part in parts:
        for key, value in part.items():
            seen = values.setdefault(key, [])
            for v in value.split(INFO_SEPARATOR):
                if v not in seen:
                    seen.append(v)
    return {key: INFO_SEPARATOR.join(seen) for key, seen in values.items()}
