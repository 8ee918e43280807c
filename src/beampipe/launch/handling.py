"""What the launcher does with each message a node process sends (the dispatch table of the
launcher's side of :mod:`beampipe.runtime.control`)."""

from __future__ import annotations

import dataclasses

from beampipe.launch.replica import Replica, update_rates
from beampipe.runtime.control import (
    Bound,
    Control,
    Done,
    Failed,
    Handler,
    Hello,
    InputsAdded,
    Progress,
    Setup,
    StreamEnded,
    identity,
)
from beampipe.runtime.metrics import NodeMetrics


class Handling:
    """The :class:`~beampipe.launch.Launcher`'s part that answers its node processes."""

    def control_handlers(self) -> dict[type[Control], Handler]:
        """The launcher's dispatch table: a handler ``(replica, message)`` per message kind
        a node sends."""
        return {
            Hello: self._on_hello,
            Bound: self._on_bound,
            InputsAdded: self._on_inputs_added,
            Progress: self._on_progress,
            StreamEnded: self._on_stream_end,
            Failed: self._on_failed,
            Done: self._on_done,
        }

    def _on_hello(self, rep: Replica, msg: Hello) -> None:
        rep.host, rep.pid = msg.host, msg.pid
        setup = Setup(
            pipeline=self.pipeline.to_dict(),
            bind=self.placement.node_bind,
            state_dir=str(self.rundir / "state"),
            window=self.window,
            window_bytes=self.window_bytes,
        )
        self._send(rep, setup)

    def _on_bound(self, rep: Replica, msg: Bound) -> None:
        rep.bound = True
        rep.endpoints = msg.endpoints
        rep.tap = msg.tap
        if not self._wired:
            if all(r.endpoints is not None for r in self.replicas.values()):
                self._wired = True
                for r in self.replicas.values():
                    self._connect(r)
        elif rep.joining:
            self._join(rep)
        else:
            self._rewire(rep)

    def _on_inputs_added(self, rep: Replica, msg: InputsAdded) -> None:
        joined = self._adds[identity(rep.node, rep.replica)].pop(0)
        joined.awaiting -= 1
        if joined.awaiting == 0:
            joined.joining = False
            self._connect(joined)

    def _on_progress(self, rep: Replica, msg: Progress) -> None:
        metrics = NodeMetrics.from_snapshot(msg.metrics)
        self.metrics[rep.node, rep.replica] = metrics
        update_rates(rep, metrics)
        self.observer.progress(rep.node, rep.replica, msg.streams)

    def _on_stream_end(self, rep: Replica, msg: StreamEnded) -> None:
        self.observer.stream_end(rep.node, rep.replica, dataclasses.asdict(msg))

    def _on_failed(self, rep: Replica, msg: Failed) -> None:
        where = [f"node {msg.node!r}"]
        if msg.replica:
            where.append(f"replica {msg.replica}")
        if msg.stream is not None:
            where.append(f"stream {msg.stream!r}")
        if msg.id is not None:
            where.append(f"message id {msg.id}")
        drained = (
            " (its open streams were ended; everything it had sent was processed and "
            "acknowledged downstream)"
            if msg.drained
            else ""
        )
        rep.last_error = f"{', '.join(where)}: {msg.error}{drained}\n{msg.traceback}"
        if drained:
            rep.done = rep.drained = True
        elif not self._may_restart(rep):
            self._fail(rep.last_error)

    def _on_done(self, rep: Replica, msg: Done) -> None:
        rep.done = True
        sent = self.sent.setdefault(rep.node, {})
        for port, n in msg.sent.items():
            sent[port] = sent.get(port, 0) + n
        self.metrics[rep.node, rep.replica] = NodeMetrics.from_snapshot(msg.metrics)
