"""The validated pipeline: nodes, connections and graph queries; shippable as a plain dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from beampipe.config.errors import PipelineError
from beampipe.config.params import validate_params
from beampipe.config.schema import (
    HANG_TIMEOUT,
    MAX_REORDER_BUFFER,
    MAX_REPLICAS,
    MAX_RESTARTS,
    MAX_RETRIES,
    REORDER_TIMEOUT,
    Backend,
    Resources,
    Seconds,
    Timeout,
)
from beampipe.worker.base import Node, Params
from beampipe.worker.registry import resolve


class NodeSpec(BaseModel):
    """One node of a pipeline as written in the file (``params`` not yet validated).

    Attributes:
        name: the node's name (its key under ``nodes:``).
        use: a registered node type or ``package.module:Class``.
        params: the node's ``params:`` with any overrides applied (plain JSON-able values).
        replicas: how many identical processes run this node (1 to 256).
        ordered: ``True`` (every input port) or the input ports that deliver each stream's
            messages in id order, whatever the replicas upstream did.
        reorder_buffer: at most this many messages per stream wait for their turn on an
            ordered port (1 to 1,000,000); when it is full the lowest id goes on (counted as
            out of order).
        events: for a worker that forms events, ``{"timeout": s, "incomplete": "deliver" |
            "drop"}``; ``None`` for the defaults (5 s, deliver).
        on_error: what an exception in ``process`` does: ``fail_fast`` stops the run; ``skip``
            records the message in the pipeline's dead-letter file and goes on.
        retries: how often a message whose ``process`` raised :class:`beampipe.TransientError`
            is tried again (0 to 1000), ``retry_delay`` seconds apart (0 to 3600), before
            ``on_error`` applies.
        restart: ``on-failure`` starts a replica's process again when it dies or fails (its
            unacknowledged inputs are sent to it again); ``never`` fails the run.
        max_restarts: restarts per replica before the run fails (0 to 100).
        restart_delay: seconds before the first restart of a replica, doubled for each next
            (0 to 3600).
        gap_timeout: for a source: seconds (0 to 86400) an id it skipped is awaited before it is
            reported missing (see :mod:`beampipe.runtime.gaps`).
        hang_timeout: seconds a replica may hold unacknowledged input without reporting to the
            launcher before it is taken as hung (reported; killed and restarted or its
            messages redelivered, as for a dead replica, where its restart policy and routing
            allow); 0 turns the detection off (docs/reliability.md, "Hangs").
        reorder_timeout: seconds an ordered input port waits for a missing id while it holds
            later ones; then it lets them go (counted out of order) and the missing ids, when
            they come, are late; 0 waits for ever (docs/dataflow.md, "Ordered input ports").
        check_finite: count the NaN and infinite values in the floating-point arrays the node
            sends (``nonfinite`` in its metrics, a warning at the end of the run); ``false``
            saves the cost (about one ``sum`` per array, see docs/benchmarks.md).
        resources: what each replica needs on a cluster (:class:`Resources`).
        line: 1-based line of the node in the pipeline file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    use: str
    params: dict[str, Any] = {}
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    ordered: bool | list[str] = False
    reorder_buffer: int = Field(default=1024, ge=1, le=MAX_REORDER_BUFFER)
    events: dict[str, Any] | None = None
    on_error: Literal["fail_fast", "skip"] = "fail_fast"
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    retry_delay: Seconds = 0.0
    restart: Literal["never", "on-failure"] = "never"
    max_restarts: int = Field(default=3, ge=0, le=MAX_RESTARTS)
    restart_delay: Seconds = 0.5
    gap_timeout: Timeout = 5.0
    hang_timeout: float = Field(default=HANG_TIMEOUT, ge=0)
    reorder_timeout: float = Field(default=REORDER_TIMEOUT, ge=0)
    check_finite: bool = True
    resources: Resources = Resources()
    line: int

    def is_ordered(self, port: str) -> bool:
        """Whether input ``port`` delivers messages in id order."""
        return self.ordered is True or (isinstance(self.ordered, list) and port in self.ordered)


class Connection(BaseModel):
    """An output port of one node joined to an input port of another; ``str()`` gives
    ``"scan.out -> mu.in"``.

    Attributes:
        routing: which replica of the target gets a message: ``round_robin`` (the one with
            most credit, i.e. the least loaded), ``by_key`` (equal :attr:`key` values to the
            same replica, see :mod:`beampipe.message.key`) or ``broadcast`` (all of them).
        key: the key expression of ``by_key`` routing, e.g. ``"id // 10"``.
        line: 1-based line of the connection in the pipeline file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    source_port: str
    target: str
    target_port: str
    routing: Literal["round_robin", "by_key", "broadcast"] = "round_robin"
    key: str | None = None
    line: int

    def __str__(self) -> str:
        return f"{self.source}.{self.source_port} -> {self.target}.{self.target_port}"


class Pipeline(BaseModel):
    """A validated pipeline: built by :func:`~beampipe.config.load_pipeline` /
    :func:`~beampipe.config.parse_pipeline`, or rebuilt in another process by :meth:`from_dict`.

    Attributes:
        name: the pipeline's ``name:`` (default: the file's stem).
        dead_letter: the JSON-lines file where nodes with ``on_error: skip`` record the
            messages they skipped (``dead_letter:``; default ``<name>.dead-letters.jsonl``,
            relative to the working directory).
        path: the file it was read from, or ``"<string>"``.
        base_dir: absolute directory of the file; relative paths in params are relative to it
            (resolving them is the node's business).
        nodes: ``{name: NodeSpec}`` in file order.
        connections: in file order, default ports filled in.
        backend: where ``beampipe deploy`` runs it: ``local``, ``slurm`` or ``nomad``.
        encrypt: its processes talk over CurveZMQ (authenticated and encrypted) rather than
            PLAIN (authenticated only); see :mod:`beampipe.transport.security`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    dead_letter: str = "dead-letters.jsonl"
    path: str = "<string>"
    base_dir: Path
    nodes: dict[str, NodeSpec]
    connections: list[Connection] = []
    backend: Backend = "local"
    encrypt: bool = False

    _classes: dict[str, tuple[str, type[Node]]] = PrivateAttr(default_factory=dict)
    _params: dict[str, tuple[NodeSpec, Params]] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        """Equal when the fields are (the caches of classes and params do not count)."""
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def _spec(self, name: str) -> NodeSpec:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in pipeline {self.name!r}") from None

    def node_class(self, name: str) -> type[Node]:
        """The class of node ``name`` (imported once, then cached).

        Raises:
            KeyError: no such node.
            PipelineError: its ``use`` cannot be resolved (possible after :meth:`from_dict`).
        """
        spec = self._spec(name)
        cached = self._classes.get(name)
        if cached is not None and cached[0] == spec.use:
            return cached[1]
        try:
            cls = resolve(spec.use)
        except Exception as exc:
            raise PipelineError(str(exc), file=self.path, line=spec.line, node=name) from None
        self._classes[name] = (spec.use, cls)
        return cls

    def node_params(self, name: str) -> Params:
        """The node's params as an instance of its class's own ``Params`` model (cached).

        Raises:
            KeyError: no such node.
            PipelineError: the params do not validate (possible after :meth:`from_dict`).
        """
        spec = self._spec(name)
        cached = self._params.get(name)
        if cached is not None and cached[0] is spec:
            return cached[1]
        params, problems = validate_params(
            self.node_class(name), spec.use, spec.params, self.base_dir
        )
        if params is None:
            raise PipelineError.combine(
                PipelineError(p.problem, file=self.path, line=spec.line, node=name)
                for p in problems
            )
        self._params[name] = (spec, params)
        return params

    def inputs_of(self, name: str) -> list[Connection]:
        """Connections into node ``name``, in file order."""
        self._spec(name)
        return [c for c in self.connections if c.target == name]

    def outputs_of(self, name: str) -> list[Connection]:
        """Connections out of node ``name``, in file order."""
        self._spec(name)
        return [c for c in self.connections if c.source == name]

    def sources(self) -> list[str]:
        """Nodes without input connections, in file order: in a validated pipeline exactly the
        :class:`~beampipe.Source` nodes."""
        fed = {c.target for c in self.connections}
        return [n for n in self.nodes if n not in fed]

    def sinks(self) -> list[str]:
        """Nodes without output connections, in file order."""
        feeding = {c.source for c in self.connections}
        return [n for n in self.nodes if n not in feeding]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict from which :meth:`from_dict` rebuilds this pipeline."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pipeline:
        """Rebuild a pipeline from :meth:`to_dict`'s output, without the file.

        Node classes are not imported here but on first use of :meth:`node_class` /
        :meth:`node_params`, so that a node process imports only its own node's code.

        Raises:
            PipelineError: ``data`` is not a pipeline dict.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            file = data.get("path", "<dict>") if isinstance(data, dict) else "<dict>"
            raise PipelineError(f"not a valid pipeline dict: {exc}", file=str(file)) from None
