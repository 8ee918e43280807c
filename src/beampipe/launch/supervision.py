"""Watching the node processes: a process that died is restarted (``restart: on-failure``), its
messages sent to the other replicas (``restart: never``, or no restart left), or the run fails,
naming it.

A replica dropped so is forgotten by its upstream replicas (``peer_gone``: they send what it had
not acknowledged to its siblings) and read no more by its downstream replicas
(``upstream_gone``); these count its pipes as finished, so that the streams it had a part in
end there, only once every upstream replica told has said ``redelivered`` (its messages went
through the siblings and were acknowledged) or is gone: ``upstream_redelivered``. So a stream
ends downstream after the messages the dead replica held, never before them."""

from __future__ import annotations

import signal
import time

from beampipe.launch.replica import Replica
from beampipe.runtime.control import (
    PeerGone,
    PeerLost,
    Redelivered,
    UpstreamGone,
    UpstreamRedelivered,
    identity,
)
from beampipe.runtime.metrics import NodeMetrics, merge


class Supervision:
    """The :class:`~beampipe.launch.Launcher`'s part that watches its processes."""

    def _may_restart(self, rep: Replica) -> bool:
        spec = self.pipeline.nodes[rep.node]
        return spec.restart == "on-failure" and rep.restarts < spec.max_restarts

    def _check_processes(self) -> None:
        if self.redelivering:
            self._settle_redeliveries()
        for key, rep in list(self.replicas.items()):
            if rep.restart_at is not None:
                if time.monotonic() >= rep.restart_at:
                    self._restart(key, rep)
                continue
            code = rep.process.poll()
            if code == 0 and rep.done and rep.retiring:  # removed by scale(): keep its counts
                self._drop(key, rep)
                continue
            if self.errors or (code == 0 and rep.done) or rep.drained:
                continue
            if code is None:
                if not rep.bound and time.monotonic() - rep.started > self.start_timeout:
                    self._fail(
                        f"{rep.label} ({self._where(rep)}) did not start within "
                        f"{self.start_timeout:g} s: it has not built its worker and bound its "
                        f"outputs; {self._log_tail(rep)}"
                    )
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            if rep.hang is not None:
                how = f"hung ({rep.hang.reason}) and was killed"
            if self._may_restart(rep):
                self._lost(rep, how)
                continue
            drop = self._may_drop(rep) if rep.last_error is None else None
            if drop is not None:
                self._forget(key, rep, f"{how}; {self._not_restarted(rep)}: {drop}")
                continue
            if rep.last_error is not None:
                self._fail(rep.last_error)
                continue
            self._fail(
                f"{rep.label} ({self._where(rep)}) {how} before finishing; {self._log_tail(rep)}"
            )

    @staticmethod
    def _log_tail(rep: Replica) -> str:
        try:
            tail = rep.log.read_text(errors="replace").strip().splitlines()[-20:]
        except OSError:
            tail = []
        log = "\n".join(tail) if tail else "(no output)"
        return f"last lines of its log {rep.log}:\n{log}"

    def _lost(self, rep: Replica, how: str) -> None:
        """``rep``'s process died and will be restarted: tell its upstream peers to hold what
        it had not acknowledged, and schedule the restart (with exponential backoff)."""
        spec = self.pipeline.nodes[rep.node]
        self.observer.failure(
            f"{rep.label} ({self._where(rep)}) {how}; restarting it "
            f"({rep.restarts + 1} of at most {spec.max_restarts})"
            + (f"\n{rep.last_error}" if rep.last_error else "")
        )
        self._retire_metrics(rep)
        self._tell_upstream(rep.node, rep.replica, PeerLost)
        rep.restart_at = time.monotonic() + spec.restart_delay * 2**rep.restarts

    def _drop(self, key: bytes, rep: Replica) -> None:
        """``rep`` runs no more: its counts (and restarts) join :attr:`past`."""
        del self.replicas[key]
        self._retire_metrics(rep)
        self.past.setdefault((rep.node, rep.replica), NodeMetrics()).restarts += rep.restarts

    def _retire_metrics(self, rep: Replica) -> None:
        """``rep``'s process is gone: its last counts join :attr:`past`, its gauges zeroed."""
        key = (rep.node, rep.replica)
        if key in self.metrics:
            last = self.metrics.pop(key)
            last.held = last.in_flight = last.in_flight_bytes = last.retained = 0  # gone with it
            last.unacknowledged = 0
            self.past[key] = merge([*filter(None, [self.past.get(key)]), last])

    def _may_drop(self, rep: Replica) -> str | None:
        """Why ``rep`` can be dropped without losing anything, or None: another replica of its
        node finished, so every upstream port had everything acknowledged (it tells FINISHED
        only then) and sent nothing since; or what it had not acknowledged can go to the
        node's other replicas (fed by round_robin, another replica still runs). A source is
        never dropped."""
        conns = self.pipeline.inputs_of(rep.node)
        siblings = [
            r
            for r in self.replicas.values()
            if r.node == rep.node and r is not rep and not r.retiring
        ]
        if not conns:
            return None
        if any(r.done for r in siblings):
            return "it had acknowledged everything it was sent, as its siblings finished"
        if any(c.routing != "round_robin" for c in conns):
            return None
        if any(r.process.poll() is None for r in siblings):
            return "the messages it had not acknowledged go to the other replicas"
        return None

    def _not_restarted(self, rep: Replica) -> str:
        spec = self.pipeline.nodes[rep.node]
        if spec.restart == "never":
            return "not restarted (restart: never)"
        return (
            f"not restarted again (restarted {rep.restarts} times, "
            f"max_restarts: {spec.max_restarts})"
        )

    def _forget(self, key: bytes, rep: Replica, why: str) -> None:
        """``rep``'s process died and is not restarted (``why``): its upstream replicas send
        what it had not acknowledged to the node's other replicas, and its downstream
        replicas stop reading it, and count it as finished once that went through
        (:meth:`_settle_redeliveries`)."""
        self.observer.failure(f"{rep.label} ({self._where(rep)}) {why}")
        self._drop(key, rep)
        self._set_replicas(rep.node, len(self.replicas_of(rep.node)))
        gone = f"{rep.node}#{rep.replica}."
        self.redelivering[gone] = self._tell_upstream(rep.node, rep.replica, PeerGone)
        self._tell_downstream(rep.node, UpstreamGone(gone))
        self._settle_redeliveries()

    def _tell_downstream(self, node: str, msg: UpstreamGone | UpstreamRedelivered) -> None:
        """Send ``msg`` to every live replica that ``node`` feeds."""
        for conn in self.pipeline.outputs_of(node):
            for target in self.replicas_of(conn.target):
                if target.process.poll() is None:
                    self._send(target, msg)

    def _redelivered(self, rep: Replica, msg: Redelivered) -> None:
        """``rep`` sent everything the dead replica ``msg`` names had not acknowledged to its
        siblings, and had it acknowledged."""
        gone = f"{msg.target.split('.')[0]}#{msg.replica}."
        waiting = self.redelivering.get(gone)
        if waiting is not None:
            waiting[:] = [(u, t) for u, t in waiting if not (u is rep and t == msg.target)]
            self._settle_redeliveries()

    def _settle_redeliveries(self) -> None:
        """For each dropped replica whose upstream replicas have all said ``redelivered`` (or
        are gone: they have nothing more to send), tell its downstream replicas that its pipes
        are finished."""
        for gone, waiting in list(self.redelivering.items()):
            waiting[:] = [
                (u, t)
                for u, t in waiting
                if u.process.poll() is None and self.replicas.get(identity(u.node, u.replica)) is u
            ]
            if not waiting:
                del self.redelivering[gone]
                self._tell_downstream(gone.split("#")[0], UpstreamRedelivered(gone))

    def _restart(self, key: bytes, rep: Replica) -> None:
        new = self._spawn(rep.node, rep.replica, rep.restarts + 1)
        new.endpoints = rep.endpoints
        self.replicas[key] = new
