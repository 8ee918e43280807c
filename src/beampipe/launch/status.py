"""The one read model of a run: :class:`RunStatus`, built by the launcher in its own thread.

Everything that shows a run reads it — the terminal summary, ``beampipe status`` (through the
supervisor), the live viewer's page and its Prometheus endpoint — so the state names and the
counts agree everywhere:

* run states :data:`RUN_STATES`: ``starting``, ``running``, ``draining``, ``done``, ``failed``;
* replica states :data:`REPLICA_STATES`: ``starting``, ``running``, ``restarting``,
  ``retiring`` (removed by ``scale``, finishing what it was sent), ``stopping`` (done, not yet
  exited), ``done``, ``failed``, ``hung`` (holding messages without a report for its
  ``hang_timeout``, waited for: :mod:`beampipe.launch.hangs`);
* a replica's ``errors``: messages skipped after errors + corrupt frames + ids a source never
  issued + 1 if its process failed; its ``warnings``: warnings raised + inputs dropped
  (:func:`errors_of`, :func:`warnings_of`).

The launcher publishes a new snapshot (:attr:`~beampipe.launch.Launcher.published`) at most every
0.2 s while it runs and once at the end; a snapshot is immutable, so other threads (the viewer)
read it without locks and never touch the launcher's own fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from beampipe.launch.replica import Replica
from beampipe.runtime.metrics import NodeMetrics, merge

RUN_STATES = ("starting", "running", "draining", "done", "failed")
REPLICA_STATES = (
    "starting",
    "running",
    "restarting",
    "retiring",
    "stopping",
    "done",
    "failed",
    "hung",
)
ALIVE = ("starting", "running", "retiring", "stopping", "hung")
"""The replica states in which its process runs."""


def errors_of(m: NodeMetrics, failed: bool) -> int:
    """Messages skipped after errors + corrupt frames + missing ids + 1 if ``failed``."""
    return m.skipped + m.corrupt_frames + m.missing + int(failed)


def warnings_of(m: NodeMetrics) -> int:
    """Warnings raised in the node + inputs it dropped (``Worker.dead_letter``)."""
    return m.warnings + m.dropped


@dataclass(frozen=True)
class ReplicaStatus:
    """One node replica now.

    Attributes:
        node, replica: which one.
        state: one of :data:`REPLICA_STATES`.
        host, pid, where: where its current process runs (``where`` in the placement's words).
        restarts: its processes that died and were replaced.
        metrics: its counters since the run started, its earlier processes' included.
        rates: messages/s in and out, MB/s in and out, between its last two reports.
        failed: its process reported an error.
        tap: the endpoint of its tap (for viewers), once bound; None for a sink.
        log: its current log file.
        hung: seconds since its last report while it is ``hung``, else 0.
        hangs: the hangs of its processes so far.
    """

    node: str
    replica: int
    state: str
    host: str
    pid: int | None
    where: str
    restarts: int
    metrics: NodeMetrics
    rates: tuple[float, float, float, float]
    failed: bool
    tap: str | None
    log: str
    hung: float = 0.0
    hangs: int = 0

    @property
    def errors(self) -> int:
        return errors_of(self.metrics, self.failed)

    @property
    def warnings(self) -> int:
        return warnings_of(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, the keys of ``beampipe status --json`` (``docs/manager.md``)."""
        m = self.metrics
        rate_in, rate_out, mb_in, mb_out = self.rates
        return {
            "node": self.node,
            "replica": self.replica,
            "state": self.state,
            "host": self.host,
            "pid": self.pid,
            "where": self.where,
            "restarts": self.restarts,
            "messages_in": m.messages_in,
            "messages_out": m.messages_out,
            "bytes_in": m.bytes_in,
            "bytes_out": m.bytes_out,
            "rate_in": rate_in,
            "rate_out": rate_out,
            "mb_in": mb_in,
            "mb_out": mb_out,
            "in_flight": m.in_flight,
            "errors": self.errors,
            "warnings": self.warnings,
            "nonfinite": m.nonfinite,
            "log": self.log,
            "unacknowledged": m.unacknowledged,
            "hung": self.hung,
            "hangs": self.hangs,
            "info": dict(m.info),
        }


@dataclass(frozen=True)
class RunStatus:
    """A run now.

    Attributes:
        state: one of :data:`RUN_STATES`.
        backend: the backend's name; ``placement``: its facts (``Placement.describe``).
        replicas: every replica the launcher runs, by node in file order, then by number.
        errors: the run's fatal errors so far (each names its node first: ``node 'x' ...``).
        nodes: per node that reported, in file order: the metrics of all its processes
            merged (those of replicas retired by ``scale`` or dropped too), ``restarts``
            their sum.
        hangs: every hang so far, one line each (:meth:`beampipe.launch.hangs.Hang.text`).
    """

    state: str
    backend: str
    placement: dict[str, Any]
    replicas: tuple[ReplicaStatus, ...]
    errors: tuple[str, ...]
    nodes: dict[str, NodeMetrics]
    hangs: tuple[str, ...] = ()

    def of(self, node: str) -> list[ReplicaStatus]:
        """The replicas of ``node``."""
        return [r for r in self.replicas if r.node == node]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``state``, ``backend``, ``placement``, ``replicas`` (``docs/manager.md``)."""
        return {
            "state": self.state,
            "backend": self.backend,
            "placement": self.placement,
            "replicas": [r.to_dict() for r in self.replicas],
            "hangs": list(self.hangs),
        }


class Reporting:
    """The :class:`~beampipe.launch.Launcher`'s part that builds its :class:`RunStatus`."""

    def run_status(self) -> RunStatus:
        """The run now (call from the launcher's thread; others read :attr:`published`)."""
        order = {name: k for k, name in enumerate(self.pipeline.nodes)}
        reps = sorted(self.replicas.values(), key=lambda r: (order.get(r.node, 0), r.replica))
        return RunStatus(
            state=self.state,
            backend=self.placement.name,
            placement=self.placement.describe(),
            replicas=tuple(self._replica_status(rep) for rep in reps),
            errors=tuple(self.errors),
            nodes=self.node_metrics(),
            hangs=tuple(self.hang_texts()),
        )

    def status(self) -> dict[str, Any]:
        """:meth:`run_status` as a JSON-able dict (what a supervisor answers)."""
        return self.run_status().to_dict()

    def _replica_status(self, rep: Replica) -> ReplicaStatus:
        key = (rep.node, rep.replica)
        parts = [m for m in (self.past.get(key), self.metrics.get(key)) if m is not None]
        state = self._replica_state(rep)
        return ReplicaStatus(
            node=rep.node,
            replica=rep.replica,
            state=state,
            host=rep.host,
            pid=rep.pid,
            where=self.placement.where(rep.node, rep.replica),
            restarts=rep.restarts,
            metrics=merge(parts) if parts else NodeMetrics(),
            rates=rep.rates,
            failed=rep.last_error is not None,
            tap=rep.tap,
            log=str(rep.log),
            hung=time.monotonic() - rep.heard if state == "hung" else 0.0,
            hangs=sum(h.node == rep.node and h.replica == rep.replica for h in self.hangs),
        )

    def _replica_state(self, rep: Replica) -> str:
        if rep.restart_at is not None:
            return "restarting"
        code = rep.process.poll()
        if code is not None:
            return "done" if code == 0 and rep.done else "failed"
        if rep.hang is not None and rep.hang.ended is None:
            return "hung"
        if rep.done:
            return "stopping"
        if rep.retiring:
            return "retiring"
        return "running" if rep.endpoints is not None else "starting"

    @property
    def state(self) -> str:
        """One of :data:`RUN_STATES`."""
        if self.errors and not self._signalled:
            return "failed"
        if self.replicas and all(
            r.done and r.process.poll() is not None for r in self.replicas.values()
        ):
            return "done"
        if self._signalled:
            return "draining"
        if not self.replicas or any(r.endpoints is None for r in self.replicas.values()):
            return "starting"
        return "running"

    def node_metrics(self) -> dict[str, NodeMetrics]:
        """The latest metrics per node, its replicas merged (nodes that reported, file order)."""
        out = {}
        for name in self.pipeline.nodes:
            parts = [m for (node, _), m in self.metrics.items() if node == name]
            parts += [m for (node, _), m in self.past.items() if node == name]
            if parts:
                out[name] = merge(parts)  # restarts: of the replicas that run no more
                out[name].restarts += sum(
                    r.restarts for r in self.replicas.values() if r.node == name
                )
        return out
