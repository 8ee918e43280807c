"""Wiring: which upstream endpoints each node replica connects its input ports to, at the first
start and after a restart (the replicas of a node by number)."""

from __future__ import annotations

from beampipe.launch.replica import Replica
from beampipe.runtime.control import Connect, PeerGone, PeerLost, Reconnect, Retire


class Wiring:
    """The :class:`~beampipe.launch.Launcher`'s part that connects the replicas."""

    def replicas_of(self, node: str) -> list[Replica]:
        """The replicas of ``node`` the launcher runs now, by replica number (after a scaling
        or a replica that died for good the numbers may have gaps)."""
        return sorted((r for r in self.replicas.values() if r.node == node), key=_number)

    def _connect(self, rep: Replica) -> None:
        """Tell ``rep`` which upstream endpoints to connect to."""
        inputs = []
        for conn in self.pipeline.inputs_of(rep.node):
            for upstream in self.replicas_of(conn.source):
                if upstream.endpoints is None or upstream.joining:
                    continue  # a replica being added connects its downstream itself (_join)
                inputs.append(
                    {
                        "port": conn.target_port,
                        "upstream": f"{conn.source}#{upstream.replica}.{conn.source_port}",
                        "endpoint": upstream.endpoints[conn.source_port],
                    }
                )
        self._send(rep, Connect(inputs))

    def _rewire(self, rep: Replica) -> None:
        """The restarted ``rep`` has bound its outputs: connect it, and reconnect the
        downstream replicas to its new endpoints."""
        assert rep.endpoints is not None
        self._connect(rep)
        for conn in self.pipeline.outputs_of(rep.node):
            for target in self.replicas_of(conn.target):
                upstream = f"{rep.node}#{rep.replica}.{conn.source_port}"
                self._send(target, Reconnect(upstream, rep.endpoints[conn.source_port]))

    def _tell_upstream(
        self, node: str, replica: int, kind: type[PeerLost | PeerGone | Retire]
    ) -> list[tuple[Replica, str]]:
        """Send a ``kind`` message about replica ``replica`` of ``node`` to every live upstream
        replica that feeds it, naming the input it feeds (``target = "node.port"``); the
        replicas told, each with the target it was told of."""
        told = []
        for conn in self.pipeline.inputs_of(node):
            target = f"{node}.{conn.target_port}"
            for upstream in self.replicas_of(conn.source):
                if upstream.process.poll() is None:
                    self._send(upstream, kind(target, replica))
                    told.append((upstream, target))
        return told


def _number(rep: Replica) -> int:
    return rep.replica
