"""The control channel between a node process and its launcher: every message, typed.

One DEALER per node process (routing id ``node#replica``, :func:`identity`) connected to the
launcher's ROUTER. A message is one msgpack map: ``"t"`` (its kind, :attr:`Control.kind`) and
its fields. Each kind is a frozen dataclass below; :func:`encode` and :func:`decode` convert,
and :func:`dispatch` calls the handler a side registered for a message's class (the node and
the launcher each keep one table). To add a control message: a dataclass here with its
``kind``, a handler in the table of the side that receives it.

node -> launcher: :class:`Hello`, :class:`Bound`, :class:`InputsAdded`, :class:`Progress`,
:class:`StreamEnded`, :class:`Failed`, :class:`Done`, :class:`Redelivered`.

launcher -> node: :class:`Setup`, :class:`Connect`, :class:`Stop`, :class:`Drain`,
:class:`PeerLost`, :class:`PeerGone`, :class:`Retire`, :class:`UpstreamGone`,
:class:`UpstreamRedelivered`, :class:`AddInputs`, :class:`Reconnect`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import zmq

from beampipe.transport.security import Credentials


class ControlError(ValueError):
    """A frame that is not a control message of this protocol (unreadable, unknown kind,
    missing or unknown fields)."""


@dataclass(frozen=True)
class Control:
    """Base of the control messages; ``kind`` is the ``"t"`` on the wire."""

    kind: ClassVar[str] = ""


# -- node -> launcher --------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Control):
    """The process started (its pid on ``host``)."""

    kind: ClassVar[str] = "hello"
    node: str
    replica: int
    pid: int
    host: str


@dataclass(frozen=True)
class Bound(Control):
    """The worker is built and its output ports are bound: ``{port: endpoint}``, and the tap's
    endpoint (None for a sink)."""

    kind: ClassVar[str] = "bound"
    endpoints: dict[str, str]
    tap: str | None = None


@dataclass(frozen=True)
class InputsAdded(Control):
    """The pipes of an :class:`AddInputs` are connected."""

    kind: ClassVar[str] = "inputs_added"


@dataclass(frozen=True)
class Progress(Control):
    """Messages handled per stream so far, the metrics (``NodeMetrics.snapshot``), and per
    downstream replica (``node#replica``) the items the node's output ports sent it that it has
    not acknowledged, where there are any (for the launcher's hang detection)."""

    kind: ClassVar[str] = "progress"
    streams: dict[str, int]
    metrics: dict[str, Any]
    waiting: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamEnded(Control):
    """A stream ended here: its messages, the unix times of its first and last."""

    kind: ClassVar[str] = "stream_end"
    stream: str
    messages: int
    t_first: float
    t_last: float


@dataclass(frozen=True)
class Failed(Control):
    """A worker hook raised: where (stream and id if known), what, and the traceback;
    ``drained``: a source's streams were ended and what it sent was processed first."""

    kind: ClassVar[str] = "error"
    node: str
    replica: int
    stream: str | None
    id: int | None
    error: str
    traceback: str
    drained: bool = False


@dataclass(frozen=True)
class Done(Control):
    """Finished: messages sent per output port, the final metrics."""

    kind: ClassVar[str] = "done"
    sent: dict[str, int]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Redelivered(Control):
    """Every message replica ``replica`` of ``target`` had not acknowledged when it died for
    good (:class:`PeerGone`) was sent to the other replicas and acknowledged."""

    kind: ClassVar[str] = "redelivered"
    target: str
    replica: int


# -- launcher -> node --------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup(Control):
    """The validated pipeline (``Pipeline.to_dict``), the address template to bind output
    ports to, the snapshots' folder and the credit of each input pipe."""

    kind: ClassVar[str] = "setup"
    pipeline: dict[str, Any]
    bind: str
    state_dir: str
    window: int
    window_bytes: int


@dataclass(frozen=True)
class Connect(Control):
    """The upstream endpoints to connect the input ports to: ``[{port, upstream,
    endpoint}]``."""

    kind: ClassVar[str] = "connect"
    inputs: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Stop(Control):
    """Stop at once (sinks still close their files)."""

    kind: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Drain(Control):
    """A source ends its open streams and finishes; the rest follows."""

    kind: ClassVar[str] = "drain"


@dataclass(frozen=True)
class PeerLost(Control):
    """Replica ``replica`` of ``target`` (``node.port``) died and will be restarted: keep
    what it did not acknowledge for it."""

    kind: ClassVar[str] = "peer_lost"
    target: str
    replica: int


@dataclass(frozen=True)
class PeerGone(Control):
    """Replica ``replica`` of ``target`` died for good: send what it did not acknowledge to
    the other replicas."""

    kind: ClassVar[str] = "peer_gone"
    target: str
    replica: int


@dataclass(frozen=True)
class Retire(Control):
    """Replica ``replica`` of ``target`` is being removed (``scale``): send it nothing more."""

    kind: ClassVar[str] = "retire"
    target: str
    replica: int


@dataclass(frozen=True)
class UpstreamGone(Control):
    """The upstream replica ``upstream`` (``node#replica.``) died for good: its pipes are
    read no more; the streams still wait for them (:class:`UpstreamRedelivered`)."""

    kind: ClassVar[str] = "upstream_gone"
    upstream: str


@dataclass(frozen=True)
class UpstreamRedelivered(Control):
    """What the dead upstream replica ``upstream`` (``node#replica.``) had not acknowledged
    went through the other replicas of its node and was acknowledged: its pipes count as
    finished."""

    kind: ClassVar[str] = "upstream_redelivered"
    upstream: str


@dataclass(frozen=True)
class AddInputs(Control):
    """Connect these input pipes too (a replica added upstream): ``[{port, upstream,
    endpoint}]``; answered with :class:`InputsAdded`."""

    kind: ClassVar[str] = "add_inputs"
    inputs: list[dict[str, str]]


@dataclass(frozen=True)
class Reconnect(Control):
    """The restarted upstream replica ``upstream`` (``node#replica.port``) listens at
    ``endpoint`` now."""

    kind: ClassVar[str] = "reconnect"
    upstream: str
    endpoint: str


KINDS: dict[str, type[Control]] = {
    cls.kind: cls
    for cls in (
        Hello,
        Bound,
        InputsAdded,
        Progress,
        StreamEnded,
        Failed,
        Done,
        Setup,
        Connect,
        Stop,
        Drain,
        PeerLost,
        PeerGone,
        Retire,
        Redelivered,
        UpstreamGone,
        UpstreamRedelivered,
        AddInputs,
        Reconnect,
    )
}
"""Every control message class by its ``kind``."""


def identity(node: str, replica: int) -> bytes:
    """The routing id of a node replica on the control channel."""
    return f"{node}#{replica}".encode()


def encode(msg: Control) -> bytes:
    """The frame of ``msg``: a msgpack map ``{"t": kind, field: value, ...}``."""
    return msgpack.packb({"t": msg.kind, **dataclasses.asdict(msg)})


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (decoded msgpack) is of the type ``hint`` of a control message field:
    ``Any``, ``str``, ``int`` (not ``bool``), ``float`` (an ``int`` too), ``bool``, ``None``,
    unions, ``dict[K, V]`` and ``list[T]``."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _fits(k, key) and _fits(v, item) for k, v in value.items()
        )
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


_HINTS: dict[type[Control], dict[str, Any]] = {}
"""The field types of each control message class (resolved once)."""


def _check_types(cls: type[Control], data: dict[str, Any]) -> None:
    """Raise :class:`ControlError` naming the first field of ``data`` that is not of its type."""
    hints = _HINTS.get(cls)
    if hints is None:
        fields = {f.name for f in dataclasses.fields(cls)}
        hints = {k: v for k, v in typing.get_type_hints(cls).items() if k in fields}
        _HINTS[cls] = hints
    for name, value in data.items():
        if name in hints and not _fits(value, hints[name]):
            raise ControlError(
                f"control message {cls.kind!r}: field {name!r} is a {type(value).__name__}, "
                f"not {hints[name]}"
            )


def decode(frame: bytes) -> Control:
    """The message in ``frame``, its fields checked against their types.

    Raises:
        ControlError: not msgpack, not a map, an unknown kind, fields its class does not
            have (missing or unknown), or a field of another type.
    """
    try:
        data = msgpack.unpackb(frame, raw=False)
    except Exception as exc:
        raise ControlError(f"unreadable control frame of {len(frame)} bytes: {exc}") from None
    if not isinstance(data, dict):
        raise ControlError(f"control frame is a {type(data).__name__}, not a map")
    kind = data.pop("t", None)
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ControlError(f"unknown control message kind {kind!r}")
    _check_types(cls, data)
    try:
        return cls(**data)
    except TypeError as exc:
        raise ControlError(f"control message {kind!r}: {exc}") from None


Handler = Callable[..., None]


def dispatch(msg: Control, table: Mapping[type[Control], Handler], *args: Any) -> None:
    """Call the handler ``table`` has for ``msg``'s class: ``handler(*args, msg)``.

    Raises:
        ControlError: the table has none (a message this side does not receive).
    """
    handler = table.get(type(msg))
    if handler is None:
        raise ControlError(f"unexpected control message {msg.kind!r}")
    handler(*args, msg)


class ControlClient:
    """The node side of the control channel; it presents ``credentials`` to the launcher."""

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        node: str,
        replica: int,
        credentials: Credentials | None = None,
    ) -> None:
        self.socket = ctx.socket(zmq.DEALER)
        if credentials is not None:
            credentials.client(self.socket)
        self.socket.setsockopt(zmq.ROUTING_ID, identity(node, replica))
        self.socket.setsockopt(zmq.LINGER, 5000)
        self.socket.connect(endpoint)

    def send(self, msg: Control) -> None:
        self.socket.send(encode(msg))

    def recv(self, timeout_ms: int) -> Control | None:
        """The next message, or None after ``timeout_ms``.

        Raises:
            ControlError: the launcher sent what is not of this protocol.
        """
        if self.socket.poll(timeout_ms):
            return decode(self.socket.recv())
        return None
