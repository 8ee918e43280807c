"""The Nomad backend: node processes as allocations of a Nomad batch job.

:class:`NomadPlacement` places a pipeline's node processes on a Nomad cluster through the Nomad
HTTP API (https://developer.hashicorp.com/nomad/api-docs, with python-nomad): one job per
pipeline, rendered by :func:`render_job` in the JSON job format
(https://developer.hashicorp.com/nomad/api-docs/json-jobs): ``Type: batch``, one task group per
node with ``Count`` = its replicas, one ``raw_exec`` task running
``python -m beampipe.runtime --control EP --node NODE --replica ${NOMAD_ALLOC_INDEX}
--incarnation 0``. The launcher (:class:`beampipe.launch.Launcher`) keeps deciding about
restarts: the job's restart and reschedule policies allow none.

A process the registered job does not cover (a restart, incarnation > 0, or a replica beyond the
group's ``Count``) is placed as a job of its own, ``JOB.NODE.REPLICA.INCARNATION``, with one
allocation. The pipeline's job is never changed after its registration, because Nomad runs the
finished and failed allocations of a batch job again when the job changes (a new version, e.g.
by ``/v1/job/:id/scale``; ``filterOldTerminalAllocs`` in Nomad's scheduler): a replica that had
died would come back as a second process next to the launcher's restart of it.

The tasks run in the launcher's working directory (``raw_exec``'s ``work_dir``), so relative
output paths mean what they mean for ``beampipe run``; the Nomad clients must see the same file
systems as the launcher (as on a cluster with shared storage) and have the same Python
environment. Nodes bind ``tcp://0.0.0.0:*`` and advertise their host's name.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nomad
import requests
from nomad.api.exceptions import BaseNomadException

from beampipe.config import Pipeline
from beampipe.launch.command import NodeCommand
from beampipe.transport.address import advertised

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


def _group(
    pipeline: Pipeline,
    node: str,
    count: int,
    args: list[str],
    python: str,
    env: dict[str, str],
    workdir: Path,
    meta: dict[str, str],
) -> dict[str, Any]:
    spec = pipeline.nodes[node]
    resources: dict[str, Any] = {"Cores": spec.resources.cpus}
    if spec.resources.memory_mb is not None:
        resources["MemoryMB"] = spec.resources.memory_mb
    if spec.resources.gpus:
        resources["Devices"] = [{"Name": "nvidia/gpu", "Count": spec.resources.gpus}]
    return {
        "Name": node,
        "Count": count,
        "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
        "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
        "Meta": {"beampipe_pipeline": pipeline.name, "beampipe_node": node, **meta},
        "Tasks": [
            {
                "Name": node,
                "Driver": "raw_exec",
                "Config": {"command": python, "args": args, "work_dir": str(workdir)},
                "Env": dict(env),
                "Resources": resources,
                "KillSignal": "SIGKILL",
            }
        ],
    }


def _job(
    job_id: str,
    name: str,
    pipeline: Pipeline,
    groups: list[dict[str, Any]],
    datacenters: Iterable[str],
    namespace: str | None,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "ID": job_id,
        "Name": name,
        "Type": "batch",
        "Datacenters": list(datacenters),
        "Meta": {"beampipe_pipeline": pipeline.name},
        "TaskGroups": groups,
    }
    if namespace is not None:
        job["Namespace"] = namespace
    return job


def render_job(
    pipeline: Pipeline,
    job_id: str,
    control_endpoint: str,
    python: str,
    env: dict[str, str],
    *,
    datacenters: Iterable[str] = ("dc1",),
    namespace: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """The Nomad job (JSON job format, the value of ``{"Job": ...}`` in ``POST /v1/jobs``) that
    runs every node replica of ``pipeline``.

    ``Type`` is ``batch``: a pipeline ends when its sources are done, and a batch task that
    exits 0 is complete, whereas Nomad starts a service's task again whenever it exits. One
    task group per node, named after it, ``Count`` = its replicas, each with one ``raw_exec``
    task of the same name running ``python`` with the arguments of
    :class:`~beampipe.launch.command.NodeCommand` (replica ``${NOMAD_ALLOC_INDEX}``,
    incarnation 0) in ``workdir`` (default: the current directory),
    environment ``env`` added to the client's. ``Resources`` from the node's ``resources:``:
    ``Cores`` = cpus (whole cores, reserved exclusively), ``MemoryMB`` if memory is given (else
    Nomad's default, 300 MB), ``gpus`` as a ``Devices`` request for ``nvidia/gpu``; Slurm's
    partition and time do not apply. ``RestartPolicy`` and ``ReschedulePolicy`` allow no
    attempt (the launcher restarts what may be restarted); ``KillSignal`` is SIGKILL, since
    the launcher stops allocations only after a node did not stop when asked. ``Meta``:
    ``beampipe_pipeline`` (job and groups) and ``beampipe_node`` (groups).
    """
    workdir = workdir or Path.cwd()
    groups = [
        _group(
            pipeline,
            node,
            spec.replicas,
            NodeCommand(python, control_endpoint, node, "${NOMAD_ALLOC_INDEX}").args(),
            python,
            env,
            workdir,
            {},
        )
        for node, spec in pipeline.nodes.items()
    ]
    return _job(job_id, pipeline.name, pipeline, groups, datacenters, namespace)


def render_replica_job(
    pipeline: Pipeline,
    job_id: str,
    node: str,
    replica: int,
    incarnation: int,
    control_endpoint: str,
    python: str,
    env: dict[str, str],
    *,
    datacenters: Iterable[str] = ("dc1",),
    namespace: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """A job of one allocation running one process of node ``node``: replica ``replica``,
    incarnation ``incarnation`` written out in its arguments; its task group is as in
    :func:`render_job` with ``Count`` 1 and ``Meta`` ``beampipe_replica`` and
    ``beampipe_incarnation`` besides."""
    group = _group(
        pipeline,
        node,
        1,
        NodeCommand(python, control_endpoint, node, replica, incarnation).args(),
        python,
        env,
        workdir or Path.cwd(),
        {"beampipe_replica": str(replica), "beampipe_incarnation": str(incarnation)},
    )
    name = f"{pipeline.name}.{node}.{replica}.{incarnation}"
    return _job(job_id, name, pipeline, [group], datacenters, namespace)


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


class NomadPlacement:
    """Node processes as allocations of Nomad batch jobs (see the module docstring).

    Args:
        address: the Nomad HTTP API; default ``$NOMAD_ADDR``, else ``http://127.0.0.1:4646``.
        token: the ACL token (``X-Nomad-Token``); default ``$NOMAD_TOKEN``.
        datacenters: the job's ``Datacenters``.
        namespace: the job's namespace; default Nomad's (``$NOMAD_NAMESPACE`` or ``default``).
        job_id: the pipeline job's ID; default ``beampipe-NAME-XXXXXXXX`` (random hex).

    :meth:`start` only takes note of the pipeline; the job is registered (``POST /v1/jobs``,
    every group with its ``Count``) by the first :meth:`spawn`, and every spawn returns a
    :class:`NomadAllocation` watching its allocation. :meth:`stop` fetches the logs not yet
    fetched and deregisters every job it registered (``DELETE /v1/job/:id?purge=true``).
    API failures raise :class:`NomadError`.
    """

    name = "nomad"

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        datacenters: Iterable[str] = ("dc1",),
        namespace: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.address = (address or os.environ.get("NOMAD_ADDR") or DEFAULT_ADDRESS).rstrip("/")
        self.datacenters = list(datacenters)
        self.namespace = namespace
        self.job_id = job_id or ""
        self.control_bind = "tcp://0.0.0.0:*"
        self.node_bind = "tcp://0.0.0.0:*"
        self.session = requests.Session()
        self.api = nomad.Nomad(
            address=self.address,
            token=token if token is not None else os.environ.get("NOMAD_TOKEN"),
            namespace=namespace,
            timeout=int(REQUEST_TIMEOUT),
            session=self.session,
        )
        self.pipeline: Pipeline | None = None
        self.rundir: Path | None = None
        self.workdir = Path.cwd()
        self.job: dict[str, Any] | None = None
        """The pipeline's job as registered."""
        self.jobs: list[str] = []
        """Every job registered, the pipeline's first."""
        self.evals: dict[str, str] = {}
        """Job ID -> the evaluation its registration created."""
        self.placed: set[tuple[str, int]] = set()
        """(node, replica) already given to a process from the pipeline's job."""
        self.processes: dict[tuple[str, int], NomadAllocation] = {}
        """The latest process of each replica."""
        self.spawned: list[NomadAllocation] = []
        self._listed: dict[str, _Allocations] = {}
        self._evaluations: dict[str, tuple[float, dict[str, Any]]] = {}

    # -- the Placement protocol ----------------------------------------------------------

    def control_endpoint(self, bound: str) -> str:
        return advertised(bound)

    def start(self, pipeline: Pipeline, rundir: Path) -> None:
        """Take note of the pipeline, the run directory and the working directory."""
        self.pipeline = pipeline
        self.rundir = rundir
        self.workdir = Path.cwd()
        if not self.job_id:
            slug = re.sub(r"[^A-Za-z0-9_-]", "-", pipeline.name)
            self.job_id = f"beampipe-{slug}-{secrets.token_hex(4)}"

    def spawn(self, command: NodeCommand, log: Path) -> NomadAllocation:
        """Place one node process: the allocation of the pipeline's job for ``node`` and
        ``replica`` (registering the job on the first call), or a job of its own for a
        restart or a replica beyond the group's ``Count``.

        Raises:
            ValueError: the command's interpreter or control endpoint differ from those of
                the job registered for this pipeline.
            NomadError: the API failed.
        """
        if self.pipeline is None:
            raise RuntimeError("NomadPlacement.spawn before start")
        node, replica, incarnation = command.node, int(command.replica), command.incarnation
        python, control = self._check_command(command)
        env = command.env
        job_env = {k: v for k, v in env.items() if os.environ.get(k) != v and k != "BEAMPIPE_HOST"}
        log.write_bytes(b"")
        if self.job is None:
            job = render_job(
                self.pipeline,
                self.job_id,
                control,
                python,
                job_env,
                datacenters=self.datacenters,
                namespace=self.namespace,
                workdir=self.workdir,
            )
            self._register(job)
            self.job = job
        group = next(g for g in self.job["TaskGroups"] if g["Name"] == node)
        if incarnation == 0 and replica < group["Count"] and (node, replica) not in self.placed:
            self._check_job_args(group, replica, command)
            self.placed.add((node, replica))
            job_id, index = self.job_id, replica
        else:
            job_id, index = self._replica_job_id(node, replica, incarnation), 0
            self._register(
                render_replica_job(
                    self.pipeline,
                    job_id,
                    node,
                    replica,
                    incarnation,
                    control,
                    python,
                    job_env,
                    datacenters=self.datacenters,
                    namespace=self.namespace,
                    workdir=self.workdir,
                )
            )
        process = NomadAllocation(
            self, node, replica, job_id, index, self.evals[job_id], log, command
        )
        self.processes[node, replica] = process
        self.spawned.append(process)
        return process

    def _replica_job_id(self, node: str, replica: int, incarnation: int) -> str:
        """``JOB.NODE.REPLICA.INCARNATION``, with ``-2``, ``-3``, ... if a replica number comes
        back (scaled down and up again)."""
        base = job_id = f"{self.job_id}.{node}.{replica}.{incarnation}"
        again = 1
        while job_id in self.evals:
            again += 1
            job_id = f"{base}-{again}"
        return job_id

    def where(self, node: str, replica: int) -> str:
        """``alloc ID8 on CLIENT``, or the job and group while Nomad has not placed it."""
        process = self.processes.get((node, replica))
        if process is None:
            return ""
        if process.alloc_id is None and process.status is None:
            process._update(self._allocations(process.job_id, POLL_INTERVAL))
        if process.alloc_id is not None:
            return f"alloc {process.alloc_id[:8]} on {process.node_name}"
        return f"{process.label}, not placed"

    def stop(self) -> None:
        """Fetch the logs not fetched yet, then deregister and purge every job registered.

        Raises:
            NomadError: a job could not be deregistered (one already gone is fine).
        """
        failures = []
        try:
            for job_id in self.jobs:
                self._fetch_allocations(job_id)
            for process in self.spawned:
                process._update(self._listed[process.job_id])
                if process.status is None and process.alloc_id is not None:
                    self._write_log(process)
        except NomadError as exc:
            failures.append(exc)
        for job_id in reversed(self.jobs):
            try:
                self._call(
                    f"DELETE /v1/job/{job_id}?purge=true",
                    lambda j=job_id: self.api.job.deregister_job(j, purge=True),
                )
            except NomadError as exc:
                if exc.status != 404:
                    failures.append(exc)
        self.session.close()
        if failures:
            raise failures[0]

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"job_id": self.job_id, "address": self.address}
        if self.namespace is not None:
            facts["namespace"] = self.namespace
        if len(self.jobs) > 1:
            facts["jobs"] = list(self.jobs)
        return facts

    # -- logs ------------------------------------------------------------------------------

    def read_log(self, node: str, replica: int) -> Path:
        """Fetch the output of the replica's latest process so far into its log file (as
        :meth:`_write_log`), e.g. for ``beampipe logs`` while it runs; the file's path.

        Raises:
            KeyError: no process of this replica was placed.
        """
        process = self.processes[node, replica]
        if process.status is None:
            process._update(self._allocations(process.job_id, POLL_INTERVAL))
        return self._write_log(process)

    def _write_log(self, process: NomadAllocation) -> Path:
        """Write ``process``'s task output so far to its log file: stdout, then stderr (each
        as ``GET /v1/client/fs/logs/:alloc_id?plain=true`` returns it), then, if it ended, a
        line ``[nomad] ...`` on where it ran and how it ended. An output that cannot be
        fetched is replaced by a line saying why. Returns the log file's path."""
        parts = []
        if process.alloc_id is not None:
            for kind in ("stdout", "stderr"):
                try:
                    parts.append(self._logs(process.alloc_id, process.task, kind))
                except NomadError as exc:
                    parts.append(f"[nomad] no {kind}: {exc}\n".encode())
        if process.ended:
            parts.append(f"[nomad] {process.ended}\n".encode())
        with open(process.log, "wb") as out:
            for part in parts:
                out.write(part if not part or part.endswith(b"\n") else part + b"\n")
        return process.log

    def _logs(self, alloc_id: str, task: str, kind: str) -> bytes:
        params = {"task": task, "type": kind, "plain": "true", "origin": "start", "offset": 0}
        response = self._call(
            f"GET /v1/client/fs/logs/{alloc_id}",
            lambda: self.api.client.stream_logs.request(alloc_id, params=params, method="get"),
        )
        return response.content

    # -- API -------------------------------------------------------------------------------

    def _call(self, endpoint: str, request: Callable[[], T]) -> T:
        """``request()``, its failures as :class:`NomadError` naming ``endpoint``."""
        try:
            return request()
        except BaseNomadException as exc:
            response = exc.nomad_resp
            if isinstance(response, requests.Response):
                text = response.text.strip() or response.reason
                raise NomadError(endpoint, response.status_code, text, self.address) from None
            raise NomadError(endpoint, None, str(response), self.address) from None
        except requests.RequestException as exc:
            raise NomadError(endpoint, None, str(exc), self.address) from None

    def _register(self, job: dict[str, Any]) -> None:
        reply = self._call("POST /v1/jobs", lambda: self.api.jobs.register_job({"Job": job}))
        self.jobs.append(job["ID"])
        self.evals[job["ID"]] = reply["EvalID"]

    def _fetch_allocations(
        self, job_id: str, index: int | None = None, wait: float = 0.0
    ) -> _Allocations:
        """``GET /v1/job/:id/allocations``; with ``index``, a blocking query that returns when
        the allocations changed after ``index`` or ``wait`` seconds passed."""
        params: dict[str, Any] = {}
        if index is not None:
            params = {"index": index, "wait": f"{max(int(wait * 1000), 1)}ms"}

        def request() -> _Allocations:
            response = self.api.job.request(
                job_id,
                "allocations",
                method="get",
                params=params,
                timeout=wait + REQUEST_TIMEOUT,
            )
            index_header = int(response.headers.get("X-Nomad-Index", "0"))
            return _Allocations(response.json() or [], index_header, time.monotonic())

        listed = self._call(f"GET /v1/job/{job_id}/allocations", request)
        self._listed[job_id] = listed
        return listed

    def _allocations(self, job_id: str, max_age: float) -> _Allocations:
        """The job's allocations, fetched again if the last list is older than ``max_age``."""
        listed = self._listed.get(job_id)
        if listed is None or time.monotonic() - listed.at >= max_age:
            listed = self._fetch_allocations(job_id)
        return listed

    def _placement_failure(self, eval_id: str, group: str) -> str | None:
        """Why Nomad could not place (some of) ``group``, if its evaluation says so; None
        while the evaluation is pending or if it placed the group."""
        cached = self._evaluations.get(eval_id)
        if cached is None or (
            cached[1].get("Status") in ("pending", "blocked")
            and time.monotonic() - cached[0] >= POLL_INTERVAL
        ):
            evaluation = self._call(
                f"GET /v1/evaluation/{eval_id}",
                lambda: self.api.evaluation.get_evaluation(eval_id),
            )
            cached = (time.monotonic(), evaluation)
            self._evaluations[eval_id] = cached
        evaluation = cached[1]
        status = evaluation.get("Status")
        if status in ("failed", "canceled"):
            return f"evaluation {eval_id[:8]} {status}: {evaluation.get('StatusDescription')}"
        failed = (evaluation.get("FailedTGAllocs") or {}).get(group)
        if status == "complete" and failed:
            return _placement_failure(failed, self.datacenters)
        return None

    def _stop_allocation(self, alloc_id: str) -> None:
        self._call(
            f"POST /v1/allocation/{alloc_id}/stop",
            lambda: self.api.allocation.stop_allocation(alloc_id),
        )
        self._listed.clear()

    # -- checks ----------------------------------------------------------------------------

    def _check_command(self, command: NodeCommand) -> tuple[str, str]:
        """(python, control endpoint) of ``command``, which all processes of the job share.

        Raises:
            ValueError: they differ from those of the job already registered.
        """
        if self.job is not None:
            task = self.job["TaskGroups"][0]["Tasks"][0]
            registered = (task["Config"]["command"], task["Config"]["args"][3])
            if (command.python, command.control) != registered:
                raise ValueError(
                    f"node {command.node!r} replica {command.replica}: interpreter and control "
                    f"endpoint {(command.python, command.control)} differ from those of job "
                    f"{self.job_id} {registered}"
                )
        return command.python, command.control

    @staticmethod
    def _check_job_args(group: dict[str, Any], replica: int, command: NodeCommand) -> None:
        """The job's task runs exactly ``command`` as allocation ``replica`` of ``group``."""
        config = group["Tasks"][0]["Config"]
        runs = [config["command"]] + [
            a.replace("${NOMAD_ALLOC_INDEX}", str(replica)) for a in config["args"]
        ]
        if runs != command.argv:
            raise ValueError(
                f"allocation {replica} of task group {group['Name']!r} would run {runs!r}, "
                f"not the launcher's {command.argv!r}"
            )
