"""The checks beyond the file's shape: node classes, params, ports and the graph (its cycles in
:mod:`beampipe.config.cycles`, the routing into replicated event-forming nodes in
:mod:`beampipe.config.event_routing`)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from beampipe.config.connections import ConnectionRef
from beampipe.config.cycles import check_cycles
from beampipe.config.errors import Problems
from beampipe.config.event_routing import check_event_routing
from beampipe.config.model import Connection, NodeSpec
from beampipe.config.params import validate_params
from beampipe.message.key import KeyExpressionError, compile_key
from beampipe.worker import Params, Source, Worker
from beampipe.worker.base import Node
from beampipe.worker.registry import resolve


class ConnectionItem(NamedTuple):
    """A connection as read from the file: its ends, line, options and the line of its key."""

    ref: ConnectionRef
    line: int
    options: dict[str, Any]
    """``routing`` and ``key`` of the mapping form; empty for the string form."""
    key_line: int


Locate = Callable[..., int]
"""``locate(node, *path)``: line of a node's entry or of an item inside it."""


@dataclass
class Checked:
    """What the checks established: the node classes, their params and the connections."""

    classes: dict[str, type[Node]] = field(default_factory=dict)
    params: dict[str, Params] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)


def check(
    problems: Problems,
    specs: Mapping[str, NodeSpec | None],
    refs: list[ConnectionItem],
    locate: Locate,
    overridden: Mapping[str, set[tuple[str, ...]]],
    base_dir: Path,
    all_connections: bool = True,
) -> Checked:
    """Check ``specs`` (``None`` for entries already reported as malformed) and the parsed
    connections ``refs`` (with their lines), recording every problem in ``problems``.
    ``base_dir`` resolves the nodes' relative input paths.

    ``all_connections=False`` says some connections could not be read (already reported): then
    nodes without input are not reported, as they may just have lost theirs.
    """
    out = Checked()
    resolved: dict[str, type[Node] | Exception] = {}
    for name, spec in specs.items():
        if spec is not None:
            cls = _resolve_once(spec.use, resolved)
            _check_node(problems, spec, cls, locate, overridden.get(name, set()), base_dir, out)
    targeted = _check_connections(problems, specs, refs, out)
    if all_connections and targeted <= set(specs):  # a misspelt target may be the missing input
        _check_inputs(problems, specs, targeted, out)
        _check_ordered_ports(problems, specs, locate, out)
    check_event_routing(problems, specs, out.classes, out.connections)
    check_cycles(problems, specs, out.connections)
    return out


def _resolve_once(use: str, resolved: dict[str, type[Node] | Exception]) -> type[Node] | Exception:
    """``resolve(use)``, or what it raised, once per ``use`` (finding the registered node
    types reads every installed package's metadata: 30 ms)."""
    if use not in resolved:
        try:
            resolved[use] = resolve(use)
        except Exception as exc:  # UnknownNodeType, or the module failed while being imported
            resolved[use] = exc
    return resolved[use]


def _check_node(
    problems: Problems,
    spec: NodeSpec,
    cls: type[Node] | Exception,
    locate: Locate,
    overridden: set[tuple[str, ...]],
    base_dir: Path,
    out: Checked,
) -> None:
    if isinstance(cls, Exception):
        exc = cls
        text = str(exc) if isinstance(exc, LookupError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, LookupError):
            text = f"cannot load {spec.use!r}: {text}"
        problems.add(text, locate(spec.name, "use"), spec.name)
        return
    out.classes[spec.name] = cls
    _check_runtime_options(problems, spec, cls, locate)
    params, param_problems = validate_params(cls, spec.use, spec.params, base_dir)
    if params is not None:
        out.params[spec.name] = params
    for p in param_problems:
        text = p.problem
        by = [path for path in overridden if _overlaps(path, p.path)]
        if by:
            text += f" (set by override {'.'.join((spec.name, *by[0]))!r})"
        problems.add(text, locate(spec.name, "params", *p.path), spec.name)


def _check_runtime_options(
    problems: Problems, spec: NodeSpec, cls: type[Node], locate: Locate
) -> None:
    """``replicas``, ``ordered`` and ``events`` suit the node's class (a reducer or a source
    runs as one replica)."""
    worker = issubclass(cls, Worker)
    if worker and cls.reducer and spec.replicas > 1:
        problems.add(
            f"{spec.use} is a reducer: it folds everything into one state, so it runs as one "
            f"process (replicas: {spec.replicas} is not possible)",
            locate(spec.name, "replicas"),
            spec.name,
        )
    elif issubclass(cls, Source) and spec.replicas > 1 and not getattr(cls, "shared_group", False):
        problems.add(
            f"{spec.use} is a source: each replica would bring in all of its data again, so a "
            f"source runs as one process (replicas: {spec.replicas} is not possible)",
            locate(spec.name, "replicas"),
            spec.name,
        )
    if spec.ordered is not False and (issubclass(cls, Source) or cls.inputs == ()):
        problems.add(
            "'ordered' needs input ports; this node has none",
            locate(spec.name, "ordered"),
            spec.name,
        )
    elif isinstance(spec.ordered, list) and cls.inputs is not None:
        for i, port in enumerate(spec.ordered):
            if port not in cls.inputs:
                problems.add(
                    f"ordered: unknown input port {port!r} (ports of {spec.use}: "
                    f"{', '.join(map(repr, cls.inputs))})",
                    locate(spec.name, "ordered", i),
                    spec.name,
                )
    if spec.events is not None and not (worker and cls.events):
        problems.add(
            f"'events' tunes event formation, but {spec.use} does not form events "
            "(its class does not set events = True)",
            locate(spec.name, "events"),
            spec.name,
        )


def _overlaps(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def _check_connections(
    problems: Problems,
    specs: Mapping[str, NodeSpec | None],
    refs: list[ConnectionItem],
    out: Checked,
) -> set[str]:
    """Resolve ports, fill in ``out.connections``; return the nodes any connection targets."""
    targeted: set[str] = set()
    seen: dict[tuple[str, str, str, str], int] = {}
    for ref, line, options, key_line in refs:
        text = str(ref)
        targeted.add(ref.target)
        missing = [n for n in dict.fromkeys((ref.source, ref.target)) if n not in specs]
        for name in missing:
            hint = difflib.get_close_matches(name, list(specs), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.add(
                f"connection {text!r}: unknown node {name!r} "
                f"(nodes: {', '.join(specs)}{suggestion})",
                line,
            )
        if missing:
            continue
        source_port = _output_port(problems, ref, line, specs, out.classes)
        target_port = _input_port(problems, ref, line, specs, out.classes)
        if source_port is None or target_port is None:
            continue
        key = (ref.source, source_port, ref.target, target_port)
        if not _check_routing(problems, text, options, line, key_line):
            continue
        conn = Connection(
            source=ref.source,
            source_port=source_port,
            target=ref.target,
            target_port=target_port,
            line=line,
            **options,
        )
        if key in seen:
            problems.add(
                f"connection {str(conn)!r} is listed twice (first on line {seen[key]})", line
            )
            continue
        seen[key] = line
        out.connections.append(conn)
    return targeted


def _check_routing(
    problems: Problems, text: str, options: Mapping[str, Any], line: int, key_line: int
) -> bool:
    """``key`` goes with ``routing: by_key`` and compiles; report and return False if not."""
    routing, key = options.get("routing", "round_robin"), options.get("key")
    if routing == "by_key" and key is None:
        problems.add(f"connection {text!r}: routing by_key needs a 'key:' (e.g. 'id // 10')", line)
        return False
    if routing != "by_key" and key is not None:
        problems.add(
            f"connection {text!r}: 'key:' is only used with 'routing: by_key' (not {routing})",
            key_line,
        )
        return False
    if key is not None:
        try:
            compile_key(key)
        except KeyExpressionError as exc:
            problems.add(f"connection {text!r}: {exc}", key_line)
            return False
    return True


def _output_port(
    problems: Problems,
    ref: ConnectionRef,
    line: int,
    specs: Mapping[str, NodeSpec | None],
    classes: Mapping[str, type[Node]],
) -> str | None:
    cls, spec = classes.get(ref.source), specs[ref.source]
    if cls is None or spec is None:  # already reported
        return None
    outputs = tuple(cls.outputs)
    if not outputs:
        problems.add(
            f"has no output ports ({spec.use} is a sink), but connection {str(ref)!r} "
            "reads from it",
            line,
            ref.source,
        )
        return None
    if ref.source_port is None:
        return outputs[0]
    if ref.source_port not in outputs:
        problems.add(
            _unknown_port(ref.source_port, spec.use, outputs, cls.inputs, "an input"),
            line,
            ref.source,
        )
        return None
    return ref.source_port


def _input_port(
    problems: Problems,
    ref: ConnectionRef,
    line: int,
    specs: Mapping[str, NodeSpec | None],
    classes: Mapping[str, type[Node]],
) -> str | None:
    cls, spec = classes.get(ref.target), specs[ref.target]
    if cls is None or spec is None:
        return None
    text = str(ref)
    inputs = cls.inputs
    if issubclass(cls, Source) or inputs == ():
        what = "is a source" if issubclass(cls, Source) else "has no input ports"
        problems.add(
            f"{what} ({spec.use}) and takes no input, but connection {text!r} feeds it",
            line,
            ref.target,
        )
        return None
    if ref.target_port is None:
        if inputs is None:
            problems.add(
                f"{spec.use} accepts any input port name, so connection {text!r} must name one "
                f"('{ref.target}.<port>')",
                line,
                ref.target,
            )
            return None
        return inputs[0]
    if inputs is not None and ref.target_port not in inputs:
        problems.add(
            _unknown_port(ref.target_port, spec.use, tuple(inputs), cls.outputs, "an output"),
            line,
            ref.target,
        )
        return None
    return ref.target_port


def _unknown_port(
    port: str, use: str, ports: tuple[str, ...], other: tuple[str, ...] | None, other_kind: str
) -> str:
    listed = ", ".join(map(repr, ports))
    text = f"unknown port {port!r} (ports of {use}: {listed})"
    if other and port in other:
        text += f"; {port!r} is {other_kind} port"
    return text


def _check_ordered_ports(
    problems: Problems, specs: Mapping[str, NodeSpec | None], locate: Locate, out: Checked
) -> None:
    """``ordered:`` of a node that accepts any input port name lists ports its connections
    feed (those of other nodes are checked against their classes' ports)."""
    for name, cls in out.classes.items():
        spec = specs[name]
        if spec is None or cls.inputs is not None or not isinstance(spec.ordered, list):
            continue
        fed = list(dict.fromkeys(c.target_port for c in out.connections if c.target == name))
        for i, port in enumerate(spec.ordered):
            if port not in fed:
                problems.add(
                    f"ordered: no connection feeds port {port!r} (ports connected: "
                    f"{', '.join(map(repr, fed)) or 'none'})",
                    locate(name, "ordered", i),
                    name,
                )


def _check_inputs(
    problems: Problems,
    specs: Mapping[str, NodeSpec | None],
    targeted: set[str],
    out: Checked,
) -> None:
    """Every non-source node needs an input (unless a faulty connection meant to feed it)."""
    for name, cls in out.classes.items():
        spec = specs[name]
        if spec is None or issubclass(cls, Source) or name in targeted:
            continue
        port = f".{cls.inputs[0]}" if cls.inputs else ".<port>"
        problems.add(
            f"has no input: connect an output to it (e.g. 'other.out -> {name}{port}')",
            spec.line,
            name,
        )
