"""The worker SDK: what a worker author subclasses.

A node's class decides its role. Both roles share :class:`Node` (params, name, replica, output
ports, the stream hooks, dead letters, ``close``); a :class:`Source` has no input ports and
produces streams from :meth:`Source.generate`; a :class:`Worker` handles one message at a time
in :meth:`Worker.process`; a sink is a worker without output ports. The runtime calls these
methods from one thread, one message at a time, and does everything else: (de)serialisation,
stream lifecycle, flow control. :mod:`beampipe.testing` drives a node the same way in a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from beampipe.message import EndOfStream, Event, Item, Message, StreamStart

Output = None | Item | Iterable[Item] | Mapping[str, "Item | Iterable[Item]"]
"""What the hooks may return: nothing, one message or several (a list, or a generator) for the
single output port, or a mapping ``{output port: message(s)}``. A :class:`~beampipe.StreamStart`
among them opens a stream of the worker's own with that header (it goes to every output port).
Anything else is refused with a :class:`ResultError` (:func:`by_port`)."""

MAX_INFO_KEYS = 32
"""Keys a node may report with :meth:`Node.report_info`."""
MAX_INFO_TEXT = 1000
"""Characters of a key or value of :meth:`Node.report_info` at most."""
_ITEMS = (Message, StreamStart, EndOfStream)
_RETURN = "return a Message, a list of Messages or a dict {output port: Message or list}"


class ResultError(ValueError):
    """What a hook returned, or a source yielded, cannot be sent: a tuple or another type, an
    output port the node does not have, a message without a stream or with an id below 1, two
    messages with the same id on one stream and port, data or metadata the wire format cannot
    carry. The text names the hook, the port, the message's stream and id and the likely
    cause. It is handled under the node's ``on_error`` for what ``process`` returned or
    ``generate`` yielded (docs/reliability.md, "Errors inside a worker"), and stops the node
    for the other hooks.

    Attributes:
        cause: the kind of error without what varies from message to message (stream, id):
            ``type:tuple``, ``port:outt``, ``id``, ``stream``, ``duplicate``, ``unsendable:``
            and what cannot be carried; the skips of one cause are counted under one note.
    """

    def __init__(self, text: str, cause: str) -> None:
        super().__init__(text)
        self.cause = cause


def by_port(
    out: Output, outputs: tuple[str, ...], node: str = "", hook: str = "process()"
) -> dict[str, list[Item]]:
    """A hook's return value as ``{output port: [items]}`` (the first port is the default).

    Raises:
        ResultError: ``out`` (or a value of it) is not of the :data:`Output` types, or names a
            port not in ``outputs`` (``node`` and ``hook`` are named in the text).
    """
    if out is None:
        return {}
    if not isinstance(out, Mapping):
        items = _items(out, hook, "")
        if items and not outputs:
            raise ResultError(
                f"{hook} returned a message, but node {node!r} has no output ports", "port:"
            )
        return {outputs[0] if outputs else "": items}
    ports = {}
    for port, value in out.items():
        if port not in outputs:
            have = ", ".join(repr(p) for p in outputs) if outputs else "none"
            raise ResultError(
                f"{hook} returned a dict naming output port {port!r}, which node {node!r} does "
                f"not have (its output ports: {have}): a dict maps output ports to messages",
                f"port:{port}",
            )
        ports[port] = _items(value, hook, f" for port {port!r}")
    return ports


def _items(value: object, hook: str, where: str) -> list[Item]:
    """``value`` (a hook's result, or its value for one port) as a list of items."""
    if isinstance(value, _ITEMS):
        return [value]
    if value is None:
        return []
    if isinstance(value, list | Iterator):
        items = list(value)
        for item in items:
            if not isinstance(item, _ITEMS):
                what = f"a list holding a {type(item).__name__}{where}"
                raise ResultError(f"{hook} returned {what}: {_RETURN}", f"type:{what}")
        return items
    what = f"a {type(value).__name__}{where}"
    raise ResultError(f"{hook} returned {what}: {_RETURN}", f"type:{what}")


class TransientError(Exception):
    """Raise this from :meth:`Worker.process` for a failure worth trying again (a file not
    there yet, a service that timed out): the runtime retries the message ``retries`` times,
    ``retry_delay`` seconds apart (node options in the pipeline file), before the node's
    ``on_error`` policy applies."""


class Params(BaseModel):
    """Base of a node's parameters: the ``params:`` of its entry in the pipeline file.

    Unknown keys are rejected, so a misspelt parameter is an error, not silently ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Node:
    """What every node class shares; subclass :class:`Worker` or :class:`Source`, not this.

    Class attributes:
        Params: the pydantic model of the node's ``params:``.
        inputs: names of the input ports; ``None`` accepts any port name used by a connection.
            A source has none.
        outputs: names of the output ports; the first is the default for returned messages.
    """

    Params: ClassVar[type[Params]] = Params
    inputs: ClassVar[tuple[str, ...] | None] = ()
    outputs: ClassVar[tuple[str, ...]] = ("out",)

    def __init__(self, params: Params, name: str = "") -> None:
        self.params = params
        self.name = name or type(self).__name__
        self.replica = 0
        """Which replica of its node this is (0 to ``replicas - 1``; set by the runtime before
        the first hook is called)."""
        self.restarts = 0
        """How often this replica's process died and was restarted before this one (set by
        the runtime before the first hook): a sink that finds ``restarts > 0`` resumes the
        files its predecessor wrote instead of starting them afresh."""
        self.dead_letters: list[tuple[Message | Event, str | BaseException]] = []
        """Outside a pipeline (a node called directly): what :meth:`dead_letter` was given. In
        a pipeline the runtime takes them instead, and :mod:`beampipe.testing` collects them in
        its results."""
        self.info: dict[str, str] = {}
        """What the node reported about itself with :meth:`report_info`: ``{key: value}``."""
        self._drop: Callable[[Message | Event, str | BaseException], None] = self._keep
        self._stream_warnings: dict[str, list[dict[str, Any]]] = {}

    def dead_letter(self, item: Message | Event, reason: str | BaseException) -> None:
        """Drop an input this node cannot use, and say why: a corrupt detector image, a frame
        that does not decode, a file that cannot be read. Nothing is dropped silently: in a
        pipeline the drop is counted in the node's metrics (``dropped``), ``item`` (its stream,
        id and metadata) and ``reason`` go to the pipeline's dead-letter file
        (:mod:`beampipe.runtime.deadletter`), and the end of the run warns, naming the first
        reason, so make it name the likely cause ("frame size 1000 does not match the
        header's 4148x4362"). A source describes what never became a message as a
        ``Message(stream=..., id=..., metadata=...)`` without data. The run goes on.
        """
        self._drop(item, reason)

    def _keep(self, item: Message | Event, reason: str | BaseException) -> None:
        self.dead_letters.append((item, reason))

    def report_info(self, key: str, value: str) -> None:
        """Report a fact about this node that is not a count, e.g. ``report_info(
        "execution_provider", "CUDAExecutionProvider")``: the device or library version it
        runs on, the model it loaded. It goes into the node's metrics (``info``, shown by
        ``beampipe status``, the end of ``beampipe run``, the viewer's node tooltip and
        ``/metrics`` as ``beampipe_node_info{key=..., value=...} 1``) within a second, and
        stays until the run ends or it is reported again with another value. Call it from
        ``__init__`` or any hook. Where replicas report different values of a key, the node
        shows them all, separated by ``", "`` (so a value should not hold ``", "`` itself).

        Raises:
            TypeError: ``key`` or ``value`` is not a ``str``, or ``key`` is empty.
            ValueError: a new key beyond :data:`MAX_INFO_KEYS`, or ``key`` or ``value`` longer
                than :data:`MAX_INFO_TEXT` characters (info is sent with every progress
                report: a count belongs in a message or a metric).
        """
        if not (isinstance(key, str) and key and isinstance(value, str)):
            raise TypeError(
                f"node {self.name!r}: report_info() takes a non-empty str key and a str value, "
                f"not {key!r}: {value!r} (convert the value with str())"
            )
        if len(key) > MAX_INFO_TEXT or len(value) > MAX_INFO_TEXT:
            raise ValueError(
                f"node {self.name!r}: report_info({key[:40]!r}, ...): key and value may have "
                f"{MAX_INFO_TEXT} characters at most"
            )
        if key not in self.info and len(self.info) >= MAX_INFO_KEYS:
            raise ValueError(
                f"node {self.name!r}: report_info({key!r}, ...): {MAX_INFO_KEYS} keys at most "
                f"(it has {', '.join(self.info)}); report a changing fact under one key"
            )
        self.info[key] = value

    def stream_warnings(self, stream: str) -> list[dict[str, Any]]:
        """In :meth:`on_stream_end` of ``stream``: what the nodes it went through (this one
        included) noted while handling it, one dict per distinct warning: ``{"node": str,
        "text": str, "count": int}`` (warnings, dropped and skipped inputs, non-finite
        results; see :mod:`beampipe.runtime.notes`). Empty elsewhere."""
        return self._stream_warnings.get(stream, [])

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> Output:
        """A new stream opens, at its first :class:`~beampipe.StreamStart` or message;
        ``metadata`` is its header (e.g. the scan file's; ``{}`` if a message came first)."""
        return None

    def on_stream_end(self, stream: str) -> Output:
        """Every message of ``stream`` has been processed; emit final results, drop state."""
        return None

    def close(self) -> None:
        """The run is over (normally or not): release files and connections."""


class Worker(Node):
    """A processing unit: one message in, results out.

    Subclasses set :attr:`Params` to their own parameter model and implement :meth:`process`.
    Per-stream state belongs in :meth:`on_stream_start` / :meth:`on_stream_end`, because several
    streams (scans) flow through one running worker, one after the other or interleaved.

    A worker that is faster on several messages at once (a model's inference) sets
    :attr:`max_batch` and :attr:`max_wait` and implements :meth:`process_batch`.

    Class attributes (besides :class:`Node`'s):
        reducer: ``True`` for a node that must run as one replica (see
            :class:`~beampipe.Reducer`).
        events: ``True`` for a worker with several input ports whose :meth:`process` receives
            one :class:`~beampipe.Event` per (stream, id) holding the messages of all its ports.
        stateful: ``True`` for a worker whose results depend on earlier messages and that
            keeps its state across a restart: it defines :meth:`snapshot` and :meth:`restore`
            (docs/reliability.md); the declaration, not the methods, makes the runtime take
            snapshots, so a subclass may set it back to ``False``. A class that declares it
            without both methods, or defines either in its body without declaring it, is
            refused with a ``TypeError`` naming the class when it is defined (``beampipe
            validate`` reports that as the node's ``use:`` failing to load).
    """

    inputs: ClassVar[tuple[str, ...] | None] = ("in",)
    reducer: ClassVar[bool] = False
    events: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    max_batch: int = 1
    """How many messages (or events) the runtime may hand to :meth:`process_batch` in one call;
    1 (the default): :meth:`process` is called for each. A worker that batches (e.g. a model's
    inference) sets it, usually from its params, when it is made."""
    max_wait: float = 0.0
    """Seconds a batch may wait for more messages after its first arrived (with ``max_batch``
    > 1); 0: a batch holds what has arrived and is at hand, and waits for nothing."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a class whose ``stateful`` and snapshot hooks disagree (see the class doc)."""
        super().__init_subclass__(**kwargs)
        hooks = ("snapshot", "restore")
        name = f"{cls.__module__}.{cls.__qualname__}"
        if cls.stateful:
            missing = [h for h in hooks if getattr(cls, h) is getattr(Worker, h)]
            if missing:
                raise TypeError(
                    f"{name} declares stateful = True but does not define "
                    f"{' and '.join(f'{h}()' for h in missing)}: a stateful worker gives its "
                    "state in snapshot() and takes it back in restore(state)"
                )
            return
        own = [
            h for h in hooks if cls.__dict__.get(h, getattr(Worker, h)) is not getattr(Worker, h)
        ]
        if own:
            raise TypeError(
                f"{name} defines {own[0]}() but does not declare stateful = True: add "
                "'stateful = True' to the class to have its state snapshotted and restored "
                "after a restart"
            )

    def process(self, msg: Message) -> Output:
        """Handle one message; ``msg.port`` names the input port it came in on. A worker with
        ``events = True`` receives a :class:`~beampipe.Event` instead (its ``messages`` by port).

        Messages returned without ``stream``/``id`` inherit those of ``msg``. What is returned
        must be of the :data:`Output` types, for the node's output ports, with ids of 1 or more
        (once per stream and port) and data and metadata the wire format can carry, or it is a
        :class:`ResultError`. An exception raised here, or a :class:`ResultError`, stops the run
        (fail fast) with node, stream, id and traceback, or skips ``msg`` (``on_error: skip``).
        """
        raise NotImplementedError(f"{type(self).__name__}.process")

    def process_batch(self, msgs: list[Any]) -> list[Output]:
        """Handle several messages (or events) at once; one result per message, in their order,
        each what :meth:`process` would return for it (and sent as if it had). Called instead of
        :meth:`process` when :attr:`max_batch` > 1: the runtime gathers the messages at hand,
        in the order it would have processed them, up to ``max_batch`` of them, waiting at most
        ``max_wait`` s after the first; what waits is processed before any stream ends
        (``on_stream_end``). Each message keeps its own credit and acknowledgement: it is
        acknowledged once its own results are. The default calls :meth:`process` on each.

        If it raises, the runtime calls :meth:`process` on each message of the batch in turn,
        under the node's ``retries`` and ``on_error``, so that an error names the message that
        caused it and ``skip`` drops only that one (noted once in the run's warnings). A list of
        another length than ``msgs`` is a :class:`ResultError` for every message of the batch.
        """
        return [self.process(msg) for msg in msgs]

    def on_finish(self) -> Output:
        """Every input has finished and every stream has ended: emit what is still held.

        Results may belong to streams of the worker's own (e.g. ``"merged"``); the runtime
        opens such a stream (with an empty header, or the :class:`~beampipe.StreamStart` the
        worker returned first) when its first message goes out, and ends it after this hook.
        """
        return None

    def checkpoint(self) -> None:
        """A sink makes everything it has processed durable (flushes its files).

        The runtime calls this on a sink (a node without output ports) at least every few
        hundred messages or every 50 ms while messages wait, and at the end of each stream;
        only then are the messages acknowledged upstream. Messages not yet checkpointed when
        the process dies are sent again to its restarted process.
        """

    def snapshot(self) -> Any:
        """For a worker that declares ``stateful = True`` (its results depend on earlier
        messages: running sums, differences between frames): its state, as any picklable
        object.

        A stateful worker is checkpointed like a sink: at least every few hundred messages or
        50 ms while messages wait, and at the end of each stream, the runtime pickles the
        snapshot to the run directory, and only then are the messages processed since the
        previous snapshot acknowledged upstream. After a restart :meth:`restore` gets the last
        snapshot, and exactly the messages processed after it come again, so the state and the
        results are those of an undisturbed run. Keep it cheap: it is taken often. A worker
        with state that does not declare itself stateful loses its state with its process (see
        ``docs/reliability.md``).
        """
        raise NotImplementedError(f"{type(self).__name__}.snapshot")

    def restore(self, state: Any) -> None:
        """Take back the state :meth:`snapshot` returned, before any message of a restarted
        process (``restarts > 0``) is processed."""


class Source(Node):
    """A node that brings data in. It has no input ports.

    :meth:`generate` yields, for each stream, a :class:`~beampipe.StreamStart`, the stream's
    messages with ids 1, 2, 3, ... and an :class:`~beampipe.EndOfStream`. The runtime sends each
    item on as soon as the downstream nodes have room (backpressure pauses the generator). A
    source that waits for data (a detector, a PV monitor) should yield ``None`` every half
    second or so while it waits: the runtime then answers its control channel, so the source
    can be drained (its streams ended) or stopped without waiting for the next item.

    A source that has several items at hand (a file read in chunks, a detector's buffer, a
    scan replayed as fast as possible) may yield them as one ``list``, a *burst*: the runtime
    sends them all before it asks the generator for more, and may put small ones into one
    ZeroMQ message (for 1 KiB messages that took about 10 of 28 µs of CPU off each). A single item
    is sent at once, so a source that yields one item and then blocks delays nothing.

    :meth:`on_stream_start` and :meth:`on_stream_end` are called as the source's own streams
    open and end. If ``generate`` raises, the source ends its open streams and the run fails
    once everything it had sent is processed downstream (``docs/reliability.md``); with
    ``restart: on-failure`` it is restarted instead.
    """

    state_file: Path | None = None
    """Where this replica may keep what it needs after a restart (``restart: on-failure``):
    ``state/NODE.REPLICA.source`` in the run's directory, which outlives the process and is
    deleted with the run's directory; set by the runtime before :meth:`generate` is called
    (None outside a pipeline run). The source creates and reads it itself."""

    def generate(self) -> Iterator[Item | list[Item] | None]:
        """The source's items (see the class doc)."""
        raise NotImplementedError(f"{type(self).__name__}.generate")

    def acknowledged(self, item: Message | EndOfStream) -> None:
        """``item``, which this source yielded, is acknowledged by every downstream replica it
        went to: its consequences are safe downstream (written, at a sink), so a restarted
        source need not send it again. Called by the runtime between items (while it waits
        for credit or data), in any order across streams; keep it quick. A source that
        checkpoints what was acknowledged defines it (e.g. ``image_files`` in watch mode);
        the default does nothing."""

    def sent_before(self, stream: str) -> Iterable[int]:
        """After a restart: the ids of ``stream`` that a predecessor process sent and had
        acknowledged, which this one does not send again; the runtime counts them as issued,
        so they are not reported missing. Asked once per stream, at its first message.
        Default: none."""
        return ()
