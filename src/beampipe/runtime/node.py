"""The loop inside one node process: receive -> process -> send, and the stream lifecycle.

A node process is started by a launcher (:mod:`beampipe.manager`) with the address of the
launcher's control channel. It says hello, receives the pipeline, builds its worker, binds its
output ports, reports their endpoints, connects its inputs to the upstream endpoints it is given,
and runs until every upstream peer has finished (a worker) or its generator is exhausted (a
source). Then it tells its downstream peers it has finished, waits until they confirm, and reports
``done``.

Stream lifecycle: a stream opens at the first :class:`StreamStart` or message of it that arrives;
:meth:`Worker.on_stream_start` is called and the start marker is forwarded. It ends when every
input pipe has delivered its :class:`EndOfStream` (or finished): :meth:`Worker.on_stream_end` is
called, its results are sent, and the end marker is forwarded.

Fail fast: an exception in a worker hook is reported to the launcher with node, stream, message id
and traceback, and the process exits with status 1. A source whose ``generate`` raises (and that is
not restarted) first ends its open streams and waits until everything it sent is acknowledged
downstream, as a drain does, so nothing it produced is lost; its report says ``drained``.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from beampipe.config import NodeSpec, Pipeline
from beampipe.message import EndOfStream, Event, Item, Message, StreamStart, WireError, encode
from beampipe.message.key import compile_key
from beampipe.runtime import deadletter
from beampipe.runtime.acks import Origin, Receipt, Seen, lineage
from beampipe.runtime.control import ControlClient
from beampipe.runtime.events import EventBuilder, Formed
from beampipe.runtime.faults import Faults, faults_for
from beampipe.runtime.gaps import GapDetector
from beampipe.runtime.metrics import NodeMetrics
from beampipe.runtime.notes import NoteLog
from beampipe.runtime.ordering import Reorder
from beampipe.runtime.tap import Tap
from beampipe.transport import InputChannel, OutputPort, Route
from beampipe.transport.address import advertised
from beampipe.worker import Output, Source, TransientError, Worker, by_port

PROGRESS_INTERVAL = 0.5
"""Seconds between progress reports to the launcher."""
RECEIVE_BATCH = 64
"""Items taken from one ready input before polling all sockets again ..."""
RECEIVE_TIME = 0.01
"""... or seconds spent on them: a slow worker (or sink) still sends its acknowledgements and
checkpoints in time, so that its upstream node does not retain more than its credit window
(a sink taking 0.1 s per message once acknowledged 64 messages at a time, and a 4 MiB-frame
worker before it held 64 frames instead of 16)."""
SERVICE_EVERY = 64
"""A source services its sockets (credit, stop) at least every this many items."""
CHECKPOINT_EVERY = 256
"""A sink checkpoints (:meth:`Worker.checkpoint`) at least every this many messages, or half
its input credit in bytes (so that what its upstream retains for it stays near one window) ..."""
CHECKPOINT_INTERVAL = 0.05
"""... and at most this many seconds after the oldest message not yet checkpointed."""
FAST_CALL = 5e-5
"""Seconds: what a worker's ``process`` returns within this time, while the node has more
input at hand, may wait in an output batch (small messages only, see
:mod:`beampipe.transport.zeromq`) ..."""
BATCH_DELAY = 0.001
"""... for at most this many seconds plus one such call: the batches are sent when this time
has passed since they were last sent, before the node waits for anything, and when full."""


class Stopped(Exception):
    """The launcher asked this node to stop, or the launcher is gone."""


class NodeFailure(Exception):
    """A worker hook raised; carries where it happened."""

    def __init__(self, stream: str | None, msg_id: int | None, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.stream = stream
        self.msg_id = msg_id
        self.traceback = "".join(traceback.format_exception(exc))


@dataclass
class StreamState:
    """Per-stream bookkeeping of one node."""

    ended: set[int] = field(default_factory=set)
    """Indices of the input pipes that delivered the end-of-stream marker."""
    messages: int = 0
    t_first: float = 0.0
    t_last: float = 0.0
    end: EndOfStream | None = None


class NodeRuntime:
    """Runs one replica of one node. See the module docstring for the protocol."""

    def __init__(
        self, control_endpoint: str, node: str, replica: int, incarnation: int = 0
    ) -> None:
        self.node = node
        self.replica = replica
        self.incarnation = incarnation
        """How often this replica was restarted before this process."""
        self.ctx = zmq.Context()
        self.control = ControlClient(self.ctx, control_endpoint, node, replica)
        self.parent = os.getppid()
        self.worker: Worker | None = None
        self.outputs: dict[str, OutputPort] = {}
        self.inputs: list[InputChannel] = []
        self.streams: dict[str, StreamState] = {}
        self.derived: dict[str, int] = {}
        self.spec: NodeSpec | None = None
        self.dead_letter = ""
        self.faults = Faults()
        self.sink = False
        """No output ports: inputs are acknowledged after :meth:`Worker.checkpoint`."""
        self._origin: Origin | None = None
        """The inputs of the worker call under way: what results sent now are held for."""
        self._unsaved: list[Origin] = []
        """A sink's processed inputs that wait for the next checkpoint."""
        self._unsaved_since = 0.0
        self._unsaved_bytes = 0
        self.snapshots: Path | None = None
        """Where a stateful worker's snapshots go (:meth:`beampipe.Worker.snapshot`)."""
        self._covered: list[int] = []
        """Lineages of the messages a stateful worker processed since its last snapshot."""
        self._skip: set[int] = set()
        """After a restore: lineages of messages the snapshot holds already, which may come
        again if their acknowledgement was lost with the process."""
        self.seen: dict[tuple[str, str], Seen] = {}
        """A sink's recent lineages per (upstream node, input port): to drop duplicates."""
        self.closed: set[str] = set()
        """Streams that ended here."""
        self.pending_ends: dict[str, tuple[set[int], EndOfStream]] = {}
        """Streams not (yet) open here that some input pipes ended: the pipes, and the end.
        A pipe to a replica added while running gets the ends of streams it never saw."""
        self.window = self.window_bytes = 0
        """Credit of each input pipe (from ``setup``)."""
        self._index: dict[InputChannel, int] = {}
        self._gone: list[int] = []
        """Input pipes from upstream replicas that died for good, not yet accounted for."""
        self._failed: NodeFailure | None = None
        """A source's ``generate`` raised: reported once what it sent is drained."""
        self._result_replica = replica
        """The replica number in the lineage of results: 0 unless the node is fed by
        broadcast, so that a message processed again by another replica (after one died)
        gives a result of the same lineage, which a sink then drops as a duplicate."""
        self.draining = False
        """A source was asked to end its streams and finish (``drain``)."""
        self.reorders: dict[str, Reorder] = {}
        """The reorder buffer of each ordered input port."""
        self.events: EventBuilder | None = None
        """Event formation, for a worker with ``events = True``."""
        """Streams of the worker's own that are open downstream: ``{stream: last id sent}``."""
        self.poller = zmq.Poller()
        """Control, output and input sockets."""
        self.out_poller = zmq.Poller()
        """Control and output sockets only: waiting for credit must not wake up for input."""
        self.tap: Tap | None = None
        """The side channel for viewers (:mod:`beampipe.runtime.tap`)."""
        self.metrics = NodeMetrics()
        self.notes = NoteLog()
        """Warnings, drops and non-finite results of this node (:mod:`beampipe.runtime.notes`)."""
        self.check_finite = True
        self.upstream_notes: dict[str, dict[tuple[str, str], int]] = {}
        """Per stream, what upstream nodes noted while handling it (the ``warnings`` of the
        end markers of its input pipes): ``{(node, text): count}``."""
        self._more_input = False
        """A worker is handling input it has already received: more is at hand."""
        self._batchable = False
        """What is sent now may wait in an output batch (see :data:`FAST_CALL`)."""
        self._flushed = 0.0
        self._last_progress = 0.0
        self._progress_dirty = False

    # -- setup ---------------------------------------------------------------------------------

    def _await(self, kind: str) -> dict[str, Any]:
        while True:
            msg = self.control.recv(500)
            if msg is None:
                self._check_parent()
                continue
            if msg["t"] == "stop":
                raise Stopped()
            if msg["t"] == "drain":  # asked before it started: a source ends at once
                self.draining = True
            if msg["t"] == kind:
                return msg

    def _setup(self) -> None:
        self.notes.install()
        self.control.send(
            "hello",
            node=self.node,
            replica=self.replica,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        setup = self._await("setup")
        pipeline = Pipeline.from_dict(setup["pipeline"])
        cls = pipeline.node_class(self.node)
        self.worker = self._call(None, None, cls, pipeline.node_params(self.node), self.node)
        self.worker.replica = self.replica
        self.worker._drop = self._dead_letter
        self.worker._stream_warnings = {}
        self.worker.restarts = self.incarnation
        for port in dict.fromkeys(c.source_port for c in pipeline.outputs_of(self.node)):
            routes = [
                Route(
                    f"{c.target}.{c.target_port}",
                    pipeline.nodes[c.target].replicas,
                    c.routing,
                    compile_key(c.key) if c.key else None,
                )
                for c in pipeline.outputs_of(self.node)
                if c.source_port == port
            ]
            address = setup["bind"].format(name=f"{self.node}-{self.replica}-{port}")
            out = OutputPort.bind(self.ctx, port, address, routes)
            out.on_reject = _log
            self.outputs[port] = out
            self.poller.register(out.socket, zmq.POLLIN)
            self.out_poller.register(out.socket, zmq.POLLIN)
        if self.outputs:
            self.tap = Tap(self.ctx, setup["bind"].format(name=f"{self.node}-{self.replica}-tap"))
            self.poller.register(self.tap.socket, zmq.POLLIN)
            self.out_poller.register(self.tap.socket, zmq.POLLIN)
        self.control.send(
            "bound",
            endpoints={p: advertised(o.endpoint) for p, o in self.outputs.items()},
            tap=advertised(self.tap.endpoint) if self.tap is not None else None,
        )
        self.window, self.window_bytes = setup["window"], setup["window_bytes"]
        connect = self._await("connect")
        for spec in connect["inputs"]:
            self._add_input(spec)
        spec = self.spec = pipeline.nodes[self.node]
        broadcast = any(c.routing == "broadcast" for c in pipeline.inputs_of(self.node))
        self._result_replica = self.replica if broadcast else 0
        self.dead_letter = pipeline.dead_letter
        self.check_finite = spec.check_finite
        self.faults = faults_for(self.node, self.replica, self.incarnation)
        self.sink = not self.outputs and not isinstance(self.worker, Source)
        if type(self.worker).snapshot is not Worker.snapshot and setup.get("state_dir"):
            self.snapshots = Path(setup["state_dir"]) / f"{self.node}.{self.replica}.pickle"
            if self.incarnation and self.snapshots.exists():
                state = pickle.loads(self.snapshots.read_bytes())
                self._call(None, None, self.worker.restore, state["worker"])
                for stream in state["open"]:  # open already, here and downstream: no hooks
                    self.streams[stream] = StreamState()
                self.closed.update(state["closed"])
                self._skip = set(state["covered"])
        for port in dict.fromkeys(ch.port for ch in self.inputs):
            if spec.is_ordered(port):
                pipes = [i for i, ch in enumerate(self.inputs) if ch.port == port]
                self.reorders[port] = Reorder(pipes, spec.reorder_buffer)
        if cls.events:
            options = spec.events or {}
            self.events = EventBuilder(
                list(dict.fromkeys(ch.port for ch in self.inputs)),
                options.get("timeout", 5.0),
                options.get("incomplete", "deliver"),
            )
        self.poller.register(self.control.socket, zmq.POLLIN)
        self.out_poller.register(self.control.socket, zmq.POLLIN)

    def _add_input(self, spec: dict[str, Any]) -> InputChannel:
        """Connect an input pipe: ``spec`` is ``{port, upstream, endpoint}``."""
        channel = InputChannel.connect(
            self.ctx,
            port=spec["port"],
            target=f"{self.node}.{spec['port']}",
            replica=self.replica,
            upstream=spec["upstream"],
            endpoint=spec["endpoint"],
            window=self.window,
            byte_window=self.window_bytes,
        )
        self._index[channel] = len(self.inputs)
        self.inputs.append(channel)
        self.poller.register(channel.socket, zmq.POLLIN)
        return channel

    # -- control and outputs -------------------------------------------------------------------

    def _check_parent(self) -> None:
        if os.getppid() != self.parent:
            raise Stopped()

    def _service(self, timeout_ms: int, inputs: bool) -> list[InputChannel]:
        """Send what output batches hold, poll once: handle control and output-port frames;
        return input channels with data."""
        self._flush_outputs()
        if inputs and any(ch.pending for ch in self.inputs):
            timeout_ms = 0
        tap = self.tap
        if tap is not None and tap.next_flush is not None:
            wait = math.ceil(1000 * (tap.next_flush - time.monotonic()))
            timeout_ms = max(0, min(timeout_ms, wait))
        events = dict((self.poller if inputs else self.out_poller).poll(timeout_ms))
        if not events:
            self._check_parent()
        ready = []
        if tap is not None:
            if tap.socket in events:
                tap.handle()
            tap.flush()
        if self.control.socket in events:
            while (msg := self.control.recv(0)) is not None:
                self._on_control(msg)
        for out in self.outputs.values():
            if out.socket in events:
                while out.socket.poll(0):
                    out.handle(out.socket.recv_multipart())
        if inputs:
            ready = [ch for ch in self.inputs if ch.socket in events or ch.pending]
        if self.sink and self._checkpoint_due():
            self._checkpoint()
        for channel in self.inputs:
            channel.flush_acks()
        self._report_progress()
        return ready

    def _flush_outputs(self) -> None:
        for out in self.outputs.values():
            out.flush()
        self._flushed = time.monotonic()

    def _on_control(self, msg: dict[str, Any]) -> None:
        """A message from the launcher while running."""
        kind = msg["t"]
        if kind == "stop":
            raise Stopped()
        if kind == "drain":
            self.draining = True
        if kind == "peer_lost":
            for out in self.outputs.values():
                out.lost(msg["target"], msg["replica"])
        elif kind == "retire":
            for out in self.outputs.values():
                out.retire(msg["target"], msg["replica"])
        elif kind == "peer_gone":
            for out in self.outputs.values():
                out.forget(msg["target"], msg["replica"])
        elif kind == "upstream_gone":
            for channel in self.inputs:
                if channel.upstream.startswith(msg["upstream"]) and not channel.finished:
                    # What it sent and we did not process comes again through another
                    # replica: its sender did not get our acknowledgement for it.
                    self.poller.unregister(channel.socket)
                    channel.finished = True
                    self._gone.append(self._index[channel])
        elif kind == "add_inputs":
            for spec in msg["inputs"]:
                self._add_input(spec)
            self.control.send("inputs_added")
        elif kind == "reconnect":
            for channel in self.inputs:
                if channel.upstream == msg["upstream"]:
                    self.poller.unregister(channel.socket)
                    channel.reconnect(self.ctx, msg["endpoint"])
                    self.poller.register(channel.socket, zmq.POLLIN)

    def _send(self, port: str, item: Item) -> None:
        out = self.outputs.get(port)
        if out is None:
            return
        if self.check_finite and isinstance(item, Message):
            self.metrics.nonfinite += self.notes.count_nonfinite(item.data, item.stream, item.id)
        frames = encode(item)
        if self.faults.corrupt is not None and isinstance(item, Message):
            frames = self.faults.corrupt.apply(frames)
        while not out.try_send(item, frames, self._origin, self._batchable):
            self._service(1000, inputs=False)
        if self.tap is not None:
            self.tap.offer(port, item, frames)

    def _broadcast(self, item: StreamStart | EndOfStream) -> None:
        for port in self.outputs:
            self._send(port, item)

    def _emit(self, result: Output, origin: Message | Event | None, base: int) -> None:
        """Send what a worker hook returned; fill stream/id/timestamps from ``origin``. The
        ``k``-th result gets the lineage ``lineage(base, r, k)``, ``base`` being the lineage
        of what the hook was called for and ``r`` the replica if the node is fed by broadcast
        (one distinct result per replica), else 0 (the same result whichever replica made it).

        A message of a stream this node has not opened downstream (a stream of the worker's
        own, e.g. a reducer's ``"merged"``) opens it first; a returned StreamStart or
        EndOfStream opens or ends such a stream explicitly.
        """
        if result is None:
            return
        assert self.worker is not None
        if (
            isinstance(result, Message)
            and origin is not None
            and self.worker.outputs
            and (not result.stream or result.stream == origin.stream)
        ):  # the common case, without the general bookkeeping below
            _inherit(result, origin)
            result.lineage = lineage(base, self._result_replica, 0)
            result.stamp(self.node)
            self._send(self.worker.outputs[0], result)
            return
        k = 0
        for port, items in by_port(result, self.worker.outputs).items():
            for item in items:
                if isinstance(item, StreamStart):
                    if item.stream not in self.derived and item.stream not in self.streams:
                        self.derived[item.stream] = 0
                        self._broadcast(item)
                    continue
                if isinstance(item, EndOfStream):
                    if self.derived.pop(item.stream, None) is not None:
                        self._broadcast(item)
                    continue
                if origin is not None:
                    _inherit(item, origin)
                if item.stream not in self.streams:
                    if item.stream not in self.derived:
                        self.derived[item.stream] = 0
                        self._broadcast(StreamStart(item.stream, {}))
                    self.derived[item.stream] = max(self.derived[item.stream], item.id)
                item.lineage = lineage(base, self._result_replica, k)
                k += 1
                item.stamp(self.node)
                self._send(port, item)

    def _end_derived(self) -> None:
        """End the streams of the worker's own that it did not end itself."""
        for stream, last_id in list(self.derived.items()):
            self._broadcast(EndOfStream(stream, last_id))
        self.derived.clear()

    def _report_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        dirty = self._progress_dirty or self.notes.changed
        if dirty and (force or now - self._last_progress >= PROGRESS_INTERVAL):
            counts = {name: s.messages for name, s in self.streams.items()}
            self.control.send("progress", streams=counts, metrics=self._metrics().snapshot())
            self._last_progress = now
            self._progress_dirty = False

    def _metrics(self) -> NodeMetrics:
        m = self.metrics
        m.messages_out = sum(o.sent for o in self.outputs.values())
        m.bytes_out = sum(o.sent_bytes for o in self.outputs.values())
        m.cpu_time = time.process_time()
        m.in_flight = sum(o.in_flight for o in self.outputs.values())
        m.retained = sum(o.retained for o in self.outputs.values())
        m.resent = sum(o.resent for o in self.outputs.values())
        m.rejected_frames = sum(o.rejected for o in self.outputs.values())
        m.in_flight_bytes = sum(o.in_flight_bytes for o in self.outputs.values())
        m.peak_in_flight = sum(o.peak_in_flight for o in self.outputs.values())
        m.peak_in_flight_bytes = sum(o.peak_in_flight_bytes for o in self.outputs.values())
        m.warnings = self.notes.warnings
        m.notes = self.notes.snapshot()
        m.held = sum(r.held for r in self.reorders.values())
        m.out_of_order = sum(r.out_of_order for r in self.reorders.values())
        if self.events is not None:
            m.held += self.events.held
            m.incomplete_events = self.events.incomplete
            m.dropped_events = self.events.dropped
        return m

    # -- stream lifecycle ----------------------------------------------------------------------

    def _call(self, stream: str | None, msg_id: int | None, hook: Any, *args: Any) -> Any:
        """``hook(*args)``; an exception becomes a :class:`NodeFailure` at ``stream``/``msg_id``
        with a traceback that starts in the worker's code. What the hook warns is noted at
        ``stream``/``msg_id``."""
        self.notes.stream, self.notes.msg_id = stream, msg_id
        try:
            return hook(*args)
        except Exception as exc:
            user_frames = exc.__traceback__.tb_next if exc.__traceback__ else None
            raise NodeFailure(stream, msg_id, exc.with_traceback(user_frames)) from exc

    def _open(self, stream: str, metadata: dict[str, Any] | None = None) -> StreamState:
        state = self.streams.get(stream)
        if state is None:
            assert self.worker is not None
            metadata = {} if metadata is None else metadata
            state = self.streams[stream] = StreamState()
            pending = self.pending_ends.pop(stream, None)
            if pending is not None:
                state.ended, state.end = pending
            result = self._call(stream, None, self.worker.on_stream_start, stream, metadata)
            self._broadcast(StreamStart(stream, metadata))
            self._emit(result, None, lineage("start", stream, self.replica))
        return state

    def _close(self, stream: str, state: StreamState) -> None:
        assert self.worker is not None
        self._flush_outputs()  # results held for a batch do not wait for on_stream_end
        if self.events is not None:
            for formed in self.events.flush(stream):
                self._form(formed)
        noted = self._noted(EndOfStream(stream, 0), forget=False)
        self.worker._stream_warnings[stream] = _warning_list(noted.warnings)
        try:
            result = self._call(stream, None, self.worker.on_stream_end, stream)
        finally:
            del self.worker._stream_warnings[stream]
        self._emit(result, None, lineage("end", stream, self.replica))
        end = self._noted(state.end or EndOfStream(stream, state.messages))
        self._broadcast(end)
        del self.streams[stream]
        self.closed.add(stream)
        if self.sink or self.snapshots is not None:
            self._checkpoint()
        self._report_progress(force=True)
        self.control.send(
            "stream_end",
            stream=stream,
            messages=state.messages,
            t_first=state.t_first,
            t_last=state.t_last,
        )

    def _noted(self, end: EndOfStream, forget: bool = True) -> EndOfStream:
        """``end`` carrying what the nodes upstream and this one noted while handling its
        stream (forgotten here if ``forget``)."""
        stream = end.stream
        if forget:
            upstream, own = self.upstream_notes.pop(stream, {}), self.notes.end_stream(stream)
        else:
            upstream, own = self.upstream_notes.get(stream, {}), self.notes.streams.get(stream, {})
        merged = dict(upstream)
        for text, count in own.values():
            merged[self.node, text] = merged.get((self.node, text), 0) + count
        warnings = [[node, text, count] for (node, text), count in merged.items()]
        return EndOfStream(stream, end.last_id, end.next_stream, warnings)

    def _count(self, state: StreamState, t_start: float) -> None:
        """One message of the stream was handled, starting at unix time ``t_start``."""
        state.messages += 1
        state.t_first = state.t_first or t_start
        state.t_last = time.time()
        self._progress_dirty = True

    def _on_item(self, index: int, channel: InputChannel, item: Item) -> None:
        receipt = Receipt(channel)
        if not isinstance(item, Message):
            origin = Origin([receipt])
            previous, self._origin = self._origin, origin
            try:
                self._on_marker(index, channel, item)
            finally:
                self._origin = previous
                if self.snapshots is None:
                    origin.done()
                else:  # acknowledged with the next snapshot, which holds the stream's state
                    self._hold(origin)
            return
        metrics = self.metrics
        metrics.messages_in += 1
        metrics.bytes_in += receipt.size
        if self._skip and item.lineage in self._skip:  # in the restored snapshot already
            self._skip.discard(item.lineage)
            metrics.duplicates += 1
            receipt.discard()
            return
        if self.sink and item.lineage:
            key = (channel.upstream.partition("#")[0], channel.port)
            seen = self.seen.get(key) or self.seen.setdefault(key, Seen())
            if not seen.add(item.lineage):
                metrics.duplicates += 1
                self._progress_dirty = True
                receipt.discard()
                return
        if item.stream in self.closed:
            metrics.late += 1
            self._progress_dirty = True
        self._open(item.stream)
        item.port = channel.port
        if item.timestamps:
            metrics.latency.add(time.time() - item.timestamps[0][1])
        reorder = self.reorders.get(channel.port)
        if reorder is None:
            self._accept(receipt, item)
        else:
            if reorder.is_strict(item.stream):
                receipt.credit()
            for _, (r, msg) in reorder.push(index, item.stream, item.id, (receipt, item)):
                self._accept(r, msg)

    def _on_marker(
        self, index: int, channel: InputChannel, item: StreamStart | EndOfStream
    ) -> None:
        if item.stream in self.closed:
            return  # sent again by a restarted upstream: the stream is over here
        if isinstance(item, StreamStart):
            self._open(item.stream, item.metadata)
            return
        if item.warnings:
            notes = self.upstream_notes.setdefault(item.stream, {})
            for node, text, count in item.warnings:
                notes[node, text] = notes.get((node, text), 0) + count
        self._end_pipe(index, channel.port, item.stream)
        state = self.streams.get(item.stream)
        if state is None:  # not started here (yet): count the end; the start may follow
            ended, _ = self.pending_ends.setdefault(item.stream, (set(), item))
            ended.add(index)
            self._end_pending(item.stream)
            return
        state.end = state.end or item
        state.ended.add(index)
        if self._all_ended(state.ended):
            self._close(item.stream, state)

    def _all_ended(self, ended: set[int]) -> bool:
        """Every input pipe ended the stream, or finished (a pipe from a replica removed
        while running ends only the streams it saw)."""
        return all(i in ended or ch.finished for i, ch in enumerate(self.inputs))

    def _end_pending(self, stream: str) -> None:
        """A stream that never started here ended on every pipe: pass its end on."""
        ended, end = self.pending_ends[stream]
        if self._all_ended(ended):
            del self.pending_ends[stream]
            self._broadcast(self._noted(end))
            self.closed.add(stream)

    def _pipe_finished(self, index: int) -> None:
        """Input pipe ``index`` finished: the streams that waited only for it end."""
        port = self.inputs[index].port
        for stream, state in list(self.streams.items()):
            self._end_pipe(index, port, stream)
            if self._all_ended(state.ended):
                self._close(stream, state)
        for stream in list(self.pending_ends):
            self._end_pending(stream)

    def _corrupt(self, channel: InputChannel, exc: WireError) -> None:
        """A frame sequence from ``channel`` could not be decoded: count it, record it in the
        dead-letter file, give its credit back and go on."""
        self.metrics.corrupt_frames += 1
        self._progress_dirty = True
        deadletter.record_corrupt(
            self.dead_letter, self.node, self.replica, channel.upstream, channel.last_size, exc
        )
        Receipt(channel).discard()

    def _end_pipe(self, index: int, port: str, stream: str) -> None:
        """Pipe ``index`` (of input ``port``) ended ``stream``: release what its reorder buffer
        may now let go."""
        reorder = self.reorders.get(port)
        if reorder is not None:
            for _, (receipt, msg) in reorder.end(index, stream):
                self._accept(receipt, msg)

    def _accept(self, receipt: Receipt, msg: Message) -> None:
        """``msg`` is next in line: process it, or add it to its event."""
        if self.events is None:
            self._process(msg, [receipt])
            return
        for formed in self.events.add(receipt.channel.port, msg, receipt, time.monotonic()):
            self._form(formed)

    def _process_with_policy(self, item: Message | Event) -> Output:
        """``worker.process(item)``, retried after a TransientError up to ``retries`` times;
        a failure then stops the node (``fail_fast``) or goes to the dead-letter file
        (``skip``, and the result is nothing)."""
        assert self.worker is not None and self.spec is not None
        spec = self.spec
        attempt = 0
        while True:
            try:
                return self._call(item.stream, item.id, self.worker.process, item)
            except NodeFailure as failure:
                exc = failure.__cause__
                if isinstance(exc, TransientError) and attempt < spec.retries:
                    attempt += 1
                    self.metrics.retries += 1
                    self._pause(spec.retry_delay)
                    continue
                if spec.on_error != "skip" or exc is None:
                    raise
                deadletter.record(self.dead_letter, self.node, self.replica, item, exc)
                self.notes.add(
                    f"skipped:{type(exc).__name__}",
                    f"messages skipped after {type(exc).__name__}: {exc} (on_error: skip)",
                )
                self.metrics.skipped += 1
                self._progress_dirty = True
                return None

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` while answering control and credit frames (not reading inputs)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._service(max(1, int(left * 1000)), inputs=False)

    def _form(self, formed: Formed) -> None:
        if formed.drop:
            for receipt in formed.tokens:
                receipt.discard()
        else:
            self._process(formed.event, formed.tokens)

    def _process(self, item: Message | Event, receipts: list[Receipt]) -> None:
        """Call the worker on a message or event; then return the credit of its parts. The
        parts are acknowledged when the results are (a sink's at its next checkpoint)."""
        assert self.worker is not None
        state = self.streams.get(item.stream) or self._open(item.stream)
        if isinstance(item, Message):
            base = item.lineage
        else:
            base = lineage(*(item.messages[p].lineage for p in sorted(item.messages)))
        if self._more_input and time.monotonic() - self._flushed >= BATCH_DELAY:
            self._flush_outputs()
        origin = Origin(receipts)
        previous, self._origin = self._origin, origin
        t_start = time.time()
        try:
            result = self._process_with_policy(item)
            elapsed = time.time() - t_start
            self.metrics.process_time.add(elapsed)
            self._batchable = self._more_input and elapsed < FAST_CALL
            self._emit(result, item, base)
        finally:
            self._origin = previous
        origin.credit()
        if self.sink:
            self._hold(origin)
        elif self.snapshots is not None:
            self._hold(origin)
            if isinstance(item, Message):
                self._covered.append(item.lineage)
            else:
                self._covered.extend(m.lineage for m in item.messages.values())
        else:
            origin.done()
        self._count(state, t_start)
        if self.faults.kill_after and self.metrics.messages_in >= self.faults.kill_after:
            self.faults.kill()

    def _checkpoint_due(self) -> bool:
        return bool(self._unsaved) and (
            len(self._unsaved) >= CHECKPOINT_EVERY
            or self._unsaved_bytes >= self.window_bytes // 2
            or time.monotonic() - self._unsaved_since >= CHECKPOINT_INTERVAL
        )

    def _hold(self, origin: Origin) -> None:
        """Acknowledge ``origin``'s inputs after the next checkpoint."""
        if not self._unsaved:
            self._unsaved_since = time.monotonic()
        self._unsaved.append(origin)
        self._unsaved_bytes += sum(r.size for r in origin.receipts)

    def _checkpoint(self) -> None:
        """A sink makes what it processed durable, a stateful worker saves its snapshot; then
        their inputs are acknowledged."""
        assert self.worker is not None
        if self.snapshots is not None:
            # Take no input until the results of what was processed are acknowledged
            # downstream: the snapshot then holds exactly the messages it acknowledges, whose
            # results are safe, so after a restart they may be skipped if they come again.
            while any(origin.outstanding for origin in self._unsaved):
                self._service(100, inputs=False)
            state = pickle.dumps(
                {
                    "worker": self._call(None, None, self.worker.snapshot),
                    "open": list(self.streams),
                    "closed": list(self.closed),
                    "covered": self._covered,
                }
            )
            self._covered = []
            partial = self.snapshots.with_suffix(".partial")
            partial.write_bytes(state)
            partial.replace(self.snapshots)  # atomic: a kill leaves the old or the new one
        self._call(None, None, self.worker.checkpoint)
        unsaved, self._unsaved = self._unsaved, []
        self._unsaved_bytes = 0
        for origin in unsaved:
            origin.done()

    # -- main loops ----------------------------------------------------------------------------

    def _run_worker(self) -> None:
        index = self._index
        while not all(ch.finished for ch in self.inputs):
            timeout = 1000
            if self.events is not None and self.events.next_deadline is not None:
                wait = self.events.next_deadline - time.monotonic()
                timeout = max(0, min(timeout, math.ceil(wait * 1000)))
            if self._unsaved:
                wait = self._unsaved_since + CHECKPOINT_INTERVAL - time.monotonic()
                timeout = max(0, min(timeout, math.ceil(wait * 1000)))
            ready = self._service(timeout, inputs=True)
            if self.snapshots is not None and self._checkpoint_due():
                self._checkpoint()
            while self._gone:
                gone = self._gone.pop()
                reorder = self.reorders.get(self.inputs[gone].port)
                if reorder is not None:
                    for receipt, _ in reorder.pipe_gone(gone):
                        receipt.credit()
                self._pipe_finished(gone)
            if self.events is not None:
                for formed in self.events.expire(time.monotonic()):
                    self._form(formed)
            self._more_input = bool(self.outputs)
            for channel in ready:
                due = time.monotonic() + RECEIVE_TIME
                for _ in range(RECEIVE_BATCH):
                    try:
                        item = channel.receive(block=False)
                    except zmq.Again:
                        break
                    except WireError as exc:
                        self._corrupt(channel, exc)
                        continue
                    if item is None:
                        self._pipe_finished(index[channel])
                        break
                    self._on_item(index[channel], channel, item)
                    if time.monotonic() >= due:
                        break
            self._more_input = self._batchable = False
        for stream, state in list(self.streams.items()):
            for i, channel in enumerate(self.inputs):
                if i not in state.ended:
                    self._end_pipe(i, channel.port, stream)
            state.ended = set(range(len(self.inputs)))
            self._close(stream, state)
        assert self.worker is not None
        base = lineage("finish", self.replica)
        self._emit(self._call(None, None, self.worker.on_finish), None, base)
        self._end_derived()
        if self.sink or self.snapshots is not None:
            self._checkpoint()
        for channel in self.inputs:
            channel.flush_acks()

    def _run_source(self, source: Source) -> None:
        """Send what the source generates; report the ids it skips (checked after each item:
        a generator that blocks delays the report until it yields again).

        A list yielded is a *burst*: items the source has at hand. They are all sent (a drain
        asked for meanwhile stops the source after the burst), small ones in batches
        (:mod:`beampipe.transport.zeromq`), which go out at the end of the burst at the
        latest."""
        assert self.spec is not None
        default = source.outputs[0] if source.outputs else ""
        generator = iter(self._call(None, None, source.generate))
        gaps = GapDetector(self.spec.gap_timeout)
        unserviced = 0
        serviced = time.monotonic()
        while True:
            now = time.monotonic()
            if unserviced >= SERVICE_EVERY or now - serviced > PROGRESS_INTERVAL / 5:
                self._service(0, inputs=False)
                serviced, unserviced = now, 0
            if self.draining:
                close = getattr(generator, "close", None)  # a generator's cleanup runs
                if close is not None:
                    self._call(None, None, close)
                for stream, state in list(self.streams.items()):
                    self._close(stream, state)
                break
            try:
                got = next(generator)
            except StopIteration:
                break
            except Exception as exc:
                if self.spec.restart != "never":  # restarted: what it sent is kept upstream
                    raise NodeFailure(None, None, exc) from exc
                self._failed = NodeFailure(None, None, exc)
                for stream, state in list(self.streams.items()):
                    self._close(stream, state)
                break
            if got is None:  # the source is waiting for data: a chance to drain or stop
                self._service(0, inputs=False)
                serviced, unserviced = time.monotonic(), 0
                continue
            if type(got) is list:
                self._batchable = True
                try:
                    for item in got:
                        self._source_item(item, default, gaps, now)
                finally:
                    self._batchable = False
                self._flush_outputs()
                unserviced += len(got)
            else:
                self._source_item(got, default, gaps, now)
                unserviced += 1
            deadline = gaps.next_deadline
            if deadline is not None and now >= deadline:
                why = f"not issued within gap_timeout = {gaps.timeout} s of a later id"
                for stream, msg_id in gaps.expired(now):
                    self._missing(stream, msg_id, why)

    def _source_item(self, item: Item, default: str, gaps: GapDetector, now: float) -> None:
        """Send one item a source generated at monotonic time ``now``."""
        if isinstance(item, StreamStart):
            self._open(item.stream, item.metadata)
        elif isinstance(item, Message):
            self.notes.stream, self.notes.msg_id = item.stream, item.id
            state = self._open(item.stream)
            if not gaps.issued(item.stream, item.id, now):
                self.metrics.late += 1
            item.lineage = lineage(self.node, item.stream, item.id)
            item.stamp(self.node)
            self._send(item.port or default, item)
            self._count(state, item.timestamps[0][1])
        elif isinstance(item, EndOfStream):
            state = self._open(item.stream)
            state.end = item
            why = f"the stream ended with id {item.last_id} without it"
            for msg_id in gaps.end(item.stream, item.last_id):
                self._missing(item.stream, msg_id, why)
            self._close(item.stream, state)
        else:
            raise NodeFailure(
                None,
                None,
                TypeError(
                    f"generate() yielded a {type(item).__name__}: expected a Message, "
                    "StreamStart, EndOfStream, a list of them (a burst) or None"
                ),
            )

    def _dead_letter(self, item: Message | Event, reason: str | BaseException) -> None:
        """:meth:`beampipe.Worker.dead_letter`: count the input the worker dropped, note its
        reason, and record it in the dead-letter file."""
        self.metrics.dropped += 1
        self._progress_dirty = True
        kind = type(reason).__name__ if isinstance(reason, BaseException) else str(reason)[:60]
        text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else reason
        if self.notes.add(f"dropped:{kind}", f"inputs dropped: {text}", 1, (item.stream, item.id)):
            _log(f"{self.node}: dropped stream {item.stream!r} id {item.id}: {text}")
        deadletter.record(self.dead_letter, self.node, self.replica, item, reason)

    def _missing(self, stream: str, msg_id: int, why: str) -> None:
        self.metrics.missing += 1
        self._progress_dirty = True
        deadletter.record_missing(self.dead_letter, self.node, self.replica, stream, msg_id, why)

    def _finish_outputs(self) -> None:
        for out in self.outputs.values():
            while not out.connected or out.backlogged:
                self._service(1000, inputs=False)
            out.finish()
        while not all(out.drained for out in self.outputs.values()):
            self._service(1000, inputs=False)

    def run(self) -> int:
        """Run to completion; the process exit status (0 done, 1 failed, 2 stopped).

        The worker is closed before ``done`` is reported, so a sink's files are complete when
        the launcher hears that the node is done; an error in ``close`` fails the run.
        """
        status = 0
        try:
            self._setup()
            assert self.worker is not None
            if isinstance(self.worker, Source):
                self._run_source(self.worker)
            else:
                self._run_worker()
            self._finish_outputs()
            if self._failed is not None:
                self._report_progress(force=True)
                raise self._failed
            worker, self.worker = self.worker, None
            self._call(None, None, worker.close)
            self._report_progress(force=True)
            self.control.send(
                "done",
                sent={p: o.sent for p, o in self.outputs.items()},
                metrics=self._metrics().snapshot(),
            )
        except Stopped:
            status = 2
            self._report_progress(force=True)  # the launcher counts what was processed
        except Exception as exc:
            failure = exc if isinstance(exc, NodeFailure) else NodeFailure(None, None, exc)
            self._report_progress(force=True)
            self.control.send(
                "error",
                node=self.node,
                replica=self.replica,
                stream=failure.stream,
                id=failure.msg_id,
                error=str(failure),
                traceback=failure.traceback,
                drained=failure is self._failed,
            )
            status = 1
        finally:
            if self.worker is not None:
                try:
                    self.worker.close()
                except Exception:  # the run is already failing or stopping: log it only
                    traceback.print_exc()
            self.ctx.destroy(linger=2000)
        return status


def _inherit(msg: Message, origin: Message | Event) -> None:
    """Fill what a worker left empty in a result from the message (or event) it came from."""
    msg.stream = msg.stream or origin.stream
    msg.id = msg.id or origin.id
    if not msg.timestamps:
        msg.timestamps = list(origin.timestamps)


def _warning_list(warnings: list[list[Any]]) -> list[dict[str, Any]]:
    """``[[node, text, count], ...]`` as :meth:`beampipe.Worker.stream_warnings` returns it."""
    return [{"node": node, "text": text, "count": count} for node, text, count in warnings]


def _log(text: str) -> None:
    """A line in the node's log (its standard error, which the launcher keeps)."""
    print(text, file=sys.stderr, flush=True)
