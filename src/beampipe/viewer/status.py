"""The run as the page shows it: per node state, replicas, rates and metrics; the streams.

:class:`RunState` is a launcher observer (:class:`beampipe.launch.replica.RunObserver`): the
viewer tees the launcher's reports to it (:class:`Tee`) next to the terminal display, for the
streams. Its :meth:`RunState.sample` turns the launcher's latest published
:class:`~beampipe.launch.status.RunStatus` (an immutable snapshot, safe to read from the
viewer's threads) into the status sent to the browsers, with the same state names and counts
as ``beampipe status``.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from beampipe.config import Pipeline
from beampipe.launch.status import RunStatus, errors_of, warnings_of
from beampipe.runtime.metrics import Histogram, NodeMetrics

RATE_WINDOW = 2.0
"""Seconds over which msgs/s and MB/s are averaged."""

_NODE = re.compile(r"^node '([^']+)'")


class Tee:
    """A launcher observer that passes every report on to each of ``observers`` in turn."""

    def __init__(self, *observers: Any) -> None:
        self.observers = observers

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        for o in self.observers:
            o.progress(node, replica, streams)

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        for o in self.observers:
            o.stream_end(node, replica, report)

    def failure(self, text: str) -> None:
        for o in self.observers:
            o.failure(text)


@dataclass
class _Stream:
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    """Messages handled so far per (node, replica)."""
    ended: set[tuple[str, int]] = field(default_factory=set)
    """(node, replica) pairs that reported the stream's end."""


class _Rate:
    """Messages and bytes per second of one node over the last :data:`RATE_WINDOW` seconds."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque()

    def add(self, t: float, messages: int, nbytes: int) -> tuple[float, float]:
        self.samples.append((t, messages, nbytes))
        while len(self.samples) > 2 and t - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        t0, m0, b0 = self.samples[0]
        if t <= t0:
            return 0.0, 0.0
        return (messages - m0) / (t - t0), (nbytes - b0) / (t - t0)


def _seconds(h: Histogram, q: float) -> float | None:
    return h.quantile(q) if h.total else None


class RunState:
    """Observer of a run and source of the page's status. Thread-safe.

    Args:
        pipeline: the pipeline being run.
        clock: monotonic seconds (for the rates).
    """

    def __init__(self, pipeline: Pipeline, clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.sources = pipeline.sources()
        self.sink_replicas = {
            (n, r) for n in pipeline.sinks() for r in range(pipeline.nodes[n].replicas)
        }
        self.started = time.time()
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._failures: list[str] = []
        """Everything the launcher reported as failed (fatal errors and notices of restarts)."""
        self._rates = {name: _Rate() for name in pipeline.nodes}

    # -- observer (called from the launcher's thread) ------------------------------------------

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        with self._lock:
            for name, count in streams.items():
                self._stream(name).counts[node, replica] = count

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        with self._lock:
            s = self._stream(report["stream"])
            s.counts[node, replica] = report.get("messages", s.counts.get((node, replica), 0))
            s.ended.add((node, replica))

    def failure(self, text: str) -> None:
        with self._lock:
            self._failures.append(text)

    def _stream(self, name: str) -> _Stream:
        s = self._streams.get(name)
        if s is None:
            s = self._streams[name] = _Stream()
        return s

    # -- reading -------------------------------------------------------------------------------

    def streams(self) -> list[dict[str, Any]]:
        """Per stream, in the order first seen: ``name``, ``state`` (``open`` or ``finished``:
        every sink replica reported its end), ``messages`` (sent by the sources; for a stream
        a worker made, the most any node handled) and ``nodes`` (messages handled per node)."""
        with self._lock:
            out = []
            for name, s in self._streams.items():
                nodes: dict[str, int] = {}
                for (node, _), n in s.counts.items():
                    nodes[node] = nodes.get(node, 0) + n
                at_sources = [nodes[n] for n in self.sources if n in nodes]
                messages = sum(at_sources) if at_sources else max(nodes.values(), default=0)
                finished = bool(self.sink_replicas) and self.sink_replicas <= s.ended
                out.append(
                    {
                        "name": name,
                        "state": "finished" if finished else "open",
                        "messages": messages,
                        "nodes": nodes,
                    }
                )
            return out

    def sample(self, status: RunStatus) -> dict[str, Any]:
        """The status of the run and of every node, from the launcher's latest
        :class:`~beampipe.launch.status.RunStatus` (its state names and counts)."""
        now = self.clock()
        with self._lock:
            failures = list(self._failures)
        failed = {m[1] for m in map(_NODE.match, status.errors) if m}
        nodes = {}
        for name, spec in self.pipeline.nodes.items():
            reps = status.of(name)
            m = status.nodes.get(name) or NodeMetrics()
            inputs = bool(self.pipeline.inputs_of(name))
            count, nbytes = (m.messages_in, m.bytes_in) if inputs else (m.messages_out, m.bytes_out)
            rate, byte_rate = self._rates[name].add(now, count, nbytes)
            states = [r.state for r in reps]
            nodes[name] = {
                "state": _node_state(states, name in failed, name in status.nodes),
                "replicas": spec.replicas,
                "pids": [r.pid for r in reps],
                "replica_states": states,
                "restarts": sum(r.restarts for r in reps),
                "hung": sum(r.state == "hung" for r in reps),
                "hangs": sum(r.hangs for r in reps),
                "messages": count,
                "messages_in": m.messages_in,
                "messages_out": m.messages_out,
                "bytes": nbytes,
                "rate": rate,
                "mb_rate": byte_rate / 1e6,
                "in_flight": m.in_flight,
                "held": m.held,
                "latency_p50": _seconds(m.latency, 0.5),
                "latency_p99": _seconds(m.latency, 0.99),
                "process_p50": _seconds(m.process_time, 0.5),
                "process_p99": _seconds(m.process_time, 0.99),
                "errors": errors_of(m, name in failed),
                "skipped": m.skipped,
                "corrupt_frames": m.corrupt_frames,
                "retries": m.retries,
                "warnings": warnings_of(m),
                "dropped": m.dropped,
                "nonfinite": m.nonfinite,
                "info": dict(m.info),
            }
        return {
            "run": {
                "state": status.state,
                "elapsed": time.time() - self.started,
                "errors": [e.splitlines()[0] for e in status.errors],
                "notices": [f.splitlines()[0] for f in failures if f not in status.errors][-10:],
                "hangs": list(status.hangs),
            },
            "nodes": nodes,
        }


def _node_state(states: list[str], failed: bool, reported: bool) -> str:
    """A node's state from its replicas' (:data:`~beampipe.launch.status.REPLICA_STATES`):
    ``failed`` if the run's errors name it or a replica failed, else ``done`` when every
    replica is, ``restarting`` while one is, ``hung`` while one is, ``starting`` until it
    reported, else ``running``."""
    if failed or "failed" in states:
        return "failed"
    if "hung" in states:
        return "hung"
    if not states:
        return "starting"
    if all(s == "done" for s in states):
        return "done"
    if "restarting" in states:
        return "restarting"
    if "starting" in states and not reported:
        return "starting"
    return "running"
