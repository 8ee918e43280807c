"""A node process placed as a Nomad allocation, as the launcher sees it (poll, wait, kill), and
the API's errors."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from beampipe.launch.command import NodeCommand

if TYPE_CHECKING:
    from beampipe.launch.nomad.placement import NomadPlacement


DEFAULT_ADDRESS = "http://127.0.0.1:4646"
"""The Nomad agent's address when neither ``address`` nor ``NOMAD_ADDR`` is given."""


POLL_INTERVAL = 0.2
"""Seconds a fetched allocation list serves :meth:`NomadAllocation.poll` (one request per job
per interval, however many replicas the launcher polls)."""


BLOCK_WAIT = 5.0
"""Longest blocking query (``?index=&wait=``) of :meth:`NomadAllocation.wait`, seconds."""


REQUEST_TIMEOUT = 10.0
"""Seconds an API request may take (beyond a blocking query's wait)."""


EXIT_STATUS = {"complete": 0, "failed": 1, "lost": 1}
"""The exit status of an allocation that ended, by ``ClientStatus``, when its task has no
``Terminated`` event with an exit code or signal."""


T = TypeVar("T")


class NomadError(RuntimeError):
    """A Nomad API request failed.

    Attributes:
        endpoint: method and path, e.g. ``POST /v1/jobs``.
        status: the HTTP status code, or None if Nomad could not be reached.
        message: Nomad's message (its response body) or the connection error.
    """

    def __init__(self, endpoint: str, status: int | None, message: str, address: str) -> None:
        self.endpoint = endpoint
        self.status = status
        self.message = message
        if status is None:
            text = f"Nomad API {endpoint}: cannot reach Nomad at {address}: {message}"
        else:
            text = f"Nomad API {endpoint} at {address} failed with HTTP {status}: {message}"
        super().__init__(text)


@dataclass
class _Allocations:
    """A job's allocation list as fetched, with its ``X-Nomad-Index`` and monotonic time."""

    allocs: list[dict[str, Any]]
    index: int
    at: float


def _alloc_index(name: str) -> int:
    """The index in an allocation name ``JOB.GROUP[INDEX]``."""
    m = re.search(r"\[(\d+)\]$", name)
    return int(m[1]) if m else -1


def _exit_status(alloc: dict[str, Any], task: str) -> int:
    """The exit status of an allocation that ended: minus the signal or the exit code of its
    task's ``Terminated`` event, else by ``ClientStatus``."""
    state = (alloc.get("TaskStates") or {}).get(task) or {}
    for event in reversed(state.get("Events") or []):
        if event.get("Type") == "Terminated":
            if event.get("Signal"):
                return -int(event["Signal"])
            if event.get("ExitCode"):
                return int(event["ExitCode"])
            break
    return EXIT_STATUS[alloc["ClientStatus"]]


def _summary(alloc: dict[str, Any], task: str) -> str:
    """One line on where an allocation ran and how it ended."""
    state = (alloc.get("TaskStates") or {}).get(task) or {}
    events = ", ".join(
        e["Type"] + (f" ({e['DisplayMessage']})" if e.get("DisplayMessage") else "")
        for e in state.get("Events") or []
    )
    return (
        f"allocation {alloc['ID'][:8]} ({alloc['Name']}) on {alloc.get('NodeName', '?')}: "
        f"{alloc['ClientStatus']}; task events: {events or 'none'}"
    )


def _placement_failure(metric: dict[str, Any], datacenters: list[str]) -> str:
    """Nomad's reasons (an ``AllocMetric`` of ``FailedTGAllocs``) in words."""
    reasons = []
    if not metric.get("NodesEvaluated"):
        available = metric.get("NodesAvailable") or {}
        reasons.append(
            f"no ready client node in datacenters {', '.join(datacenters)} "
            f"(nodes per datacenter: {available})"
        )
    for what, n in (metric.get("ConstraintFiltered") or {}).items():
        reasons.append(f"{n} node(s) filtered out: {what}")
    for what, n in (metric.get("DimensionExhausted") or {}).items():
        reasons.append(f"{n} node(s) without enough free {what}")
    if metric.get("QuotaExhausted"):
        reasons.append(f"quota exhausted: {', '.join(metric['QuotaExhausted'])}")
    return "; ".join(reasons) or f"placement metrics: {metric}"


class NomadAllocation:
    """A node process placed as a Nomad allocation (a
    :class:`~beampipe.launch.placement.NodeProcess`): the allocation with index ``index`` of
    task group ``group`` in job ``job_id``, watched through ``/v1/job/:id/allocations``.

    Its exit status: None while the allocation is pending or running (also while Nomad has not
    placed it yet); when it ended, minus the signal or the exit code of its task's
    ``Terminated`` event, else 0 for ``complete`` and 1 for ``failed`` or ``lost``; 1 if Nomad
    could not place it. When it ends, the task's stdout and stderr (``/v1/client/fs/logs``)
    and a line on where it ran and how it ended are written to its log file.
    """

    pid: int | None = None
    """Always None: the process runs on a Nomad client."""

    def __init__(
        self,
        placement: NomadPlacement,
        node: str,
        replica: int,
        job_id: str,
        index: int,
        eval_id: str,
        log: Path,
        command: NodeCommand,
    ) -> None:
        self.placement = placement
        self.node = node
        self.replica = replica
        self.job_id = job_id
        self.group = node
        self.task = node
        self.index = index
        self.eval_id = eval_id
        self.log = log
        self.command = command
        self.alloc_id: str | None = None
        self.node_name = ""
        self.status: int | None = None
        self.ended = ""
        """Where it ran and how it ended (or why it was not placed), once it ended."""

    @property
    def label(self) -> str:
        return f"{self.job_id}.{self.group}[{self.index}]"

    def poll(self) -> int | None:
        if self.status is None:
            self._update(self.placement._allocations(self.job_id, POLL_INTERVAL))
        return self.status

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the allocation to end (blocking queries, no fixed sleeps); its status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
            NomadError: the API failed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        listed = self.placement._allocations(self.job_id, 0.0)
        while True:
            self._update(listed)
            if self.status is not None:
                return self.status
            wait = BLOCK_WAIT if deadline is None else min(BLOCK_WAIT, deadline - time.monotonic())
            if wait <= 0:
                raise subprocess.TimeoutExpired(self.command.argv, timeout or 0.0)
            listed = self.placement._fetch_allocations(self.job_id, listed.index, wait)

    def kill(self) -> None:
        """Stop the allocation (``/v1/allocation/:id/stop``; the task gets SIGKILL). One that
        Nomad has not placed yet counts as killed at once (the job's deregistration removes
        it)."""
        if self.status is not None:
            return
        self._update(self.placement._allocations(self.job_id, 0.0))
        if self.status is not None:
            return
        if self.alloc_id is None:
            self._end(-signal.SIGKILL, f"{self.label} was stopped before Nomad placed it")
            return
        self.placement._stop_allocation(self.alloc_id)

    def _find(self, allocs: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.alloc_id is not None:
            return next((a for a in allocs if a["ID"] == self.alloc_id), None)
        mine = [
            a
            for a in allocs
            if a["TaskGroup"] == self.group and _alloc_index(a["Name"]) == self.index
        ]
        return min(mine, key=lambda a: a["CreateIndex"], default=None)

    def _update(self, listed: _Allocations) -> None:
        if self.status is not None:
            return
        alloc = self._find(listed.allocs)
        if alloc is None and self.alloc_id is not None:
            self._end(1, f"allocation {self.alloc_id} of {self.label} is gone from Nomad")
            return
        if alloc is None:
            failure = self.placement._placement_failure(self.eval_id, self.group)
            if failure is None:
                return
            # Nomad creates allocations before it completes their evaluation: look again.
            alloc = self._find(self.placement._allocations(self.job_id, 0.0).allocs)
            if alloc is None:
                self._end(1, f"Nomad could not place {self.label}: {failure}")
                return
        self.alloc_id, self.node_name = alloc["ID"], alloc.get("NodeName", "")
        if alloc["ClientStatus"] in EXIT_STATUS:
            self._end(_exit_status(alloc, self.task), _summary(alloc, self.task))

    def _end(self, status: int, how: str) -> None:
        self.status = status
        self.ended = how
        self.placement._write_log(self)
