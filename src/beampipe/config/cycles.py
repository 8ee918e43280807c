"""The graph check of a pipeline: its connections must not loop back."""

from __future__ import annotations

from collections.abc import Mapping

from beampipe.config.errors import Problems
from beampipe.config.model import Connection, NodeSpec


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
        nodes = " -> ".join([c.source for c in path] + [start])
        lines = ", ".join(str(c.line) for c in path)
        lines = f"connections on lines {lines}" if len(path) > 1 else f"connection on line {lines}"
        problems.add(
            f"in a cycle {nodes} ({lines}); a pipeline must not loop back",
            path[0].line,
            start,
        )


def _components(edges: Mapping[str, list[Connection]]) -> list[set[str]]:
    """Strongly connected components (Tarjan), each a set of node names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for conn in edges[node]:
            nxt = conn.target
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            found.append(component)

    for node in edges:
        if node not in index:
            visit(node)
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
