"""Where node processes run: the interface between the launcher and a backend.

The launcher (:class:`beampipe.launch.Launcher`) owns a pipeline's control channel and
decides *which* node replica runs when (first start, restart, scaling); a :class:`Placement`
decides *where* and *how* a process is started: an OS process on this machine
(:class:`LocalPlacement`), a Slurm job step, a Nomad allocation. Node processes find the
launcher through :meth:`Placement.control_endpoint` and each other through the endpoints the
launcher hands out, so nothing assumes they share a host unless the placement says so.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any, Literal, Protocol

from beampipe.config import Pipeline
from beampipe.launch.command import NodeCommand
from beampipe.transport.address import ipc_path_problem


class NodeProcess(Protocol):
    """A started node process, however it was placed (``subprocess.Popen`` is one)."""

    pid: int | None
    """The OS process id if known on this host (of ``srun`` for a Slurm step), else None."""

    def poll(self) -> int | None:
        """The exit status if it ended (negative: killed by that signal), else None."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to end; its exit status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """

    def kill(self) -> None:
        """Stop it at once (SIGKILL or the backend's equivalent)."""


class Placement(Protocol):
    """A backend that starts node processes (see the module docstring).

    Attributes:
        name: ``local``, ``slurm`` or ``nomad``.
        control_bind: the address the launcher's control ROUTER binds (``ipc://...`` or
            ``tcp://HOST:*``).
        node_bind: the address template a node binds its output ports to; ``{name}`` is
            replaced by ``node-replica-port``. A ``tcp://*:*`` or ``tcp://0.0.0.0:*`` bind is
            advertised under the node host's address
            (:func:`beampipe.transport.address.advertised`).
    """

    name: str
    control_bind: str
    node_bind: str

    def control_endpoint(self, bound: str) -> str:
        """The address node processes connect to, given the control socket's bound endpoint."""

    def start(self, pipeline: Pipeline, rundir: Path) -> None:
        """Prepare to place ``pipeline``'s processes (e.g. obtain an allocation); called once
        before the first :meth:`spawn`. ``rundir`` holds the run's files (logs)."""

    def spawn(self, command: NodeCommand, log: Path) -> NodeProcess:
        """Start one node replica's process running ``command`` (which names the node, replica
        and incarnation), its output and errors written to ``log``."""

    def where(self, node: str, replica: int) -> str:
        """Where the replica's current process runs, for ``beampipe status`` (host and pid,
        job step, allocation)."""

    def stop(self) -> None:
        """Release what :meth:`start` obtained; called once at the end, after every process
        ended or was killed."""

    def describe(self) -> dict[str, Any]:
        """Backend facts for status displays (e.g. ``{"job_id": 17}``)."""


class LocalPlacement:
    """OS processes on this machine, talking over Unix domain sockets in the run directory
    (``transport="ipc"``) or loopback TCP (``"tcp"``)."""

    name = "local"

    def __init__(self, transport: Literal["ipc", "tcp"] = "ipc") -> None:
        self.transport = transport
        self.control_bind = "tcp://127.0.0.1:*"
        self.node_bind = "tcp://127.0.0.1:*"
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def control_endpoint(self, bound: str) -> str:
        return bound

    def start(self, pipeline: Pipeline, rundir: Path) -> None:
        """With ``ipc``, the sockets go into ``rundir``.

        Raises:
            ValueError: with ``ipc``, a socket path in ``rundir`` longer than a Unix domain
                socket's may be (a long ``TMPDIR`` or ``BEAMPIPE_HOME``).
        """
        if self.transport == "ipc":
            self.control_bind = f"ipc://{rundir}/control"
            self.node_bind = f"ipc://{rundir}/{{name}}"
            for endpoint in (self.control_bind, _longest_node_bind(pipeline, self.node_bind)):
                problem = ipc_path_problem(endpoint)
                if problem is not None:
                    raise ValueError(
                        f"{problem}: run with '--transport tcp', or from a shorter TMPDIR "
                        "(beampipe run) or BEAMPIPE_HOME (beampipe deploy)"
                    )

    def spawn(self, command: NodeCommand, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=command.env,
            )
        self.processes[command.node, int(command.replica)] = proc
        return proc

    def where(self, node: str, replica: int) -> str:
        proc = self.processes.get((node, replica))
        return f"pid {proc.pid} on {socket.gethostname()}" if proc is not None else ""

    def stop(self) -> None:
        """Nothing to release: the launcher has ended every process."""

    def describe(self) -> dict[str, Any]:
        return {"host": socket.gethostname()}


def _longest_node_bind(pipeline: Pipeline, template: str) -> str:
    """The longest address a node binds at start at ``template`` (``{name}`` is
    ``NODE-REPLICA-PORT``, see :meth:`beampipe.runtime.wiring.Wiring.bind`)."""
    names = [
        f"{c.source}-{pipeline.nodes[c.source].replicas - 1}-{port}"
        for c in pipeline.connections
        for port in (c.source_port, "tap")
    ]
    return template.format(name=max(names, key=lambda n: len(n.encode()), default=""))
