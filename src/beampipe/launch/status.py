"""What the launcher tells of a run while it runs: the state of the run and of every replica, and
the metrics per node (``beampipe status``, the supervisor)."""

from __future__ import annotations

from typing import Any

from beampipe.launch.replica import Replica
from beampipe.runtime.metrics import NodeMetrics, merge


class Reporting:
    """The :class:`~beampipe.launch.Launcher`'s part that reports the run's state."""

    def status(self) -> dict[str, Any]:
        """The run's state, and per node replica: state, where it runs, restarts, rates and
        counters (a JSON-able dict; the keys are listed in ``docs/manager.md``)."""
        replicas = []
        for rep in self.replicas.values():
            m = self.metrics.get((rep.node, rep.replica)) or NodeMetrics()
            rate_in, rate_out, mb_in, mb_out = rep.rates
            replicas.append(
                {
                    "node": rep.node,
                    "replica": rep.replica,
                    "state": self._replica_state(rep),
                    "host": rep.host,
                    "pid": rep.pid,
                    "where": self.placement.where(rep.node, rep.replica),
                    "restarts": rep.restarts,
                    "messages_in": m.messages_in,
                    "messages_out": m.messages_out,
                    "bytes_in": m.bytes_in,
                    "bytes_out": m.bytes_out,
                    "rate_in": rate_in,
                    "rate_out": rate_out,
                    "mb_in": mb_in,
                    "mb_out": mb_out,
                    "in_flight": m.in_flight,
                    "errors": m.skipped
                    + m.corrupt_frames
                    + m.missing
                    + (rep.last_error is not None),
                    "warnings": m.warnings + m.dropped,
                    "nonfinite": m.nonfinite,
                    "log": str(rep.log),
                }
            )
        return {
            "state": self.state,
            "backend": self.placement.name,
            "placement": self.placement.describe(),
            "replicas": replicas,
        }

    def _replica_state(self, rep: Replica) -> str:
        if rep.restart_at is not None:
            return "restarting"
        code = rep.process.poll()
        if code is not None:
            return "done" if code == 0 and rep.done else "failed"
        if rep.done:
            return "stopping"
        if rep.retiring:
            return "retiring"
        return "running" if rep.endpoints is not None else "starting"

    @property
    def state(self) -> str:
        """``starting``, ``running``, ``draining``, ``done`` or ``failed``."""
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
                out[name] = merge(parts)
                out[name].restarts = sum(
                    r.restarts for r in self.replicas.values() if r.node == name
                )
        return out
