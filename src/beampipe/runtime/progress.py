"""What a node tells its launcher while it runs: its messages per stream and its metrics
(docs/dataflow.md, "Metrics"), at most every :data:`PROGRESS_INTERVAL` when something changed
and at least every :data:`HEARTBEAT_INTERVAL` while its loop turns (the launcher takes a
replica that holds messages and says nothing for its ``hang_timeout`` as hung:
docs/reliability.md, "Hangs"), and each stream's end here with its counts and times."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from beampipe.runtime.control import Done, StreamEnded
from beampipe.runtime.control import Progress as ProgressReport
from beampipe.runtime.intake import Intake
from beampipe.runtime.metrics import NodeMetrics
from beampipe.runtime.notes import NoteLog
from beampipe.runtime.wiring import Wiring

PROGRESS_INTERVAL = 0.5
"""Seconds between progress reports to the launcher."""
HEARTBEAT_INTERVAL = 1.0
"""Seconds after which a report goes out even if nothing changed: the node's loop is alive."""


@dataclass
class StreamCount:
    """What a node counts of a stream: messages handled, and when (unix time) the first one
    started and the last one ended."""

    messages: int = 0
    t_first: float = 0.0
    t_last: float = 0.0


class Progress:
    """What one node replica has done and noted, and its reports to the launcher.

    Args:
        wiring: the node's sockets: the control channel, and the output ports whose counts go
            into the metrics.
        intake: its reorder buffers and events, whose counts go into the metrics too.
        streams: the streams open at the node (the stream book's).

    Attributes:
        metrics: the node's counters.
        notes: its warnings, drops and non-finite results (:mod:`beampipe.runtime.notes`).
        info: what the node reported about itself (its :attr:`beampipe.Worker.info`, shared
            once the node is built), sent in the metrics' ``info``.
        changed: a count was changed since the last report (a note added counts too).
    """

    def __init__(self, wiring: Wiring, intake: Intake, streams: Mapping[str, StreamCount]) -> None:
        self.control = wiring.control
        self.inputs = wiring.inputs
        self.outputs = wiring.outputs
        self.gate = wiring.gate
        self.intake = intake
        self.streams = streams
        self.metrics = NodeMetrics()
        self.notes = NoteLog()
        self.info: dict[str, str] = {}
        self.changed = False
        self._last = 0.0

    def report(self, force: bool = False) -> None:
        """Send a progress report if something changed and the last one is old enough, if the
        last one is :data:`HEARTBEAT_INTERVAL` old, or if ``force``."""
        now = time.monotonic()
        since = now - self._last
        changed = self.changed or self.notes.changed
        if force or since >= HEARTBEAT_INTERVAL or (changed and since >= PROGRESS_INTERVAL):
            counts = {name: s.messages for name, s in self.streams.items()}
            report = ProgressReport(counts, self.collect().snapshot(), self.waiting())
            self.control.send(report)
            self._last = now
            self.changed = False

    def waiting(self) -> dict[str, int]:
        """Per downstream replica (``node#replica``): items sent to it and not yet
        acknowledged, where there are any."""
        out: dict[str, int] = {}
        for output in self.outputs.values():
            for peer in output.peers.values():
                if peer.retained:
                    key = f"{peer.target.partition('.')[0]}#{peer.replica}"
                    out[key] = out.get(key, 0) + len(peer.retained)
        return out

    def count(self, state: StreamCount, t_start: float) -> None:
        """One message of the stream was handled, starting at unix time ``t_start``."""
        state.messages += 1
        state.t_first = state.t_first or t_start
        state.t_last = time.time()
        self.changed = True

    def stream_ended(self, stream: str, state: StreamCount) -> None:
        """``stream`` ended here: report the progress, then the stream's end."""
        self.report(force=True)
        self.control.send(StreamEnded(stream, state.messages, state.t_first, state.t_last))

    def done(self) -> None:
        """Report the node done: what each output port sent, and the metrics."""
        self.report(force=True)
        sent = {p: o.sent for p, o in self.outputs.items()}
        self.control.send(Done(sent, self.collect().snapshot()))

    def collect(self) -> NodeMetrics:
        """The node's metrics, with the counts of its output ports, notes and intake."""
        m = self.metrics
        outputs = self.outputs.values()
        m.messages_out = sum(o.sent for o in outputs)
        m.bytes_out = sum(o.sent_bytes for o in outputs)
        m.cpu_time = time.process_time()
        m.in_flight = sum(o.in_flight for o in outputs)
        m.unacknowledged = sum(ch.unacknowledged for ch in self.inputs)
        m.retained = sum(o.retained for o in outputs)
        m.resent = sum(o.resent for o in outputs)
        m.rejected_frames = sum(o.rejected for o in outputs)
        m.refused_connections = self.gate.refused
        m.in_flight_bytes = sum(o.in_flight_bytes for o in outputs)
        m.peak_in_flight = sum(o.peak_in_flight for o in outputs)
        m.peak_in_flight_bytes = sum(o.peak_in_flight_bytes for o in outputs)
        m.warnings = self.notes.warnings
        m.notes = self.notes.snapshot()
        m.info = dict(self.info)
        self.intake.count(m)
        return m
