"""The local launcher: one OS process per node replica on this machine, started and watched.

The launcher binds the control channel (:mod:`beampipe.runtime.control`), starts the node
processes, hands out addresses (every output port binds an address of the launcher's choosing:
an ``ipc://`` path in the run directory, or ``tcp://HOST:*`` with the port picked by the OS), tells
each node which upstream endpoints to connect to, and then watches: it relays progress to the
display, stops everything at the first error or when a process dies, and finishes when every node
reported ``done`` and exited.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import zmq

from beampipe.config import Pipeline
from beampipe.launch.command import NodeCommand
from beampipe.launch.placement import LocalPlacement, NodeProcess, Placement
from beampipe.runtime.control import identity, pack, unpack
from beampipe.runtime.metrics import NodeMetrics, merge

STOP_TIMEOUT = 5.0
"""Seconds a node gets to exit after ``stop`` before it is killed."""
DRAIN_TIMEOUT = 30.0
"""Seconds a pipeline gets to drain after the first SIGINT/SIGTERM before it is stopped."""
START_TIMEOUT = 300.0
"""Seconds a node process gets, from its start, to build its worker and bind its outputs."""


class RunObserver(Protocol):
    """What the launcher reports to (the terminal display, tests)."""

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None: ...
    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None: ...
    def failure(self, text: str) -> None: ...


@dataclass
class Replica:
    """One node process, as the launcher sees it."""

    node: str
    replica: int
    process: NodeProcess
    log: Path
    endpoints: dict[str, str] | None = None
    tap: str | None = None
    """Endpoint of the node's tap (:mod:`beampipe.runtime.tap`), once bound; None for a sink."""
    done: bool = False
    restarts: int = 0
    """Processes of this replica that died and were replaced."""
    started: float = field(default_factory=time.monotonic)
    """Monotonic time its process was started."""
    bound: bool = False
    """Its process has built its worker and bound its outputs."""
    restart_at: float | None = None
    """Monotonic time at which a dead process is started again."""
    last_error: str | None = None
    """The error its last process reported, if it failed."""
    drained: bool = False
    """It failed after everything it had sent was acknowledged downstream (a source whose
    ``generate`` raised): the others finish, then the run fails with its error."""
    host: str = ""
    """Host name its process reported (``hello``)."""
    pid: int | None = None
    """Process id on :attr:`host` its process reported."""
    retiring: bool = False
    """Being removed by :meth:`Launcher.scale`: finishing what it was sent."""
    joining: bool = False
    """Added by :meth:`Launcher.scale`: not yet connected to its upstream nodes."""
    awaiting: int = 0
    """Downstream replicas that have yet to connect to this joining replica."""
    rates: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Messages/s in and out, MB/s in and out, between its last two progress reports."""
    _last: tuple[float, NodeMetrics] | None = None

    @property
    def label(self) -> str:
        return f"node {self.node!r}" + (f" replica {self.replica}" if self.replica else "")


@dataclass
class RunResult:
    """How a run ended. ``exit_code`` is 0 on success."""

    exit_code: int
    wall_time: float
    errors: list[str] = field(default_factory=list)
    sent: dict[str, dict[str, int]] = field(default_factory=dict)
    """Messages sent per node (all replicas) and output port."""
    metrics: dict[str, NodeMetrics] = field(default_factory=dict)
    """Per node (replicas and restarted processes merged): the last metrics its processes
    reported."""


class Launcher:
    """Runs a pipeline in the foreground on this machine.

    Args:
        pipeline: the validated pipeline.
        observer: receives progress, stream ends and failures.
        transport: ``ipc`` (Unix domain sockets, the default) or ``tcp`` (loopback).
        window: credit per pipe, i.e. unprocessed messages a receiver may hold per upstream peer.
        window_bytes: the same in wire bytes (a single message larger than this still moves,
            one at a time).
        drain_timeout: seconds the pipeline gets to drain after the first SIGINT or SIGTERM.
        start_timeout: seconds a node process gets, from its start (or restart), to build its
            worker and bind its outputs; one that takes longer (stuck importing, waiting for a
            device) fails the run, naming it, with the end of its log.
        placement: where the node processes run (default: :class:`LocalPlacement`).
        rundir: the run directory (sockets, snapshots); kept if given, else a temporary one,
            deleted at the end of a successful run.
        logs: the folder for the node logs, kept; default ``rundir/logs``.

    The first SIGINT or SIGTERM *drains* the pipeline: the sources stop taking data and end
    their open streams, everything already sent is processed and written, and the processes
    exit as at the end of a run; the result has exit code 130 and names the signal. A second
    signal, or ``drain_timeout``, stops every process at once (sinks still close their files).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        observer: RunObserver,
        *,
        transport: Literal["ipc", "tcp"] = "ipc",
        window: int = 64,
        window_bytes: int = 64 << 20,
        drain_timeout: float = DRAIN_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
        placement: Placement | None = None,
        rundir: Path | None = None,
        logs: Path | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.observer = observer
        self.window = window
        self.window_bytes = window_bytes
        self.placement: Placement = placement or LocalPlacement(transport)
        self.keep_rundir = rundir is not None
        if rundir is None:
            rundir = Path(tempfile.mkdtemp(prefix=f"beampipe-{pipeline.name}-"))
        self.rundir = rundir
        self.logs = logs if logs is not None else rundir / "logs"
        """Where the node processes' logs go (``NODE.REPLICA[.RESTART].log``)."""
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted process takes over its id
        self.control_endpoint = ""
        """Where node processes connect (set by :meth:`run` once the placement started)."""
        self.watched: dict[zmq.Socket, Callable[[], None]] = {}
        self._wired = False
        """Every replica of the first start was connected."""
        self._adds: dict[bytes, list[Replica]] = {}
        """Per downstream replica: joining replicas it was told to connect to, in order."""
        self.replicas: dict[bytes, Replica] = {}
        self.errors: list[str] = []
        self.sent: dict[str, dict[str, int]] = {}
        self.metrics: dict[tuple[str, int], NodeMetrics] = {}
        self.past: dict[tuple[str, int], NodeMetrics] = {}
        """Metrics of replicas' processes that died, merged."""
        self.drain_timeout = drain_timeout
        self.start_timeout = start_timeout
        self._signalled = 0
        self._signals = 0
        self._reason = ""

    # -- processes -----------------------------------------------------------------------------

    def _start(self) -> bool:
        """Place the pipeline and start its processes; False if interrupted while placing."""
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.rundir / "state").mkdir(exist_ok=True)
        if not self._place():
            return False
        self.control.bind(self.placement.control_bind)
        bound = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.control_endpoint = self.placement.control_endpoint(bound)
        for name, spec in self.pipeline.nodes.items():
            for r in range(spec.replicas):
                self.replicas[identity(name, r)] = self._spawn(name, r, 0)
        return True

    def _place(self) -> bool:
        """``placement.start()``, which may wait long (a Slurm allocation pending in the
        queue), in a thread, while this thread answers the watched sockets, so that a
        supervisor's ``status`` and ``stop`` work meanwhile. A drain or signal meanwhile
        releases what the placement obtained (``placement.stop()``) and returns False.

        Raises:
            Exception: what ``placement.start()`` raised.
        """
        failure: list[BaseException] = []

        def start() -> None:
            try:
                self.placement.start(self.pipeline, self.rundir)
            except BaseException as exc:  # re-raised in the launcher's thread
                failure.append(exc)

        thread = threading.Thread(target=start, name="placement", daemon=True)
        thread.start()
        poller = zmq.Poller()
        for sock in self.watched:
            poller.register(sock, zmq.POLLIN)
        cancelled = False
        while thread.is_alive():
            if self.watched:
                for sock in dict(poller.poll(100)):
                    self.watched[sock]()
            else:
                thread.join(0.1)
            if self._signalled and not cancelled:
                cancelled = True
                self.placement.stop()  # e.g. cancel the pending allocation: start() returns
        thread.join()
        if cancelled:
            return False
        if failure:
            raise failure[0]
        return True

    def _spawn(self, name: str, r: int, incarnation: int) -> Replica:
        suffix = f".{incarnation}" if incarnation else ""
        log = self.logs / f"{name}.{r}{suffix}.log"
        # Worker modules next to the pipeline file are importable in every node process.
        pythonpath = [str(self.pipeline.base_dir), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p)}
        command = NodeCommand(sys.executable, self.control_endpoint, name, r, incarnation, env)
        proc = self.placement.spawn(command, log)
        return Replica(name, r, proc, log, restarts=incarnation)

    def _send(self, rep: Replica, kind: str, **fields: Any) -> None:
        self.control.send_multipart([identity(rep.node, rep.replica), pack(kind, **fields)])

    def _stop_all(self) -> None:
        for rep in self.replicas.values():
            if rep.process.poll() is None and not rep.bound:
                rep.process.kill()  # still starting: it has no data, and would not read "stop"
            elif rep.process.poll() is None:
                self._send(rep, "stop")
        deadline = time.monotonic() + STOP_TIMEOUT
        for rep in self.replicas.values():
            try:
                rep.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rep.process.kill()
                rep.process.wait()
        self._last_reports()

    def _last_reports(self) -> None:
        """Take the progress and stream ends the stopped processes sent last, so that a failed
        or interrupted run counts what was processed."""
        while self.control.poll(50):
            ident, *frames = self.control.recv_multipart()
            rep = self.replicas.get(ident)
            try:
                msg = unpack(frames[0])
            except Exception:  # not of the protocol: nothing to count
                continue
            if rep is not None and msg.get("t") in ("progress", "stream_end"):
                self._handle(rep, msg)

    def _where(self, rep: Replica) -> str:
        return self.placement.where(rep.node, rep.replica) or f"pid {rep.process.pid}"

    def _fail(self, text: str) -> None:
        self.errors.append(text)
        self.observer.failure(text)

    # -- wiring --------------------------------------------------------------------------------

    def replicas_of(self, node: str) -> list[Replica]:
        """The replicas of ``node`` the launcher runs now, by replica number (after a scaling
        or a replica that died for good the numbers may have gaps)."""
        return sorted((r for r in self.replicas.values() if r.node == node), key=_number)

    def _connect(self, rep: Replica) -> None:
        """Tell ``rep`` which upstream endpoints to connect to."""
        inputs = []
        for conn in self.pipeline.inputs_of(rep.node):
            for upstream in self.replicas_of(conn.source):
                if upstream.endpoints is None or upstream.joining:
                    continue  # a replica being added connects its downstream itself (_join)
                inputs.append(
                    {
                        "port": conn.target_port,
                        "upstream": f"{conn.source}#{upstream.replica}.{conn.source_port}",
                        "endpoint": upstream.endpoints[conn.source_port],
                    }
                )
        self._send(rep, "connect", inputs=inputs)

    def _rewire(self, rep: Replica) -> None:
        """The restarted ``rep`` has bound its outputs: connect it, and reconnect the
        downstream replicas to its new endpoints."""
        assert rep.endpoints is not None
        self._connect(rep)
        for conn in self.pipeline.outputs_of(rep.node):
            for target in self.replicas_of(conn.target):
                self._send(
                    target,
                    "reconnect",
                    upstream=f"{rep.node}#{rep.replica}.{conn.source_port}",
                    endpoint=rep.endpoints[conn.source_port],
                )

    def _handle(self, rep: Replica, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "hello":
            rep.host, rep.pid = msg["host"], msg["pid"]
            self._send(
                rep,
                "setup",
                pipeline=self.pipeline.to_dict(),
                bind=self.placement.node_bind,
                state_dir=str(self.rundir / "state"),
                window=self.window,
                window_bytes=self.window_bytes,
            )
        elif kind == "bound":
            rep.bound = True
            rep.endpoints = msg["endpoints"]
            rep.tap = msg.get("tap")
            if not self._wired:
                if all(r.endpoints is not None for r in self.replicas.values()):
                    self._wired = True
                    for r in self.replicas.values():
                        self._connect(r)
            elif rep.joining:
                self._join(rep)
            else:
                self._rewire(rep)
        elif kind == "inputs_added":
            joined = self._adds[identity(rep.node, rep.replica)].pop(0)
            joined.awaiting -= 1
            if joined.awaiting == 0:
                joined.joining = False
                self._connect(joined)
        elif kind == "progress":
            metrics = NodeMetrics.from_snapshot(msg["metrics"])
            self.metrics[rep.node, rep.replica] = metrics
            _update_rates(rep, metrics)
            self.observer.progress(rep.node, rep.replica, msg["streams"])
        elif kind == "stream_end":
            self.observer.stream_end(rep.node, rep.replica, msg)
        elif kind == "error":
            where = [f"node {msg['node']!r}"]
            if msg["replica"]:
                where.append(f"replica {msg['replica']}")
            if msg["stream"] is not None:
                where.append(f"stream {msg['stream']!r}")
            if msg["id"] is not None:
                where.append(f"message id {msg['id']}")
            drained = (
                " (its open streams were ended; everything it had sent was processed and "
                "acknowledged downstream)"
                if msg.get("drained")
                else ""
            )
            rep.last_error = f"{', '.join(where)}: {msg['error']}{drained}\n{msg['traceback']}"
            if drained:
                rep.done = rep.drained = True
            elif not self._may_restart(rep):
                self._fail(rep.last_error)
        elif kind == "done":
            rep.done = True
            sent = self.sent.setdefault(rep.node, {})
            for port, n in msg["sent"].items():
                sent[port] = sent.get(port, 0) + n
            self.metrics[rep.node, rep.replica] = NodeMetrics.from_snapshot(msg["metrics"])

    def _join(self, rep: Replica) -> None:
        """The replica ``rep`` added while running has bound its outputs: the downstream
        replicas connect to it first, then it connects to its upstream replicas (so nothing
        it sends can reach a node that does not yet wait for its ends of streams)."""
        assert rep.endpoints is not None
        for conn in self.pipeline.outputs_of(rep.node):
            for target in self.replicas_of(conn.target):
                if target.joining or target.process.poll() is not None:
                    continue
                self._send(
                    target,
                    "add_inputs",
                    inputs=[
                        {
                            "port": conn.target_port,
                            "upstream": f"{rep.node}#{rep.replica}.{conn.source_port}",
                            "endpoint": rep.endpoints[conn.source_port],
                        }
                    ],
                )
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
            ValueError: no such node; ``replicas`` < 1; the node is a source or a reducer, is
                fed by ``by_key`` routing (equal keys must keep going to the same replica), or
                feeds an ``ordered`` input; the pipeline is not running; a scaling of this
                node is still under way.
        """
        spec = self.pipeline.nodes.get(node)
        if spec is None:
            raise ValueError(f"no node {node!r} (nodes: {', '.join(self.pipeline.nodes)})")
        if replicas < 1:
            raise ValueError(f"node {node!r}: replicas must be at least 1, not {replicas}")
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
            for conn in self.pipeline.inputs_of(node):
                for upstream in self.replicas_of(conn.source):
                    if upstream.process.poll() is None:
                        self._send(
                            upstream,
                            "retire",
                            target=f"{node}.{conn.target_port}",
                            replica=rep.replica,
                        )

    def _set_replicas(self, node: str, replicas: int) -> None:
        """From now on ``node`` has ``replicas`` replicas: what processes started or
        restarted later are told (their output ports wait for that many peers)."""
        spec = self.pipeline.nodes[node]
        nodes = {**self.pipeline.nodes, node: spec.model_copy(update={"replicas": replicas})}
        self.pipeline = self.pipeline.model_copy(update={"nodes": nodes})

    def _may_restart(self, rep: Replica) -> bool:
        spec = self.pipeline.nodes[rep.node]
        return spec.restart == "on-failure" and rep.restarts < spec.max_restarts

    def drain(self, reason: str = "SIGTERM") -> None:
        """Drain the pipeline, as the first SIGINT/SIGTERM does: the sources end their streams,
        everything already sent is processed and written, and :meth:`run` returns (exit code
        130, "interrupted by REASON: drained"). A second call stops every process at once."""
        self._reason = reason
        self._on_signal(signal.SIGTERM, None)

    def _drain(self) -> None:
        """Ask the sources to end their streams now; the rest of the pipeline then finishes."""
        for rep in self.replicas.values():
            if not self.pipeline.inputs_of(rep.node) and rep.process.poll() is None:
                self._send(rep, "drain")

    def _check_processes(self) -> None:
        for key, rep in list(self.replicas.items()):
            if rep.restart_at is not None:
                if time.monotonic() >= rep.restart_at:
                    self._restart(key, rep)
                continue
            code = rep.process.poll()
            if code == 0 and rep.done and rep.retiring:  # removed by scale(): keep its counts
                del self.replicas[key]
                self._retire_metrics(rep)
                continue
            if self.errors or (code == 0 and rep.done) or rep.drained:
                continue
            if code is None:
                if not rep.bound and time.monotonic() - rep.started > self.start_timeout:
                    self._fail(
                        f"{rep.label} ({self._where(rep)}) did not start within "
                        f"{self.start_timeout:g} s: it has not built its worker and bound its "
                        f"outputs; {self._log_tail(rep)}"
                    )
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            if self._may_restart(rep):
                self._lost(rep, how)
                continue
            if rep.last_error is None and self._may_redeliver(rep):
                self._forget(key, rep, how)
                continue
            if rep.last_error is not None:
                self._fail(rep.last_error)
                continue
            self._fail(
                f"{rep.label} ({self._where(rep)}) {how} before finishing; {self._log_tail(rep)}"
            )

    @staticmethod
    def _log_tail(rep: Replica) -> str:
        try:
            tail = rep.log.read_text(errors="replace").strip().splitlines()[-20:]
        except OSError:
            tail = []
        log = "\n".join(tail) if tail else "(no output)"
        return f"last lines of its log {rep.log}:\n{log}"

    def _lost(self, rep: Replica, how: str) -> None:
        """``rep``'s process died and will be restarted: tell its upstream peers to hold what
        it had not acknowledged, and schedule the restart (with exponential backoff)."""
        spec = self.pipeline.nodes[rep.node]
        self.observer.failure(
            f"{rep.label} ({self._where(rep)}) {how}; restarting it "
            f"({rep.restarts + 1} of at most {spec.max_restarts})"
            + (f"\n{rep.last_error}" if rep.last_error else "")
        )
        self._retire_metrics(rep)
        for conn in self.pipeline.inputs_of(rep.node):
            for upstream in self.replicas_of(conn.source):
                if upstream.process.poll() is None:
                    self._send(
                        upstream,
                        "peer_lost",
                        target=f"{rep.node}.{conn.target_port}",
                        replica=rep.replica,
                    )
        rep.restart_at = time.monotonic() + spec.restart_delay * 2**rep.restarts

    def _retire_metrics(self, rep: Replica) -> None:
        """``rep``'s process is gone: its last counts join :attr:`past`, its gauges zeroed."""
        key = (rep.node, rep.replica)
        if key in self.metrics:
            last = self.metrics.pop(key)
            last.held = last.in_flight = last.in_flight_bytes = last.retained = 0  # gone with it
            self.past[key] = merge([*filter(None, [self.past.get(key)]), last])

    def _may_redeliver(self, rep: Replica) -> bool:
        """Whether ``rep``'s unacknowledged messages can go to the node's other replicas:
        it is fed by round_robin (not a source), and another replica still runs."""
        conns = self.pipeline.inputs_of(rep.node)
        if not conns or any(c.routing != "round_robin" for c in conns):
            return False
        return any(
            r.node == rep.node and r is not rep and r.process.poll() is None and not r.retiring
            for r in self.replicas.values()
        )

    def _forget(self, key: bytes, rep: Replica, how: str) -> None:
        """``rep``'s process died and is not restarted: its upstream replicas send what it
        had not acknowledged to the node's other replicas, and its downstream replicas stop
        waiting for it."""
        self.observer.failure(
            f"{rep.label} ({self._where(rep)}) {how}; not restarted (restart: never): the "
            "messages it had not acknowledged go to the other replicas"
        )
        del self.replicas[key]
        self._retire_metrics(rep)
        self._set_replicas(rep.node, len(self.replicas_of(rep.node)))
        for conn in self.pipeline.inputs_of(rep.node):
            for upstream in self.replicas_of(conn.source):
                if upstream.process.poll() is None:
                    self._send(
                        upstream,
                        "peer_gone",
                        target=f"{rep.node}.{conn.target_port}",
                        replica=rep.replica,
                    )
        for conn in self.pipeline.outputs_of(rep.node):
            for target in self.replicas_of(conn.target):
                if target.process.poll() is None:
                    self._send(target, "upstream_gone", upstream=f"{rep.node}#{rep.replica}.")

    def _restart(self, key: bytes, rep: Replica) -> None:
        new = self._spawn(rep.node, rep.replica, rep.restarts + 1)
        new.endpoints = rep.endpoints
        self.replicas[key] = new

    # -- main loop -----------------------------------------------------------------------------

    def watch(self, socket: zmq.Socket, handler: Callable[[], None]) -> None:
        """Call ``handler`` (in the launcher's thread, from :meth:`run`'s loop) whenever
        ``socket`` is readable: how a supervisor serves commands (status, scale, stop) while
        the pipeline runs. Call before :meth:`run`."""
        self.watched[socket] = handler

    def _on_signal(self, signum: int, frame: Any) -> None:
        if frame is not None:  # a real signal
            self._reason = signal.Signals(signum).name
        self._signalled = signum
        self._signals += 1

    def run(self) -> RunResult:
        """Run the pipeline to its end. Returns the result; never raises for node failures."""
        t0 = time.monotonic()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                started = self._start()
            except Exception as exc:  # the backend could not place the pipeline
                self._fail(f"backend {self.placement.name!r}: {type(exc).__name__}: {exc}")
                return RunResult(1, time.monotonic() - t0, self.errors)
            if not started:
                self._fail(f"interrupted by {self._reason} before the pipeline started")
                return RunResult(130, time.monotonic() - t0, self.errors)
            poller = zmq.Poller()
            for sock in [self.control, *self.watched]:
                poller.register(sock, zmq.POLLIN)
            drain_until: float | None = None
            while not self.errors and self._signals < 2:
                if self._signalled and drain_until is None:
                    drain_until = time.monotonic() + self.drain_timeout
                    self._drain()
                if drain_until is not None and time.monotonic() > drain_until:
                    break
                ready = dict(poller.poll(200))
                if self.control in ready:
                    while not self.errors and self.control.poll(0):  # first error wins
                        ident, frame = self.control.recv_multipart()
                        self._handle(self.replicas[ident], unpack(frame))
                for sock, handler in list(self.watched.items()):
                    if sock in ready:
                        handler()
                self._check_processes()
                if all(r.done and r.process.poll() is not None for r in self.replicas.values()):
                    break
            for rep in self.replicas.values():
                if rep.drained and rep.last_error is not None:
                    self._fail(rep.last_error)
            if self._signalled:
                name = self._reason
                if self._signals == 1 and all(r.done for r in self.replicas.values()):
                    self._fail(f"interrupted by {name}: drained, every file closed")
                else:
                    self._fail(f"interrupted by {name}: stopped before the pipeline drained")
        finally:
            try:
                self._stop_all()  # signals still handled: a late one does not kill us here
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
                self.ctx.destroy(linger=0)
                self.placement.stop()
            if not self.errors and not self.keep_rundir:
                shutil.rmtree(self.rundir, ignore_errors=True)
        code = 0 if not self.errors else (130 if self._signalled else 1)
        return RunResult(code, time.monotonic() - t0, self.errors, self.sent, self.node_metrics())

    def status(self) -> dict[str, Any]:
        """The run's state, and per node replica: state, where it runs, restarts, rates and
        counters (a JSON-able dict; the keys are listed in ``docs/manager.md``)."""
        replicas = []
        for rep in self.replicas.values():
            m = self.metrics.get((rep.node, rep.replica)) or NodeMetrics()
            rate_in, rate_out, mb_in, mb_out = rep.rates
            replicas.append(
                {
                    "node": rep.node,
                    "replica": rep.replica,
                    "state": self._replica_state(rep),
                    "host": rep.host,
                    "pid": rep.pid,
                    "where": self.placement.where(rep.node, rep.replica),
                    "restarts": rep.restarts,
                    "messages_in": m.messages_in,
                    "messages_out": m.messages_out,
                    "bytes_in": m.bytes_in,
                    "bytes_out": m.bytes_out,
                    "rate_in": rate_in,
                    "rate_out": rate_out,
                    "mb_in": mb_in,
                    "mb_out": mb_out,
                    "in_flight": m.in_flight,
                    "errors": m.skipped
                    + m.corrupt_frames
                    + m.missing
                    + (rep.last_error is not None),
                    "warnings": m.warnings + m.dropped,
                    "nonfinite": m.nonfinite,
                    "log": str(rep.log),
                }
            )
        return {
            "state": self.state,
            "backend": self.placement.name,
            "placement": self.placement.describe(),
            "replicas": replicas,
        }

    def _replica_state(self, rep: Replica) -> str:
        if rep.restart_at is not None:
            return "restarting"
        code = rep.process.poll()
        if code is not None:
            return "done" if code == 0 and rep.done else "failed"
        if rep.done:
            return "stopping"
        if rep.retiring:
            return "retiring"
        return "running" if rep.endpoints is not None else "starting"

    @property
    def state(self) -> str:
        """``starting``, ``running``, ``draining``, ``done`` or ``failed``."""
        if self.errors and not self._signalled:
            return "failed"
        if self.replicas and all(
            r.done and r.process.poll() is not None for r in self.replicas.values()
        ):
            return "done"
        if self._signalled:
            return "draining"
        if not self.replicas or any(r.endpoints is None for r in self.replicas.values()):
            return "starting"
        return "running"

    def node_metrics(self) -> dict[str, NodeMetrics]:
        """The latest metrics per node, its replicas merged (nodes that reported, file order)."""
        out = {}
        for name in self.pipeline.nodes:
            parts = [m for (node, _), m in self.metrics.items() if node == name]
            parts += [m for (node, _), m in self.past.items() if node == name]
            if parts:
                out[name] = merge(parts)
                out[name].restarts = sum(
                    r.restarts for r in self.replicas.values() if r.node == name
                )
        return out


def _update_rates(rep: Replica, metrics: NodeMetrics) -> None:
    """Rates of ``rep`` between its previous progress report and this one (``metrics``)."""
    now = time.monotonic()
    if rep._last is not None:
        t, m = rep._last
        dt = now - t
        if dt > 0:
            rep.rates = (
                (metrics.messages_in - m.messages_in) / dt,
                (metrics.messages_out - m.messages_out) / dt,
                (metrics.bytes_in - m.bytes_in) / dt / 1e6,
                (metrics.bytes_out - m.bytes_out) / dt / 1e6,
            )
    rep._last = (now, metrics)


def _number(rep: Replica) -> int:
    return rep.replica
