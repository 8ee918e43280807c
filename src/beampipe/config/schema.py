"""The shape of a pipeline file (pydantic), and pydantic's errors turned into readable problems."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from beampipe.config.pydantic_errors import SYNTHETIC, short_repr, simplify
from beampipe.worker.paths import OutputPath

CONNECTION_HINT = "'source.port -> target.port' (ports optional: 'source -> target')"
CONNECTION_MAPPING_HINT = (
    f"a string {CONNECTION_HINT}, or a mapping {{connect: 'a.out -> b.in', routing: by_key, "
    "key: 'id // 10'}"
)
Routing = Literal["round_robin", "by_key", "broadcast"]


Backend = Literal["local", "slurm", "nomad"]
"""Where ``beampipe deploy`` runs a pipeline's node processes (the names of
:mod:`beampipe.launch.backends`)."""
BACKENDS: tuple[str, ...] = get_args(Backend)

HANG_TIMEOUT = 10.0
"""Default ``hang_timeout``: seconds a replica may hold messages without a word before it is
taken as hung (docs/reliability.md, "Hangs")."""
REORDER_TIMEOUT = 30.0
"""Default ``reorder_timeout``: seconds an ordered port waits for a missing id while holding
later ones (docs/dataflow.md, "Ordered input ports"): longer than the default
``hang_timeout`` and a restart, so that a hung replica is replaced before order is given up."""
TIMEOUT_RANGE = (2.0, 86400.0)
"""Seconds: ``hang_timeout`` and ``reorder_timeout`` are 0 or null (off) or in this range (a
live node reports at least every second)."""


class FileModel(BaseModel):
    """The top level of a pipeline file; each node entry is checked by :class:`NodeModel`."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    nodes: dict[str, Any]
    connections: list[str | dict[str, Any]] = []
    dead_letter: OutputPath | None = None
    backend: Backend = "local"
    encrypt: Annotated[bool, Field(strict=True)] = False
    """CurveZMQ encryption of every socket of the run (for traffic that crosses hosts);
    without it the sockets are authenticated only (:mod:`beampipe.transport.security`)."""

    @field_validator("connections", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class ConnectionModel(BaseModel):
    """A connection written as a mapping, to choose how messages are routed to the target's
    replicas: ``round_robin`` (by credit: the least-loaded replica), ``by_key`` (equal keys to
    the same replica; needs ``key``) or ``broadcast`` (every replica gets every message)."""

    model_config = ConfigDict(extra="forbid")

    connect: str
    routing: Routing = "round_robin"
    key: str | None = None


MAX_REPLICAS = 256
"""Processes of one node: ``replicas:`` and ``beampipe scale``."""
MAX_REORDER_BUFFER = 1_000_000
"""Messages of a stream that may wait on an ordered port."""
MAX_RETRIES = 1000
MAX_RESTARTS = 100
"""Restarts of a replica (the delay doubles at each: ``restart_delay * 2**restarts``)."""
MAX_DELAY = 3600.0
"""Seconds of ``retry_delay`` and ``restart_delay``."""
MAX_TIMEOUT = 86400.0
"""Seconds of ``gap_timeout`` and ``events.timeout``."""

Seconds = Annotated[float, Field(ge=0, le=MAX_DELAY, allow_inf_nan=False)]
Timeout = Annotated[float, Field(ge=0, le=MAX_TIMEOUT, allow_inf_nan=False)]


class EventsModel(BaseModel):
    """``events:`` of a node that forms events: how long to wait for the missing parts of an
    event (seconds), and what to do then (``deliver`` it incomplete, or ``drop`` it)."""

    model_config = ConfigDict(extra="forbid")

    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)] = 5.0
    incomplete: Literal["deliver", "drop"] = "deliver"


class Resources(BaseModel):
    """``resources:`` of a node: what each of its replicas needs where a cluster backend
    places it (Slurm, Nomad); the local backend ignores them.

    Attributes:
        cpus: CPU cores per replica (Slurm ``--cpus-per-task``, Nomad ``cores``).
        memory: memory per replica, a number with a unit ``K``, ``M``, ``G`` or ``T``
            (binary, as Slurm's ``--mem``), e.g. ``"4G"``; see :attr:`memory_mb`.
        gpus: GPUs per replica (Slurm ``--gpus``, Nomad ``device "nvidia/gpu"``).
        partition: the Slurm partition (``--partition``); default the cluster's.
        time: the Slurm time limit (``--time``), e.g. ``"2:00:00"``; default the partition's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: Annotated[int, Field(ge=1, le=4096, strict=True)] = 1
    memory: Annotated[str, Field(pattern=r"^[0-9]{1,12}[KMGT]?$")] | None = None
    gpus: Annotated[int, Field(ge=0, le=64, strict=True)] = 0
    partition: str | None = None
    time: str | None = None

    @property
    def memory_mb(self) -> int | None:
        """:attr:`memory` in MiB (rounded up), or None if not given."""
        if self.memory is None:
            return None
        unit = self.memory[-1] if self.memory[-1].isalpha() else "M"
        number = int(self.memory.rstrip("KMGT"))
        return -(-number * {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}[unit] // 1024)


class NodeModel(BaseModel):
    """One entry under ``nodes:``."""

    model_config = ConfigDict(extra="forbid")

    use: str
    params: dict[str, Any] = {}
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS, strict=True)] = 1
    ordered: bool | list[str] = False
    reorder_buffer: Annotated[int, Field(ge=1, le=MAX_REORDER_BUFFER, strict=True)] = 1024
    events: EventsModel | None = None
    on_error: Literal["fail_fast", "skip"] = "fail_fast"
    retries: Annotated[int, Field(ge=0, le=MAX_RETRIES, strict=True)] = 0
    retry_delay: Seconds = 0.0
    restart: Literal["never", "on-failure"] = "never"
    max_restarts: Annotated[int, Field(ge=0, le=MAX_RESTARTS, strict=True)] = 3
    restart_delay: Seconds = 0.5
    gap_timeout: Timeout = 5.0
    hang_timeout: Annotated[float, Field(ge=0)] | None = HANG_TIMEOUT
    reorder_timeout: Annotated[float, Field(ge=0)] | None = REORDER_TIMEOUT
    check_finite: Annotated[bool, Field(strict=True)] = True
    resources: Resources = Resources()

    @field_validator("params", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("hang_timeout", "reorder_timeout")
    @classmethod
    def _off_or_in_range(cls, value: float | None) -> float:
        low, high = TIMEOUT_RANGE
        if value and not low <= value <= high:
            raise PydanticCustomError(
                "value_error", f"should be 0 or null (off) or from {low:g} to {high:g} seconds"
            )
        return value or 0.0


def file_problems(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """``(location path, problem)`` for each error of :class:`FileModel` validation."""
    out = []
    for err in exc.errors():
        loc, kind = err["loc"], err["type"]
        key = loc[0] if loc else None
        if kind == "extra_forbidden" and len(loc) == 1:
            out.append((loc, _unknown_key(str(key), FileModel, "top-level key")))
        elif key == "nodes" and len(loc) == 1:
            nodes_hint = "a mapping of node names to {use: ..., params: {...}}"
            if kind == "missing":
                out.append((loc, f"missing 'nodes:' ({nodes_hint})"))
            else:
                out.append((loc, f"'nodes' should be {nodes_hint}, got {_value(err)}"))
        elif key == "nodes" and loc[-1] == "[key]":
            out.append((loc[:-1], f"node name {loc[1]!r} should be a string"))
        elif key == "connections" and len(loc) == 1:
            out.append(
                (loc, f"'connections' should be a list of {CONNECTION_HINT}, got {_value(err)}")
            )
        elif key == "connections":
            if len(loc) > 2 and loc[2] == "dict[str,any]":
                continue  # the mapping form; its content is checked by ConnectionModel
            if len(loc) > 2 and loc[2] == "str" and isinstance(err["input"], dict):
                continue
            out.append(
                (loc[:2], f"connection should be {CONNECTION_MAPPING_HINT}, got {_value(err)}")
            )
        else:
            out.append((loc, f"{dotted(loc)}: {pydantic_message(err)}"))
    return out


def connection_problems(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """``(location within the connection mapping, problem)`` for :class:`ConnectionModel`."""
    errors = exc.errors()
    if any(e["type"] == "missing" and e["loc"] == ("connect",) for e in errors):
        keys = (
            ", ".join(map(repr, errors[0]["input"])) if isinstance(errors[0]["input"], dict) else ""
        )
        return [
            (
                (),
                f"connection mapping without 'connect:' (has {keys}); write it as "
                f"{CONNECTION_MAPPING_HINT}",
            )
        ]
    out = []
    for err in errors:
        loc, kind = err["loc"], err["type"]
        if kind == "extra_forbidden" and len(loc) == 1:
            out.append((loc, _unknown_key(str(loc[0]), ConnectionModel, "connection key")))
        else:
            out.append((loc, f"connection {dotted(loc)}: {pydantic_message(err)}"))
    return out


def node_problems(
    exc: ValidationError, entry: Any, params: Collection[str] = ()
) -> list[tuple[tuple[Any, ...], str]]:
    """``(location path within the node entry, problem)`` for each error of :class:`NodeModel`
    validating ``entry``; ``params`` are those of the node's class, if known (a param written
    beside ``use:`` instead of under ``params:`` is then recognised)."""
    out = []
    for err in simplify(exc.errors(), entry):
        loc, kind = err["loc"], err["type"]
        if not loc:
            out.append(
                (loc, f"should be a mapping {{use: ..., params: {{...}}}}, got {_value(err)}")
            )
        elif kind == "extra_forbidden" and len(loc) == 1:
            out.append((loc, _unknown_node_key(str(loc[0]), entry, params)))
        elif kind == "missing" and loc == ("use",):
            out.append((loc, "missing 'use:' (a built-in node type or 'package.module:Class')"))
        else:
            out.append((loc, f"{dotted(loc)}: {pydantic_message(err)}"))
    return out


def _unknown_key(key: str, model: type[BaseModel], what: str) -> str:
    allowed = list(model.model_fields)
    hint = difflib.get_close_matches(key, allowed, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"unknown {what} {key!r} (allowed: {', '.join(allowed)}{suggestion})"


def _unknown_node_key(key: str, entry: Any, params: Collection[str]) -> str:
    """Say so when ``key`` is one of the node's params, given beside ``use:``."""
    text = _unknown_key(key, NodeModel, "key")
    if key in params:
        use = entry.get("use")
        return f"{text}; {key!r} is a param of {use}: put node parameters under 'params:'"
    if not difflib.get_close_matches(key, list(NodeModel.model_fields), n=1):
        return f"{text}; node parameters go under 'params:'"
    return text


def pydantic_message(err: ErrorDetails) -> str:
    """pydantic's message for ``err``, shortened, with the offending value."""
    if err["type"] in SYNTHETIC:
        return err["msg"]
    msg = err["msg"].split(", unable to ")[0]
    if err["type"] == "missing":
        return "required"
    return f"{msg}, got {_value(err)}"


def _value(err: ErrorDetails) -> str:
    value = err["input"]
    return "nothing" if value is None else short_repr(value)


def dotted(loc: tuple[Any, ...]) -> str:
    """``('a', 'b', 0)`` as ``a.b[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
