"""NomadPlacement: a pipeline's node processes as allocations of a Nomad batch job."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nomad
import requests
from nomad.api.exceptions import BaseNomadException

from beampipe.config import Pipeline
from beampipe.launch.command import NodeCommand
from beampipe.launch.nomad.allocation import (
    DEFAULT_ADDRESS,
    POLL_INTERVAL,
    REQUEST_TIMEOUT,
    NomadAllocation,
    NomadError,
    T,
    _Allocations,
    _placement_failure,
)
from beampipe.launch.nomad.job import render_job, render_replica_job
from beampipe.transport.address import advertised


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
