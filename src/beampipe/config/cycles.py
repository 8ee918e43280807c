"""The graph check of a pipeline: its connections must not loop back."""

from __future__ import annotations

from collections.abc import Mapping

from beampipe.config.errors import Problems
from beampipe.config.model import Connection, NodeSpec

SHOWN = 12
"""Connections of a longer cycle shown: the first ten and the last one."""


def check_cycles(
    problems: Problems, specs: Mapping[str, NodeSpec | None], connections: list[Connection]
) -> None:
    """Report each strongly connected component that loops, with one of its cycles."""
    edges: dict[str, list[Connection]] = {name: [] for name in specs}
    for conn in connections:
        edges[conn.source].append(conn)
    order = {name: i for i, name in enumerate(specs)}
    for component in _components(edges):
        start = min(component, key=order.__getitem__)
        path = _cycle(start, component, edges)
        if path is None:
            continue
        shown = path if len(path) <= SHOWN else [*path[: SHOWN - 2], None, path[-1]]
        nodes = " -> ".join([c.source if c else "..." for c in shown] + [start])
        lines = ", ".join(str(c.line) if c else "..." for c in shown)
        lines = f"connections on lines {lines}" if len(path) > 1 else f"connection on line {lines}"
        more = f"; {len(path)} nodes" if len(path) > SHOWN else ""
        problems.add(
            f"in a cycle {nodes} ({lines}{more}); a pipeline must not loop back",
            path[0].line,
            start,
        )


def _components(edges: Mapping[str, list[Connection]]) -> list[set[str]]:
    """Strongly connected components (Tarjan's algorithm, with a stack of its own rather than
    recursion, so that a chain of thousands of nodes is no deeper for Python than one node),
    each a set of node names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        visiting = [(root, iter(edges[root]))]  # the path being explored, with the edges left
        while visiting:
            node, rest = visiting[-1]
            conn = next(rest, None)
            if conn is not None:
                nxt = conn.target
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    visiting.append((nxt, iter(edges[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            visiting.pop()
            if visiting:
                parent = visiting[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def _cycle(
    start: str, component: set[str], edges: Mapping[str, list[Connection]]
) -> list[Connection] | None:
    """The shortest cycle through ``start`` within ``component`` (breadth-first), or ``None``."""
    came_by: dict[str, Connection] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for conn in edges[node]:
                if conn.target not in component:
                    continue
                if conn.target == start:
                    path = [conn]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return path
                if conn.target not in came_by:
                    came_by[conn.target] = conn
                    following.append(conn.target)
        frontier = following
    return None
