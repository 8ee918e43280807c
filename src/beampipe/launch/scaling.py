"""Scaling a running node: replicas added (they join the running ports) and retired (they finish
what they were sent), without a message lost or doubled (``beampipe scale``)."""

from __future__ import annotations

from beampipe.config.event_routing import joined_ports, misrouted
from beampipe.config.schema import MAX_REPLICAS
from beampipe.launch.replica import Replica
from beampipe.runtime.control import AddInputs, Retire, identity


class Scaling:
    """The :class:`~beampipe.launch.Launcher`'s part that changes the replicas of a running
    node."""

    def _join(self, rep: Replica) -> None:
        """The replica ``rep`` added while running has bound its outputs: the downstream
        replicas connect to it first, then it connects to its upstream replicas (so nothing
        it sends can reach a node that does not yet wait for its ends of streams)."""
        assert rep.endpoints is not None
        for conn in self.pipeline.outputs_of(rep.node):
            for target in self.replicas_of(conn.target):
                if target.joining or target.process.poll() is not None:
                    continue
                pipe = {
                    "port": conn.target_port,
                    "upstream": f"{rep.node}#{rep.replica}.{conn.source_port}",
                    "endpoint": rep.endpoints[conn.source_port],
                }
                self._send(target, AddInputs([pipe]))
                self._adds.setdefault(identity(target.node, target.replica), []).append(rep)
                rep.awaiting += 1
        if rep.awaiting == 0:
            rep.joining = False
            self._connect(rep)

    def scale(self, node: str, replicas: int) -> None:
        """Run ``node`` as ``replicas`` processes from now on, without losing or duplicating
        a message.

        New replicas connect to the downstream nodes, then to the upstream ones, and from
        then on get their share of the messages; the ends of the streams open upstream reach
        them, so that the nodes after them account for every stream. Removed replicas (the
        highest-numbered) get no more messages, finish what they were sent, end their
        streams and exit.

        Raises:
            ValueError: no such node; ``replicas`` < 1 or > 256 (``MAX_REPLICAS``); the node is
                a source or a reducer, is fed by ``by_key`` routing (equal keys must keep going
                to the same replica), joins several input ports into events (going beyond one
                replica: the parts of an event must reach the same replica), or feeds an
                ``ordered`` input; the pipeline is not
                running; a scaling of this node is still under way.
        """
        spec = self.pipeline.nodes.get(node)
        if spec is None:
            raise ValueError(f"no node {node!r} (nodes: {', '.join(self.pipeline.nodes)})")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(
                f"node {node!r}: replicas must be from 1 to {MAX_REPLICAS}, not {replicas}"
            )
        if not self.pipeline.inputs_of(node):
            raise ValueError(f"node {node!r} is a source: its replicas are fixed at start")
        if self.pipeline.node_class(node).reducer:
            raise ValueError(f"node {node!r} is a reducer: it runs as one process")
        for conn in self.pipeline.inputs_of(node):
            if conn.routing == "by_key":
                raise ValueError(
                    f"node {node!r} is fed by key ({conn}, key {conn.key!r}): equal keys must "
                    "keep going to the same replica, so it cannot be scaled while running"
                )
        self._check_events(node, replicas)
        for conn in self.pipeline.outputs_of(node):
            if self.pipeline.nodes[conn.target].is_ordered(conn.target_port):
                raise ValueError(
                    f"node {node!r} feeds the ordered input {conn.target}.{conn.target_port}: "
                    "its reorder buffer cannot take new pipes while running"
                )
        if self.state != "running":
            raise ValueError(f"pipeline {self.pipeline.name!r} is {self.state}, not running")
        mine = self.replicas_of(node)
        if any(r.joining or r.retiring for r in mine):
            raise ValueError(f"node {node!r}: a scaling is still under way")
        self._set_replicas(node, replicas)
        numbers = [r.replica for r in mine]
        free = (n for n in range(len(numbers) + replicas) if n not in numbers)
        for _ in range(len(mine), replicas):
            rep = self._spawn(node, next(free), 0)
            rep.joining = True
            self.replicas[identity(node, rep.replica)] = rep
        for rep in mine[replicas:]:  # the highest numbers go
            rep.retiring = True
            self._tell_upstream(node, rep.replica, Retire)

    def _check_events(self, node: str, replicas: int) -> None:
        """Refuse more than one replica of a node that joins several input ports into events
        and whose inputs may send the parts of an event to different replicas."""
        into = self.pipeline.inputs_of(node)
        ports = joined_ports(self.pipeline.node_class(node), into)
        wrong = misrouted(into) if replicas > 1 and len(ports) > 1 else []
        if wrong:
            conn, why = wrong[0]
            raise ValueError(
                f"node {node!r} joins its input ports {', '.join(map(repr, ports))} into events: "
                f"with {replicas} replicas, on {str(conn)!r} {why}. Route every connection into "
                "it by the same key and set its replicas in the pipeline file"
            )

    def _set_replicas(self, node: str, replicas: int) -> None:
        """From now on ``node`` has ``replicas`` replicas: what processes started or
        restarted later are told (their output ports wait for that many peers)."""
        spec = self.pipeline.nodes[node]
        nodes = {**self.pipeline.nodes, node: spec.model_copy(update={"replicas": replicas})}
        self.pipeline = self.pipeline.model_copy(update={"nodes": nodes})
