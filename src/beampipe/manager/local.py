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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import zmq

from beampipe.config import Pipeline
from beampipe.runtime.control import identity, pack, unpack
from beampipe.runtime.metrics import NodeMetrics, merge

STOP_TIMEOUT = 5.0
"""Seconds a node gets to exit after ``stop`` before it is killed."""


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
    process: subprocess.Popen[bytes]
    log: Path
    endpoints: dict[str, str] | None = None
    tap: str | None = None
    """Endpoint of the node's tap (:mod:`beampipe.runtime.tap`), once bound; None for a sink."""
    done: bool = False

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
    """Per node (replicas merged): the last metrics its processes reported."""


class LocalLauncher:
    """Runs a pipeline in the foreground on this machine.

    Args:
        pipeline: the validated pipeline.
        observer: receives progress, stream ends and failures.
        transport: ``ipc`` (Unix domain sockets, the default) or ``tcp`` (loopback).
        window: credit per pipe, i.e. unprocessed messages a receiver may hold per upstream peer.
        window_bytes: the same in wire bytes (a single message larger than this still moves,
            one at a time).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        observer: RunObserver,
        *,
        transport: Literal["ipc", "tcp"] = "ipc",
        window: int = 32,
        window_bytes: int = 64 << 20,
    ) -> None:
        self.pipeline = pipeline
        self.observer = observer
        self.window = window
        self.window_bytes = window_bytes
        self.rundir = Path(tempfile.mkdtemp(prefix=f"beampipe-{pipeline.name}-"))
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        if transport == "ipc":
            self.control.bind(f"ipc://{self.rundir}/control")
            self.bind = f"ipc://{self.rundir}/{{name}}"
        else:
            self.control.bind("tcp://127.0.0.1:*")
            self.bind = "tcp://127.0.0.1:*"
        self.replicas: dict[bytes, Replica] = {}
        self.errors: list[str] = []
        self.sent: dict[str, dict[str, int]] = {}
        self.metrics: dict[tuple[str, int], NodeMetrics] = {}
        self._signalled = 0

    # -- processes -----------------------------------------------------------------------------

    def _start(self) -> None:
        endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        logdir = self.rundir / "logs"
        logdir.mkdir()
        # Worker modules next to the pipeline file are importable in every node process.
        pythonpath = [str(self.pipeline.base_dir), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p)}
        for name, spec in self.pipeline.nodes.items():
            for r in range(spec.replicas):
                log = logdir / f"{name}.{r}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "beampipe.runtime",
                            "--control",
                            endpoint,
                            "--node",
                            name,
                            "--replica",
                            str(r),
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        env=env,
                    )
                self.replicas[identity(name, r)] = Replica(name, r, proc, log)

    def _send(self, rep: Replica, kind: str, **fields: Any) -> None:
        self.control.send_multipart([identity(rep.node, rep.replica), pack(kind, **fields)])

    def _stop_all(self) -> None:
        for rep in self.replicas.values():
            if rep.process.poll() is None:
                self._send(rep, "stop")
        deadline = time.monotonic() + STOP_TIMEOUT
        for rep in self.replicas.values():
            try:
                rep.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rep.process.kill()
                rep.process.wait()

    def _fail(self, text: str) -> None:
        self.errors.append(text)
        self.observer.failure(text)

    # -- wiring --------------------------------------------------------------------------------

    def _connect_all(self) -> None:
        """Every node has bound its outputs: tell each which upstream endpoints to connect to."""
        by_node = {(r.node, r.replica): r for r in self.replicas.values()}
        for rep in self.replicas.values():
            inputs = []
            for conn in self.pipeline.inputs_of(rep.node):
                for u in range(self.pipeline.nodes[conn.source].replicas):
                    upstream = by_node[(conn.source, u)]
                    assert upstream.endpoints is not None
                    inputs.append(
                        {
                            "port": conn.target_port,
                            "upstream": f"{conn.source}#{u}.{conn.source_port}",
                            "endpoint": upstream.endpoints[conn.source_port],
                        }
                    )
            self._send(rep, "connect", inputs=inputs)

    def _handle(self, rep: Replica, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "hello":
            self._send(
                rep,
                "setup",
                pipeline=self.pipeline.to_dict(),
                bind=self.bind,
                window=self.window,
                window_bytes=self.window_bytes,
            )
        elif kind == "bound":
            rep.endpoints = msg["endpoints"]
            rep.tap = msg.get("tap")
            if all(r.endpoints is not None for r in self.replicas.values()):
                self._connect_all()
        elif kind == "progress":
            self.metrics[rep.node, rep.replica] = NodeMetrics.from_snapshot(msg["metrics"])
            self.observer.progress(rep.node, rep.replica, msg["streams"])
        elif kind == "stream_end":
            self.observer.stream_end(rep.node, rep.replica, msg)
        elif kind == "error":
            where = [f"node {msg['node']!r}"]
            if msg["stream"] is not None:
                where.append(f"stream {msg['stream']!r}")
            if msg["id"] is not None:
                where.append(f"message id {msg['id']}")
            self._fail(f"{', '.join(where)}: {msg['error']}\n{msg['traceback']}")
        elif kind == "done":
            rep.done = True
            sent = self.sent.setdefault(rep.node, {})
            for port, n in msg["sent"].items():
                sent[port] = sent.get(port, 0) + n
            self.metrics[rep.node, rep.replica] = NodeMetrics.from_snapshot(msg["metrics"])

    def _check_processes(self) -> None:
        for rep in self.replicas.values():
            code = rep.process.poll()
            if code is None or (code == 0 and rep.done) or self.errors:
                continue
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            tail = rep.log.read_text(errors="replace").strip().splitlines()[-20:]
            log = "\n".join(tail) if tail else "(no output)"
            self._fail(
                f"{rep.label} (pid {rep.process.pid}) {how} before finishing; "
                f"last lines of its log {rep.log}:\n{log}"
            )

    # -- main loop -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = signum

    def run(self) -> RunResult:
        """Run the pipeline to its end. Returns the result; never raises for node failures."""
        t0 = time.monotonic()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._start()
            while not self.errors and not self._signalled:
                if self.control.poll(200):
                    while not self.errors and self.control.poll(0):  # first error wins
                        ident, frame = self.control.recv_multipart()
                        self._handle(self.replicas[ident], unpack(frame))
                self._check_processes()
                if all(r.done and r.process.poll() is not None for r in self.replicas.values()):
                    break
            if self._signalled:
                self._fail(f"interrupted by {signal.Signals(self._signalled).name}")
        finally:
            self._stop_all()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.ctx.destroy(linger=0)
            if not self.errors:
                shutil.rmtree(self.rundir, ignore_errors=True)
        code = 0 if not self.errors else (130 if self._signalled else 1)
        return RunResult(code, time.monotonic() - t0, self.errors, self.sent, self.node_metrics())

    def node_metrics(self) -> dict[str, NodeMetrics]:
        """The latest metrics per node, its replicas merged (nodes that reported, file order)."""
        out = {}
        for name in self.pipeline.nodes:
            parts = [m for (node, _), m in self.metrics.items() if node == name]
            if parts:
                out[name] = merge(parts)
        return out
