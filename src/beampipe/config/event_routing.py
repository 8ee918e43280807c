"""The routing into a node that joins several input ports into events and runs as several
replicas: the parts of an event meet only in one replica, so every connection into it must send
the parts of one (stream, id) to the same replica (docs/dataflow.md, "Events: joining several
input ports").

Allowed: one replica; one connected port (nothing to join: an unconnected port is not waited
for); ``by_key`` routing with the same key expression on every connection into the node (a key
of ``id`` and ``stream`` only is equal on every part; a key reading metadata must find the same
value in each part); ``broadcast`` on every connection (every replica forms every event, as
``broadcast`` into any node makes every replica handle every message). Refused: ``round_robin``
(each part goes to the least-loaded replica, so a frame and its monitor reading may go to
different ones and never meet), ``broadcast`` next to another routing (the replicas that do not
get the other parts hold the broadcast part for ``events.timeout`` and form an incomplete event
of it), and ``by_key`` with different keys.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence

from beampipe.config.errors import Problems
from beampipe.config.model import Connection, NodeSpec
from beampipe.worker import Worker
from beampipe.worker.base import Node


def joined_ports(cls: type[Node], connections: Sequence[Connection]) -> list[str]:
    """The input ports whose messages ``cls`` joins into events, given the ``connections``
    into its node: every connected port of a worker with ``events = True`` (the runtime forms
    events of the ports that are connected), in the order first connected; ``[]`` if it forms
    no events."""
    if not (issubclass(cls, Worker) and cls.events):
        return []
    return list(dict.fromkeys(c.target_port for c in connections))


def misrouted(connections: Sequence[Connection]) -> list[tuple[Connection, str]]:
    """The connections into one node, all of whose ports are joined into events, that may send
    the parts of an event to different replicas, each with why (a phrase)."""
    if all(c.routing == "broadcast" for c in connections):
        return []
    keyed = next((c for c in connections if c.routing == "by_key"), None)
    out = []
    for conn in connections:
        if conn.routing == "round_robin":
            why = (
                "routing round_robin sends each part to the least-loaded replica, so the parts "
                "of an event may reach different replicas and never meet"
            )
        elif conn.routing == "broadcast":
            why = (
                "routing broadcast sends each part to every replica while the other parts go "
                "to one: the others hold it for events.timeout and then form an incomplete "
                "event of it"
            )
        elif keyed is not None and conn.key is not None and keyed.key is not None:
            if _normal(conn.key) == _normal(keyed.key):
                continue
            why = (
                f"key {conn.key!r} is not the key {keyed.key!r} of {str(keyed)!r} (line "
                f"{keyed.line}), so the parts of an event may reach different replicas"
            )
        else:
            continue
        out.append((conn, why))
    return out


def check_event_routing(
    problems: Problems,
    specs: Mapping[str, NodeSpec | None],
    classes: Mapping[str, type[Node]],
    connections: Sequence[Connection],
) -> None:
    """Report each connection into a node of several replicas that joins two or more input
    ports into events and that may send the parts of an event to different replicas."""
    targets: dict[str, list[Connection]] = {}
    for conn in connections:
        targets.setdefault(conn.target, []).append(conn)
    for name, cls in classes.items():
        spec = specs.get(name)
        if spec is None or spec.replicas < 2:
            continue
        into = targets.get(name, [])
        ports = joined_ports(cls, into)
        if len(ports) < 2:
            continue
        listed = " and ".join(", ".join(repr(p) for p in ports).rsplit(", ", 1))
        for conn, why in misrouted(into):
            problems.add(
                f"connection {str(conn)!r}: {spec.use} joins its input ports {listed} into "
                f"events, one per (stream, id), and runs as replicas: {spec.replicas}; "
                f"{why}. Route every connection into {name!r} by the same key ('routing: "
                "by_key, key: id' on each), or run it as replicas: 1",
                conn.line,
                name,
            )


def _normal(key: str) -> str:
    """``key`` as a syntax tree, so that spacing does not count (``id//10`` is ``id // 10``),
    and a bare metadata name as the subscript it stands for (``sample`` is
    ``metadata["sample"]``, see :mod:`beampipe.message.key`)."""
    return ast.dump(_Fields().visit(ast.parse(key.strip(), mode="eval")))


class _Fields(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id in ("id", "stream", "metadata"):
            return node
        field = ast.Constant(node.id)
        return ast.Subscript(ast.Name("metadata", ast.Load()), field, ast.Load())
