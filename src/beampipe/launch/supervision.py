"""Watching the node processes: a process that died is restarted (``restart: on-failure``), its
messages sent to the other replicas (``restart: never``), or the run fails, naming it."""

from __future__ import annotations

import signal
import time

from beampipe.launch.replica import Replica
from beampipe.runtime.control import PeerGone, PeerLost, UpstreamGone
from beampipe.runtime.metrics import merge


class Supervision:
    """The :class:`~beampipe.launch.Launcher`'s part that watches its processes."""

    def _may_restart(self, rep: Replica) -> bool:
        spec = self.pipeline.nodes[rep.node]
        return spec.restart == "on-failure" and rep.restarts < spec.max_restarts

    def _check_processes(self) -> None:
        for key, rep in list(self.replicas.items()):
            if rep.restart_at is not None:
                if time.monotonic() >= rep.restart_at:
                    self._restart(key, rep)
                continue
            code = rep.process.poll()
            if code == 0 and rep.done and rep.retiring:  # removed by scale(): keep its counts
                del self.replicas[key]
                self._retire_metrics(rep)
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
            if rep.last_error is None and self._may_redeliver(rep):
                self._forget(key, rep, how)
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

    def _retire_metrics(self, rep: Replica) -> None:
        """``rep``'s process is gone: its last counts join :attr:`past`, its gauges zeroed."""
        key = (rep.node, rep.replica)
        if key in self.metrics:
            last = self.metrics.pop(key)
            last.held = last.in_flight = last.in_flight_bytes = last.retained = 0  # gone with it
            last.unacknowledged = 0
            self.past[key] = merge([*filter(None, [self.past.get(key)]), last])

    def _may_redeliver(self, rep: Replica) -> bool:
        """Whether ``rep``'s unacknowledged messages can go to the node's other replicas:
        it is fed by round_robin (not a source), and another replica still runs."""
        conns = self.pipeline.inputs_of(rep.node)
        if not conns or any(c.routing != "round_robin" for c in conns):
            return False
        return any(
            r.node == rep.node and r is not rep and r.process.poll() is None and not r.retiring
            for r in self.replicas.values()
        )

    def _forget(self, key: bytes, rep: Replica, how: str) -> None:
        """``rep``'s process died and is not restarted: its upstream replicas send what it
        had not acknowledged to the node's other replicas, and its downstream replicas stop
        waiting for it."""
        self.observer.failure(
            f"{rep.label} ({self._where(rep)}) {how}; not restarted (restart: never): the "
            "messages it had not acknowledged go to the other replicas"
        )
        del self.replicas[key]
        self._retire_metrics(rep)
        self._set_replicas(rep.node, len(self.replicas_of(rep.node)))
        self._tell_upstream(rep.node, rep.replica, PeerGone)
        for conn in self.pipeline.outputs_of(rep.node):
            for target in self.replicas_of(conn.target):
                if target.process.poll() is None:
                    self._send(target, UpstreamGone(f"{rep.node}#{rep.replica}."))

    def _restart(self, key: bytes, rep: Replica) -> None:
        new = self._spawn(rep.node, rep.replica, rep.restarts + 1)
        new.endpoints = rep.endpoints
        self.replicas[key] = new
