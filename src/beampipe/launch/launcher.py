"""The launcher: a pipeline's node processes started through a backend's placement, wired and
watched, from the foreground (``beampipe run``) or a supervisor (``beampipe deploy``).

The launcher binds the control channel (:mod:`beampipe.runtime.control`), starts one process
per node replica through its :class:`~beampipe.launch.placement.Placement` (this machine, a
Slurm job step, a Nomad allocation), hands out addresses (every output port binds an address of
the placement's choosing), tells each node which upstream endpoints to connect to, and then
watches: it relays progress to its observer, stops everything at the first error or when a
process dies, and finishes when every node reported ``done`` and exited. Its parts, each in a
module of its own: :mod:`~beampipe.launch.wiring` (who connects to whom),
:mod:`~beampipe.launch.supervision` (dead processes: restart, redeliver or fail),
:mod:`~beampipe.launch.hangs` (silent processes holding messages: the same, or wait),
:mod:`~beampipe.launch.scaling` (replicas added and retired while running) and
:mod:`~beampipe.launch.status` (the run's state for status displays).
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
from pathlib import Path
from typing import Any, Literal

import zmq

from beampipe.config import Pipeline
from beampipe.launch.allocator import allocator_env
from beampipe.launch.command import NodeCommand
from beampipe.launch.handling import Handling
from beampipe.launch.hangs import Hang, Hangs
from beampipe.launch.placement import LocalPlacement, Placement
from beampipe.launch.replica import Replica, RunObserver, RunResult
from beampipe.launch.scaling import Scaling
from beampipe.launch.status import Reporting, RunStatus
from beampipe.launch.supervision import Supervision
from beampipe.launch.wiring import Wiring
from beampipe.runtime.control import (
    Control,
    ControlError,
    Drain,
    Progress,
    Stop,
    StreamEnded,
    decode,
    encode,
    identity,
)
from beampipe.runtime.metrics import NodeMetrics
from beampipe.transport.security import Credentials, Gate

STOP_TIMEOUT = 5.0
"""Seconds a node gets to exit after ``stop`` before it is killed."""
DRAIN_TIMEOUT = 30.0
"""Seconds a pipeline gets to drain after the first SIGINT/SIGTERM before it is stopped."""
PUBLISH_INTERVAL = 0.2
"""Seconds between the snapshots of the run the launcher publishes for other threads."""
START_TIMEOUT = 300.0
"""Seconds a node process gets, from its start, to build its worker and bind its outputs."""


class Launcher(Handling, Wiring, Supervision, Hangs, Scaling, Reporting):
    """Runs a pipeline to its end.

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

    Each run has its own :attr:`credentials`, in its node processes' environment: only they
    connect (:mod:`beampipe.transport.security`); refusals go to the observer, counted.

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
            rundir = Path(tempfile.mkdtemp(prefix=f"beampipe-{pipeline.name[:16]}-"))
        self.rundir = rundir
        self.logs = logs if logs is not None else rundir / "logs"
        """Where the node processes' logs go (``NODE.REPLICA[.RESTART].log``)."""
        self.credentials = Credentials.generate(pipeline.encrypt)
        """The run's secret (:mod:`beampipe.transport.security`): for its processes only."""
        self.ctx = zmq.Context()
        self.gate = Gate(self.ctx, self.credentials)
        """Admits only the run's processes to the control channel."""
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
        self.hangs: list[Hang] = []
        """Every hang found in the run (:mod:`beampipe.launch.hangs`)."""
        self.redelivering: dict[str, list[tuple[Replica, str]]] = {}
        """Per replica dropped (``node#replica.``): the upstream replicas (and the target
        each was told of) that have yet to say its messages were redelivered."""
        self.drain_timeout = drain_timeout
        self.start_timeout = start_timeout
        self._signalled = 0
        self._signals = 0
        self._reason = ""
        self.published: RunStatus | None = None
        """The latest :class:`~beampipe.launch.status.RunStatus`, for other threads (a viewer):
        replaced, never changed, at most every :data:`PUBLISH_INTERVAL` s and at the end."""
        self._published_at = 0.0

    # -- processes -----------------------------------------------------------------------------

    def _start(self) -> bool:
        """Place the pipeline and start its processes; False if interrupted while placing."""
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.rundir / "state").mkdir(exist_ok=True)
        if not self._place():
            return False
        self.gate.serve(self.control, "the launcher's control channel")
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
                    self._call_watched(self.watched[sock])
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
        env = {
            **allocator_env(os.environ),
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
            **self.credentials.env(),
        }
        command = NodeCommand(sys.executable, self.control_endpoint, name, r, incarnation, env)
        proc = self.placement.spawn(command, log)
        return Replica(name, r, proc, log, restarts=incarnation)

    def _send(self, rep: Replica, msg: Control) -> None:
        self.control.send_multipart([identity(rep.node, rep.replica), encode(msg)])

    def _receive(self) -> tuple[Replica, Control] | None:
        """The next message on the control socket and the replica that sent it; None (the
        frame dropped, said to the observer) for a frame from no process of this run or not
        of the control protocol."""
        ident, *frames = self.control.recv_multipart()
        rep = self.replicas.get(ident)
        try:
            if rep is None:
                raise ControlError(f"from {ident[:64]!r}, no process of this run")
            rep.heard = time.monotonic()
            if len(frames) != 1:
                raise ControlError(f"of {len(frames)} parts")
            return rep, decode(frames[0])
        except ControlError as exc:
            self.observer.failure(f"ignored a control frame: {exc}")
            return None

    def _call_watched(self, handler: Callable[[], None]) -> None:
        """A watched socket's handler (a supervisor's commands), which cannot end the run: what
        it raises is reported."""
        try:
            handler()
        except Exception as exc:
            self.observer.failure(f"a command could not be served: {type(exc).__name__}: {exc}")

    def _report_refusals(self) -> None:
        for text in self.gate.take():  # the connections refused since the last call
            self.observer.failure(text)

    def _stop_all(self) -> None:
        for rep in self.replicas.values():
            if rep.process.poll() is None and not rep.bound:
                rep.process.kill()  # still starting: it has no data, and would not read "stop"
            elif rep.process.poll() is None:
                self._send(rep, Stop())
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
            received = self._receive()
            if received is not None and isinstance(received[1], Progress | StreamEnded):
                self.answer(*received)

    def _where(self, rep: Replica) -> str:
        return self.placement.where(rep.node, rep.replica) or f"pid {rep.process.pid}"

    def _fail(self, text: str) -> None:
        self.errors.append(text)
        self.observer.failure(text)

    # -- wiring --------------------------------------------------------------------------------

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
                self._send(rep, Drain())

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
            self._watch()
            self._conclude()
        finally:
            try:
                self._stop_all()  # signals still handled: a late one does not kill us here
                self._publish()
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
                self._report_refusals()
                self.gate.close()
                self.ctx.destroy(linger=0)
                self.placement.stop()
            if not self.errors and not self.keep_rundir:
                shutil.rmtree(self.rundir, ignore_errors=True)
        code = 0 if not self.errors else (130 if self._signalled else 1)
        final = self.published.nodes if self.published is not None else self.node_metrics()
        hangs, refused = self.hang_texts(), self.gate.refused
        return RunResult(code, time.monotonic() - t0, self.errors, self.sent, final, hangs, refused)

    def _publish(self) -> None:
        self.published = self.run_status()
        self._published_at = time.monotonic()

    def _watch(self) -> None:
        """Answer the nodes and the watched sockets and watch the processes until every node
        is done, the first error, a second signal, or the drain timeout after the first."""
        poller = zmq.Poller()
        for sock in [self.control, *self.watched]:
            poller.register(sock, zmq.POLLIN)
        drain_until: float | None = None
        while not self.errors and self._signals < 2:
            if self._signalled and drain_until is None:
                drain_until = time.monotonic() + self.drain_timeout
                self._drain()
            if drain_until is not None and time.monotonic() > drain_until:
                return
            ready = dict(poller.poll(200))
            if self.control in ready:
                while not self.errors and self.control.poll(0):  # first error wins
                    received = self._receive()
                    if received is not None:
                        self.answer(*received)
            for sock, handler in list(self.watched.items()):
                if sock in ready:
                    self._call_watched(handler)
            self._report_refusals()
            self._check_processes()
            self._check_hangs()
            if time.monotonic() - self._published_at >= PUBLISH_INTERVAL:
                self._publish()
            if all(r.done and r.process.poll() is not None for r in self.replicas.values()):
                return

    def _conclude(self) -> None:
        """The run's errors once it stopped watching: a drained source's failure, and a
        signal's interruption (drained or not)."""
        for rep in self.replicas.values():
            if rep.drained and rep.last_error is not None:
                self._fail(rep.last_error)
        if self._signalled:
            name = self._reason
            if self._signals == 1 and all(r.done for r in self.replicas.values()):
                self._fail(f"interrupted by {name}: drained, every file closed")
            else:
                self._fail(f"interrupted by {name}: stopped before the pipeline drained")
