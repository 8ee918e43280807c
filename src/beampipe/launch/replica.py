"""A node replica as the launcher sees it, how a run ended, and what the launcher reports to."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from beampipe.launch.placement import NodeProcess
from beampipe.runtime.metrics import NodeMetrics

if TYPE_CHECKING:
    from beampipe.launch.hangs import Hang


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
    heard: float = field(default_factory=time.monotonic)
    """Monotonic time of its process's last control message (its start, before the first)."""
    waiting: dict[str, int] = field(default_factory=dict)
    """Per downstream replica (``node#replica``): items its output ports sent there and that
    were not acknowledged, as its last progress report said."""
    hang: Hang | None = None
    """Its process's hang while it lasts (:mod:`beampipe.launch.hangs`)."""
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
    reported, as the final :class:`~beampipe.launch.status.RunStatus` has them (what the
    terminal summary shows)."""
    hangs: list[str] = field(default_factory=list)
    """Each replica that hung, what was done and how it ended, one line each
    (:meth:`beampipe.launch.hangs.Hang.text`)."""
    refused: int = 0
    """Connections to the launcher's control channel refused: the peer did not present the
    run's credentials (the nodes count those to their ports in ``refused_connections``)."""


def update_rates(rep: Replica, metrics: NodeMetrics) -> None:
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
