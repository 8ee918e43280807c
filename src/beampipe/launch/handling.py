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
    Redelivered,
    Setup,
    StreamEnded,
    dispatch,
    identity,
)
from beampipe.runtime.metrics import NodeMetrics


class Handling:
    """The :class:`~beampipe.launch.Launcher`'s part that answers its node processes."""

    def answer(self, rep: Replica, msg: Control) -> None:
        """Do what ``msg`` from ``rep``'s process asks (:data:`HANDLERS`). No message can end
        the run: one a node does not send, or one its handler cannot take, is ignored and
        reported to the observer."""
        try:
            dispatch(msg, HANDLERS, self, rep)
        except Exception as exc:
            self.observer.failure(
                f"ignored the control message {msg.kind!r} from node {rep.node!r} replica "
                f"{rep.replica}: {type(exc).__name__}: {exc}"
            )

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
        rep.waiting = msg.waiting
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

    def _on_redelivered(self, rep: Replica, msg: Redelivered) -> None:
        self._redelivered(rep, msg)

    def _on_done(self, rep: Replica, msg: Done) -> None:
        rep.done = True
        sent = self.sent.setdefault(rep.node, {})
        for port, n in msg.sent.items():
            sent[port] = sent.get(port, 0) + n
        self.metrics[rep.node, rep.replica] = NodeMetrics.from_snapshot(msg.metrics)


HANDLERS: dict[type[Control], Handler] = {
    Hello: Handling._on_hello,
    Bound: Handling._on_bound,
    InputsAdded: Handling._on_inputs_added,
    Progress: Handling._on_progress,
    StreamEnded: Handling._on_stream_end,
    Failed: Handling._on_failed,
    Done: Handling._on_done,
    Redelivered: Handling._on_redelivered,
}
"""The launcher's dispatch table: ``handler(launcher, replica, message)`` per kind a node
sends (functions of the class, so that a launcher is no reference cycle: its zmq context is
then closed when it is dropped, never by the cycle collector in the middle of its sockets)."""
