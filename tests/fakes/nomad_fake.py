"""A FAKE of the Nomad HTTP API for the tests: not a Nomad agent.

No Nomad agent can be installed on the test machines, so the Nomad backend
(:mod:`beampipe.launch.nomad`) is tested against this small HTTP server (FastAPI + uvicorn in a
thread of the test process). It follows the documented endpoints and JSON shapes of the Nomad
HTTP API (https://developer.hashicorp.com/nomad/api-docs/jobs, .../allocations,
.../evaluations, .../client, and the JSON job format .../json-jobs), as one server with one client
node, and it really *runs* ``raw_exec`` tasks as local subprocesses, so a pipeline placed through
it actually runs.

What it fakes:

* ``PUT/POST /v1/jobs`` (register: ``{"Job": {...}}`` -> ``EvalID``, ``JobModifyIndex``, ...),
  ``GET /v1/jobs``, ``GET /v1/job/:id``, ``GET /v1/job/:id/allocations`` (with blocking
  queries: ``?index=N&wait=5s``, the ``X-Nomad-Index`` header), ``POST /v1/job/:id/scale``
  (``{"Count", "Target": {"Group"}}``), ``DELETE /v1/job/:id`` (``?purge=true`` removes it at
  once; without, it stays as stopped and ``dead``), ``GET /v1/allocation/:id``,
  ``PUT/POST /v1/allocation/:id/stop``, ``GET /v1/evaluation/:id`` and
  ``GET /v1/client/fs/logs/:alloc_id`` (``task``, ``type`` stdout|stderr, ``plain``,
  ``origin``, ``offset``; without ``plain`` the body is one JSON frame ``{"Data": base64,
  "File", "Offset"}``). Errors are plain-text bodies with Nomad's status codes (400, 403, 404).
* Namespaces (``?namespace=``, default ``default``) and, if the fake is given a ``token``, ACLs:
  a request without ``X-Nomad-Token`` or with another one gets 403 (``Permission denied`` /
  ``ACL token not found``).
* The scheduler, synchronously inside the request: each task group gets ``Count`` allocations
  named ``JOB.GROUP[INDEX]`` on the one client node if it is feasible: the node's datacenter is
  among the job's ``Datacenters`` (globs allowed), the task's driver is ``raw_exec``, the node
  has the requested ``Devices``, and ``Cores`` / ``MemoryMB`` (default 300, as Nomad's) fit what
  the running allocations left free. Otherwise the evaluation lists the group under
  ``FailedTGAllocs`` (``NodesAvailable``, ``ConstraintFiltered`` "missing drivers"/"missing
  devices", ``DimensionExhausted`` "cores"/"memory") with a ``BlockedEval``, as Nomad does.
  Batch semantics as in Nomad's reconciler: a finished or failed allocation still counts for its
  index (it is not run again, and the restart and reschedule policies of the beampipe jobs allow
  no retry), except that after the job is *changed* (a new version by a re-registration or a
  scale) terminal allocations of the older version no longer count, so their indexes run again
  (``filterOldTerminalAllocs`` in Nomad's ``scheduler/reconcile.go``). Scaling down stops the
  highest indexes.
* The ``raw_exec`` driver: ``command`` + ``args`` run as a subprocess in its own session, in
  ``work_dir`` if given, else the task directory ``ALLOC_DIR/TASK``; ``${NAME}`` in command,
  args, ``work_dir`` and ``Env`` values is replaced by the task environment's variable
  ``NAME``; the environment is the client's (this process's, as Nomad passes the client's
  environment to ``raw_exec`` tasks) plus the task's ``Env`` plus what a client sets:
  ``NOMAD_ALLOC_DIR``, ``NOMAD_TASK_DIR``, ``NOMAD_SECRETS_DIR``, ``NOMAD_ALLOC_ID``,
  ``NOMAD_SHORT_ALLOC_ID``, ``NOMAD_ALLOC_NAME``, ``NOMAD_ALLOC_INDEX``, ``NOMAD_TASK_NAME``,
  ``NOMAD_GROUP_NAME``, ``NOMAD_JOB_ID``, ``NOMAD_JOB_NAME``, ``NOMAD_DC``,
  ``NOMAD_NAMESPACE``, ``NOMAD_REGION``, ``NOMAD_CPU_LIMIT``, ``NOMAD_CPU_CORES``,
  ``NOMAD_MEMORY_LIMIT`` and ``NOMAD_META_<key>`` (as written and upper-cased). Output goes to
  ``ALLOC_DIR/alloc/logs/TASK.stdout.0`` / ``.stderr.0``. Task states and events
  (``Received``, ``Task Setup``, ``Started``, ``Terminated`` with ``ExitCode`` = 128 + signal
  for a signalled process, ``Not Restarting``, ``Killing``, ``Killed``) and the allocation's
  ``ClientStatus``: ``running``, then ``complete`` (exit 0, or stopped through the API) or
  ``failed``. Stopping sends the task's ``KillSignal`` (default SIGINT) to its process group
  and SIGKILL after ``KillTimeout`` (nanoseconds, default 5 s).

What it does not fake: more than one client node, node failures (so never ``lost``), task
restarts and rescheduling (the beampipe jobs allow none; an allocation stopped through the API
is not replaced until the job's next evaluation, which places its index again),
blocked evaluations being placed later, destructive or in-place updates of changed task groups
(running allocations keep the version they started with), deployments, services, networks and
ports, templates, artifacts, CPU pinning and resource isolation, ``CPU`` MHz accounting, the
job's canonicalisation (``GET /v1/job/:id`` returns the job as registered plus the server's
fields), log rotation and ``follow``, and every endpoint not listed above (404).

Test hooks that Nomad does not have: :meth:`NomadFake.tasks` (every task process the fake
started, with its argv, environment and exit status) and :meth:`NomadFake.wait_idle`.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

DEFAULT_MEMORY_MB = 300
"""Nomad's default ``MemoryMB`` of a task that asks for none."""
MHZ_PER_CORE = 1000
"""The fake client's CPU speed, for ``NOMAD_CPU_LIMIT``."""
MAX_WAIT = 600.0
"""Longest blocking query, seconds (Nomad caps ``wait`` at 10 minutes)."""
TERMINAL = ("complete", "failed", "lost")


class ApiError(Exception):
    """An HTTP error with a plain-text body, as Nomad answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class TaskRun:
    """One task process the fake started (test hook)."""

    alloc_id: str
    job_id: str
    group: str
    index: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    returncode: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


@dataclass
class Alloc:
    id: str
    eval_id: str
    namespace: str
    job_id: str
    job_name: str
    job_version: int
    job_type: str
    group: str
    index: int
    task: dict[str, Any]
    dir: Path
    cores: list[int]
    memory_mb: int
    devices: dict[str, int]
    create_index: int
    modify_index: int
    create_time: int
    modify_time: int
    desired: str = "run"
    desired_description: str = ""
    client_status: str = "pending"
    client_description: str = ""
    state: str = "pending"
    failed: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    run: TaskRun | None = None
    killer: threading.Timer | None = None

    @property
    def name(self) -> str:
        return f"{self.job_name}.{self.group}[{self.index}]"

    @property
    def terminal(self) -> bool:
        return self.client_status in TERMINAL


@dataclass
class JobRecord:
    namespace: str
    job: dict[str, Any]
    version: int
    create_index: int
    modify_index: int
    job_modify_index: int
    submit_time: int
    stop: bool = False


def _now_ns() -> int:
    return time.time_ns()


def _rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _bool(value: str | None) -> bool:
    """Go's ``strconv.ParseBool`` (python-nomad sends ``True``/``False``)."""
    if value is None or value == "":
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ApiError(400, f"Failed to parse value of {value!r} as a bool")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """A Go duration string (``5s``, ``500ms``, ``1m30s``) in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ApiError(400, f"Invalid wait time {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _interpolate(text: str, env: dict[str, str]) -> str:
    """``${NAME}`` replaced by ``env[NAME]``; unknown names are left as they are (as Nomad)."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: env.get(m[1], m[0]), text)


class NomadFake:
    """One fake Nomad server with one client node (see the module docstring).

    Args:
        data_dir: where allocation directories (and the tasks' logs) go.
        cores: CPU cores the client node offers (``Cores`` of tasks reserve them).
        memory_mb: memory the client node offers, MiB.
        devices: devices the node has, e.g. ``{"nvidia/gpu": 2}``; default none.
        datacenter: the node's datacenter.
        token: if given, ACLs are on and every request needs this ``X-Nomad-Token``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        cores: int = 16,
        memory_mb: int = 32768,
        devices: dict[str, int] | None = None,
        datacenter: str = "dc1",
        region: str = "global",
        node_name: str = "fake-client-1",
        token: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.cores = cores
        self.memory_mb = memory_mb
        self.devices = dict(devices or {})
        self.datacenter = datacenter
        self.region = region
        self.node_name = node_name
        self.node_id = str(uuid.uuid4())
        self.token = token
        self.changed = threading.Condition()
        self.index = 1
        """The raft index: raised by every change."""
        self.alloc_index = 1
        """The index of the last change of any allocation (blocking queries on allocations)."""
        self.jobs: dict[tuple[str, str], JobRecord] = {}
        self.allocs: dict[str, Alloc] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.runs: list[TaskRun] = []
        self.app = self._routes()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.address = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> NomadFake:
        """Serve on a free loopback port (:attr:`address`); returns self."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no start race
        self.address = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="nomad-fake", daemon=True
        )
        self.thread.start()
        return self

    def close(self) -> None:
        """Kill every task process still running and stop serving."""
        with self.changed:
            for run in self.runs:
                if run.process is not None and run.returncode is None:
                    _killpg(run.process, signal.SIGKILL)
        self.wait_idle(30)
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join()

    def __enter__(self) -> NomadFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- test hooks (not in Nomad) -----------------------------------------------------------

    def tasks(self) -> list[TaskRun]:
        """Every task process started, in start order (also of purged jobs)."""
        with self.changed:
            return list(self.runs)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task process runs; False if some still did after ``timeout`` s."""
        with self.changed:
            return self.changed.wait_for(
                lambda: all(r.returncode is not None for r in self.runs), timeout
            )

    # -- HTTP ------------------------------------------------------------------------------

    def _routes(self) -> FastAPI:
        app = FastAPI(title="Nomad HTTP API (fake)")
        fake = self

        @app.exception_handler(ApiError)
        def _api_error(request: Request, exc: ApiError) -> PlainTextResponse:
            return PlainTextResponse(exc.message, status_code=exc.status)

        @app.middleware("http")
        async def _acl(request: Request, call_next: Any) -> Response:
            if fake.token is not None:
                given = request.headers.get("X-Nomad-Token")
                if given is None:
                    return PlainTextResponse("Permission denied", status_code=403)
                if given != fake.token:
                    return PlainTextResponse("ACL token not found", status_code=403)
            return await call_next(request)

        def ns(request: Request) -> str:
            return request.query_params.get("namespace") or "default"

        @app.api_route("/v1/jobs", methods=["PUT", "POST"])
        def register(request: Request, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
            return fake._json(fake.register(body, request.query_params.get("namespace")))

        @app.get("/v1/jobs")
        def jobs(request: Request) -> JSONResponse:
            prefix = request.query_params.get("prefix", "")
            return fake._json(fake.list_jobs(ns(request), prefix))

        @app.get("/v1/job/{job_id}")
        def job(job_id: str, request: Request) -> JSONResponse:
            return fake._json(fake.read_job(ns(request), job_id))

        @app.get("/v1/job/{job_id}/allocations")
        def job_allocations(job_id: str, request: Request) -> JSONResponse:
            q = request.query_params
            index = int(q["index"]) if q.get("index") else None
            wait = _duration(q["wait"]) if q.get("wait") else None
            stubs, at = fake.job_allocations(ns(request), job_id, index, wait)
            return fake._json(stubs, at)

        @app.api_route("/v1/job/{job_id}/scale", methods=["PUT", "POST"])
        def scale(
            job_id: str, request: Request, body: Annotated[dict[str, Any], Body()]
        ) -> JSONResponse:
            return fake._json(fake.scale(ns(request), job_id, body))

        @app.delete("/v1/job/{job_id}")
        def deregister(job_id: str, request: Request) -> JSONResponse:
            purge = _bool(request.query_params.get("purge"))
            return fake._json(fake.deregister(ns(request), job_id, purge))

        @app.get("/v1/allocation/{alloc_id}")
        def allocation(alloc_id: str) -> JSONResponse:
            return fake._json(fake.read_allocation(alloc_id))

        @app.api_route("/v1/allocation/{alloc_id}/stop", methods=["PUT", "POST"])
        def stop_allocation(alloc_id: str) -> JSONResponse:
            return fake._json(fake.stop_allocation(alloc_id))

        @app.get("/v1/evaluation/{eval_id}")
        def evaluation(eval_id: str) -> JSONResponse:
            with fake.changed:
                if eval_id not in fake.evals:
                    raise ApiError(404, "eval not found")
                return fake._json(dict(fake.evals[eval_id]))

        @app.get("/v1/client/fs/logs/{alloc_id}")
        def logs(alloc_id: str, request: Request) -> Response:
            return fake.logs(alloc_id, request.query_params)

        return app

    def _json(self, content: Any, index: int | None = None) -> JSONResponse:
        headers = {
            "X-Nomad-Index": str(index if index is not None else self.index),
            "X-Nomad-KnownLeader": "true",
            "X-Nomad-LastContact": "0",
        }
        return JSONResponse(content, headers=headers)

    # -- jobs ------------------------------------------------------------------------------

    def _bump(self) -> int:
        self.index += 1
        return self.index

    def _job(self, namespace: str, job_id: str) -> JobRecord:
        record = self.jobs.get((namespace, job_id))
        if record is None:
            raise ApiError(404, "job not found")
        return record

    def register(self, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        job = body.get("Job")
        if not isinstance(job, dict):
            raise ApiError(400, "Job must be specified")
        job = dict(job)
        if not job.get("ID"):
            raise ApiError(400, "1 error occurred:\n\t* Missing job ID\n\n")
        if re.search(r"\s", job["ID"]):
            raise ApiError(400, "1 error occurred:\n\t* Job ID contains a space\n\n")
        namespace = namespace or job.get("Namespace") or "default"
        job["Namespace"] = namespace
        job.setdefault("Name", job["ID"])
        job.setdefault("Type", "service")
        job.setdefault("Datacenters", ["*"])
        groups = job.get("TaskGroups") or []
        problems = []
        if not groups:
            problems.append("Missing job task groups")
        names = [g.get("Name") for g in groups]
        for g in groups:
            if not g.get("Name"):
                problems.append("Missing task group name")
            if not g.get("Tasks"):
                problems.append(f"Task group {g.get('Name')} has no tasks")
            for t in g.get("Tasks") or []:
                if not t.get("Name"):
                    problems.append(f"Task group {g.get('Name')}: missing task name")
                if t.get("Driver") == "raw_exec" and not (t.get("Config") or {}).get("command"):
                    problems.append(f"Task {t.get('Name')}: missing command")
        if len(set(names)) != len(names):
            problems.append("Job task group names are not unique")
        if problems:
            listed = "".join(f"\t* {p}\n" for p in problems)
            raise ApiError(400, f"{len(problems)} error(s) occurred:\n{listed}\n")
        with self.changed:
            key = (namespace, job["ID"])
            old = self.jobs.get(key)
            index = self._bump()
            if old is None or old.stop:
                version = 0 if old is None else old.version + 1
                record = JobRecord(namespace, job, version, index, index, index, _now_ns())
                self.jobs[key] = record
            else:
                record = old
                if _spec(old.job) != _spec(job):
                    record.version += 1
                    record.job_modify_index = index
                record.job = job
                record.modify_index = index
            ev = self._evaluate(record, "job-register")
            self.changed.notify_all()
            return {
                "EvalID": ev["ID"],
                "EvalCreateIndex": ev["CreateIndex"],
                "JobModifyIndex": record.job_modify_index,
                "Warnings": "",
                "Index": self.index,
                "LastContact": 0,
                "KnownLeader": True,
            }

    def list_jobs(self, namespace: str, prefix: str) -> list[dict[str, Any]]:
        with self.changed:
            return [
                {
                    "ID": r.job["ID"],
                    "ParentID": "",
                    "Name": r.job["Name"],
                    "Namespace": r.namespace,
                    "Datacenters": r.job["Datacenters"],
                    "Type": r.job["Type"],
                    "Priority": r.job.get("Priority", 50),
                    "Status": self._job_status(r),
                    "Stop": r.stop,
                    "Version": r.version,
                    "CreateIndex": r.create_index,
                    "ModifyIndex": r.modify_index,
                    "JobModifyIndex": r.job_modify_index,
                    "SubmitTime": r.submit_time,
                }
                for (n, job_id), r in sorted(self.jobs.items())
                if n == namespace and job_id.startswith(prefix)
            ]

    def read_job(self, namespace: str, job_id: str) -> dict[str, Any]:
        with self.changed:
            r = self._job(namespace, job_id)
            return {
                **r.job,
                "Status": self._job_status(r),
                "Stop": r.stop,
                "Version": r.version,
                "CreateIndex": r.create_index,
                "ModifyIndex": r.modify_index,
                "JobModifyIndex": r.job_modify_index,
                "SubmitTime": r.submit_time,
            }

    def _job_status(self, record: JobRecord) -> str:
        allocs = self._allocs_of(record)
        if record.stop:
            return "dead"
        if any(not a.terminal for a in allocs):
            return "running"
        return "dead" if allocs else "pending"

    def _allocs_of(self, record: JobRecord) -> list[Alloc]:
        return [
            a
            for a in self.allocs.values()
            if a.namespace == record.namespace and a.job_id == record.job["ID"]
        ]

    def job_allocations(
        self, namespace: str, job_id: str, index: int | None, wait: float | None
    ) -> tuple[list[dict[str, Any]], int]:
        with self.changed:
            if index is not None:
                self.changed.wait_for(
                    lambda: self.alloc_index > index, min(wait or 300.0, MAX_WAIT)
                )
            stubs = [
                self._stub(a)
                for a in sorted(self.allocs.values(), key=lambda a: a.create_index)
                if a.namespace == namespace and a.job_id == job_id
            ]
            return stubs, self.alloc_index

    def scale(self, namespace: str, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        group = (body.get("Target") or {}).get("Group")
        if not group:
            raise ApiError(400, "missing task group name in scaling request")
        count = body.get("Count")
        with self.changed:
            record = self._job(namespace, job_id)
            if record.stop:
                raise ApiError(400, f"job {job_id!r} is stopped")
            groups = {g["Name"]: g for g in record.job["TaskGroups"]}
            if group not in groups:
                raise ApiError(
                    400, f"task group {group!r} specified for scaling does not exist in job"
                )
            if count is not None:
                if not isinstance(count, int) or count < 0:
                    raise ApiError(400, "scaling action count can't be negative")
                if groups[group].get("Count", 1) != count:
                    groups[group]["Count"] = count
                    record.version += 1
                    record.job_modify_index = self._bump()
                    record.modify_index = record.job_modify_index
            ev = self._evaluate(record, "job-scaling")
            self.changed.notify_all()
            return {
                "EvalID": ev["ID"],
                "EvalCreateIndex": ev["CreateIndex"],
                "JobModifyIndex": record.job_modify_index,
                "Warnings": "",
                "Index": self.index,
            }

    def deregister(self, namespace: str, job_id: str, purge: bool) -> dict[str, Any]:
        with self.changed:
            record = self._job(namespace, job_id)
            for alloc in self._allocs_of(record):
                self._stop(alloc, "alloc not needed since job was stopped")
            record.stop = True
            record.job_modify_index = self._bump()
            ev = self._new_eval(record, "job-deregister")
            if purge:
                for alloc in self._allocs_of(record):
                    del self.allocs[alloc.id]
                del self.jobs[namespace, job_id]
            self.alloc_index = self.index
            self.changed.notify_all()
            return {
                "EvalID": ev["ID"],
                "EvalCreateIndex": ev["CreateIndex"],
                "JobModifyIndex": record.job_modify_index,
                "Index": self.index,
            }

    # -- scheduling ------------------------------------------------------------------------

    def _new_eval(self, record: JobRecord, trigger: str, status: str = "complete") -> dict:
        index = self._bump()
        ev = {
            "ID": str(uuid.uuid4()),
            "Namespace": record.namespace,
            "Priority": record.job.get("Priority", 50),
            "Type": record.job["Type"],
            "TriggeredBy": trigger,
            "JobID": record.job["ID"],
            "JobModifyIndex": record.job_modify_index,
            "Status": status,
            "StatusDescription": "",
            "FailedTGAllocs": None,
            "BlockedEval": "",
            "QueuedAllocations": {},
            "CreateIndex": index,
            "ModifyIndex": index,
            "CreateTime": _now_ns(),
            "ModifyTime": _now_ns(),
        }
        self.evals[ev["ID"]] = ev
        return ev

    def _evaluate(self, record: JobRecord, trigger: str) -> dict[str, Any]:
        """Nomad's scheduler for ``record``, at once: place what is missing, stop what is too
        much; the evaluation says what could not be placed."""
        ev = self._new_eval(record, trigger)
        batch = record.job["Type"] == "batch"
        failed: dict[str, dict[str, Any]] = {}
        for group in record.job["TaskGroups"]:
            name, count = group["Name"], group.get("Count", 1)
            allocs = [a for a in self._allocs_of(record) if a.group == name]
            if batch:  # terminal allocations of older job versions do not count
                allocs = [a for a in allocs if not (a.terminal and a.job_version < record.version)]
            live = [a for a in allocs if a.desired == "run"]
            for alloc in live:
                if alloc.index >= count and not alloc.terminal:
                    self._stop(alloc, "alloc not needed due to job update")
            present = {a.index for a in live if a.index < count}
            missing = [i for i in range(count) if i not in present]
            unplaced = [i for i in missing if not self._place(record, group, i, ev, failed)]
            ev["QueuedAllocations"][name] = len(unplaced)
        if failed:
            blocked = self._new_eval(record, "queued-allocs", status="blocked")
            ev["FailedTGAllocs"] = failed
            ev["BlockedEval"] = blocked["ID"]
        self.alloc_index = self.index
        return ev

    def _place(
        self,
        record: JobRecord,
        group: dict[str, Any],
        index: int,
        ev: dict[str, Any],
        failed: dict[str, dict[str, Any]],
    ) -> bool:
        job = record.job
        task = group["Tasks"][0]
        resources = task.get("Resources") or {}
        cores = resources.get("Cores") or 0
        memory = resources.get("MemoryMB") or DEFAULT_MEMORY_MB
        devices = {d["Name"]: d.get("Count", 1) for d in resources.get("Devices") or []}
        metric = {
            "NodesEvaluated": 1,
            "NodesFiltered": 0,
            "NodesInPool": 1,
            "NodesAvailable": {
                dc: int(fnmatch.fnmatch(self.datacenter, dc)) for dc in job["Datacenters"]
            },
            "ClassFiltered": None,
            "ConstraintFiltered": None,
            "NodesExhausted": 0,
            "ClassExhausted": None,
            "DimensionExhausted": None,
            "QuotaExhausted": None,
            "ScoreMetaData": None,
            "AllocationTime": 0,
            "CoalescedFailures": 0,
        }
        used = [a for a in self.allocs.values() if not a.terminal]
        free_cores = sorted(set(range(self.cores)) - {c for a in used for c in a.cores})
        free_memory = self.memory_mb - sum(a.memory_mb for a in used)
        if not any(fnmatch.fnmatch(self.datacenter, dc) for dc in job["Datacenters"]):
            metric["NodesEvaluated"] = 0
        elif any(t.get("Driver") != "raw_exec" for t in group["Tasks"]):
            metric.update(NodesFiltered=1, ConstraintFiltered={"missing drivers": 1})
        elif any(self.devices.get(d, 0) < n for d, n in devices.items()):
            metric.update(NodesFiltered=1, ConstraintFiltered={"missing devices": 1})
        elif cores > len(free_cores):
            metric.update(NodesExhausted=1, DimensionExhausted={"cores": 1})
        elif memory > free_memory:
            metric.update(NodesExhausted=1, DimensionExhausted={"memory": 1})
        else:
            self._start(record, group, task, index, ev, free_cores[:cores], memory, devices)
            return True
        if group["Name"] in failed:
            failed[group["Name"]]["CoalescedFailures"] += 1
        else:
            failed[group["Name"]] = metric
        return False

    def _start(
        self,
        record: JobRecord,
        group: dict[str, Any],
        task: dict[str, Any],
        index: int,
        ev: dict[str, Any],
        cores: list[int],
        memory: int,
        devices: dict[str, int],
    ) -> None:
        job = record.job
        alloc_id = str(uuid.uuid4())
        now = _now_ns()
        created = self._bump()
        alloc = Alloc(
            id=alloc_id,
            eval_id=ev["ID"],
            namespace=record.namespace,
            job_id=job["ID"],
            job_name=job["Name"],
            job_version=record.version,
            job_type=job["Type"],
            group=group["Name"],
            index=index,
            task=task,
            dir=self.data_dir / "alloc" / alloc_id,
            cores=cores,
            memory_mb=memory,
            devices=devices,
            create_index=created,
            modify_index=created,
            create_time=now,
            modify_time=now,
        )
        self.allocs[alloc_id] = alloc
        self._event(alloc, "Received", "Task received by client")
        name = task["Name"]
        shared = alloc.dir / "alloc"
        task_dir = alloc.dir / name
        for d in (shared / "logs", shared / "data", shared / "tmp", task_dir / "local"):
            d.mkdir(parents=True, exist_ok=True)
        (task_dir / "secrets").mkdir(mode=0o700, exist_ok=True)
        self._event(alloc, "Task Setup", "Building Task Directory")
        meta = {**(job.get("Meta") or {}), **(group.get("Meta") or {}), **(task.get("Meta") or {})}
        env = {
            "NOMAD_ALLOC_DIR": str(shared),
            "NOMAD_TASK_DIR": str(task_dir / "local"),
            "NOMAD_SECRETS_DIR": str(task_dir / "secrets"),
            "NOMAD_ALLOC_ID": alloc_id,
            "NOMAD_SHORT_ALLOC_ID": alloc_id[:8],
            "NOMAD_ALLOC_NAME": alloc.name,
            "NOMAD_ALLOC_INDEX": str(index),
            "NOMAD_TASK_NAME": name,
            "NOMAD_GROUP_NAME": group["Name"],
            "NOMAD_JOB_ID": job["ID"],
            "NOMAD_JOB_NAME": job["Name"],
            "NOMAD_DC": self.datacenter,
            "NOMAD_NAMESPACE": record.namespace,
            "NOMAD_REGION": self.region,
            "NOMAD_CPU_LIMIT": str(max(len(cores), 1) * MHZ_PER_CORE),
            "NOMAD_MEMORY_LIMIT": str(memory),
        }
        if cores:
            env["NOMAD_CPU_CORES"] = ",".join(map(str, cores))
        for key, value in meta.items():
            env[f"NOMAD_META_{key}"] = env[f"NOMAD_META_{key.upper()}"] = str(value)
        task_env = {k: _interpolate(str(v), env) for k, v in (task.get("Env") or {}).items()}
        env = {**os.environ, **task_env, **env}
        config = task.get("Config") or {}
        argv = [_interpolate(str(a), env) for a in [config["command"], *config.get("args", [])]]
        cwd = (
            _interpolate(str(config["work_dir"]), env) if config.get("work_dir") else str(task_dir)
        )
        run = TaskRun(alloc_id, job["ID"], group["Name"], index, argv, env, cwd)
        alloc.run = run
        self.runs.append(run)
        logs = shared / "logs"
        try:
            with (
                open(logs / f"{name}.stdout.0", "wb") as out,
                open(logs / f"{name}.stderr.0", "wb") as err,
            ):
                alloc.process = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            run.process = alloc.process
        except OSError as exc:
            run.returncode = -1
            self._event(alloc, "Driver Failure", f"failed to launch command with executor: {exc}")
            self._event(alloc, "Not Restarting", "Error was unrecoverable", fails_task="true")
            self._finish_state(alloc, failed=True)
            return
        alloc.state, alloc.client_status = "running", "running"
        alloc.started_at = _rfc3339()
        self._event(alloc, "Started", "Task started by client")
        threading.Thread(target=self._watch, args=(alloc,), daemon=True).start()

    def _watch(self, alloc: Alloc) -> None:
        """Wait for the task's process and record how it ended."""
        assert alloc.process is not None and alloc.run is not None
        code = alloc.process.wait()
        with self.changed:
            if alloc.killer is not None:
                alloc.killer.cancel()
            alloc.run.returncode = code
            sig = -code if code < 0 else 0
            exit_code = 128 + sig if sig else code
            self._event(
                alloc,
                "Terminated",
                f"Exit Code: {exit_code}" + (f", Signal: {sig}" if sig else ""),
                exit_code=str(exit_code),
                signal=str(sig),
                oom_killed="false",
                ExitCode=exit_code,
                Signal=sig,
            )
            stopping = alloc.desired == "stop"
            if stopping:
                self._event(alloc, "Killed", "Task successfully killed")
            elif code != 0:
                self._event(
                    alloc,
                    "Not Restarting",
                    "Policy allows no restarts",
                    fails_task="true",
                    restart_reason="Policy allows no restarts",
                )
            self._finish_state(alloc, failed=code != 0 and not stopping)
            self.changed.notify_all()

    def _finish_state(self, alloc: Alloc, failed: bool) -> None:
        alloc.state, alloc.failed = "dead", failed
        alloc.finished_at = _rfc3339()
        alloc.client_status = "failed" if failed else "complete"
        alloc.client_description = "Failed tasks" if failed else "All tasks have completed"
        self._touch(alloc)

    def _stop(self, alloc: Alloc, why: str) -> None:
        """Stop ``alloc``: its task gets its kill signal, then SIGKILL after the timeout."""
        if alloc.desired == "stop":
            return
        alloc.desired, alloc.desired_description = "stop", why
        self._touch(alloc)
        if alloc.terminal:
            return
        if alloc.process is None:
            self._finish_state(alloc, failed=False)
            return
        self._event(alloc, "Killing", "Sent interrupt")
        name = alloc.task.get("KillSignal") or "SIGINT"
        _killpg(alloc.process, getattr(signal, name))
        timeout = (alloc.task.get("KillTimeout") or 5_000_000_000) / 1e9
        alloc.killer = threading.Timer(timeout, _killpg, (alloc.process, signal.SIGKILL))
        alloc.killer.daemon = True
        alloc.killer.start()

    def _touch(self, alloc: Alloc) -> None:
        alloc.modify_index = self._bump()
        alloc.modify_time = _now_ns()
        self.alloc_index = self.index

    def _event(self, alloc: Alloc, kind: str, message: str, **details: Any) -> None:
        top = {k: details.pop(k) for k in ("ExitCode", "Signal") if k in details}
        alloc.events.append(
            {
                "Type": kind,
                "Time": _now_ns(),
                "DisplayMessage": message,
                "Message": "",
                "Details": {k: str(v) for k, v in details.items()},
                "FailsTask": details.get("fails_task") == "true",
                "ExitCode": top.get("ExitCode", 0),
                "Signal": top.get("Signal", 0),
            }
        )

    # -- allocations -----------------------------------------------------------------------

    def _alloc(self, alloc_id: str) -> Alloc:
        alloc = self.allocs.get(alloc_id)
        if alloc is None:
            raise ApiError(404, "alloc not found")
        return alloc

    def _stub(self, a: Alloc) -> dict[str, Any]:
        return {
            "ID": a.id,
            "EvalID": a.eval_id,
            "Name": a.name,
            "Namespace": a.namespace,
            "NodeID": self.node_id,
            "NodeName": self.node_name,
            "JobID": a.job_id,
            "JobType": a.job_type,
            "JobVersion": a.job_version,
            "TaskGroup": a.group,
            "DesiredStatus": a.desired,
            "DesiredDescription": a.desired_description,
            "ClientStatus": a.client_status,
            "ClientDescription": a.client_description,
            "TaskStates": {
                a.task["Name"]: {
                    "State": a.state,
                    "Failed": a.failed,
                    "Restarts": 0,
                    "LastRestart": None,
                    "StartedAt": a.started_at,
                    "FinishedAt": a.finished_at,
                    "Events": list(a.events),
                }
            },
            "FollowupEvalID": "",
            "RescheduleTracker": None,
            "CreateIndex": a.create_index,
            "ModifyIndex": a.modify_index,
            "CreateTime": a.create_time,
            "ModifyTime": a.modify_time,
        }

    def read_allocation(self, alloc_id: str) -> dict[str, Any]:
        with self.changed:
            a = self._alloc(alloc_id)
            record = self.jobs.get((a.namespace, a.job_id))
            resources = {"Cores": len(a.cores), "MemoryMB": a.memory_mb}
            return {
                **self._stub(a),
                "Job": record.job if record is not None else None,
                "AllocatedResources": {
                    "Tasks": {
                        a.task["Name"]: {
                            "Cpu": {"ReservedCores": a.cores},
                            "Memory": {"MemoryMB": a.memory_mb},
                            "Devices": [
                                {"Name": n, "DeviceIDs": [f"fake-{n}-{i}" for i in range(c)]}
                                for n, c in a.devices.items()
                            ],
                        }
                    }
                },
                "Resources": resources,
            }

    def stop_allocation(self, alloc_id: str) -> dict[str, Any]:
        with self.changed:
            alloc = self._alloc(alloc_id)
            record = self.jobs[alloc.namespace, alloc.job_id]
            self._stop(alloc, "alloc was stopped by user")
            ev = self._new_eval(record, "alloc-stop")
            self.changed.notify_all()
            return {"EvalID": ev["ID"], "Index": self.index}

    def logs(self, alloc_id: str, query: Any) -> Response:
        task, kind = query.get("task"), query.get("type")
        if not task:
            raise ApiError(400, "must include task name")
        if kind not in ("stdout", "stderr"):
            raise ApiError(400, "must include log type (stdout, stderr)")
        if _bool(query.get("follow")):
            raise ApiError(400, "follow is not supported by the fake Nomad API")
        origin = query.get("origin") or "start"
        if origin not in ("start", "end"):
            raise ApiError(400, 'origin must be "start" or "end"')
        offset = int(query.get("offset") or 0)
        with self.changed:
            alloc = self._alloc(alloc_id)
            if task != alloc.task["Name"]:
                raise ApiError(404, f'unknown task name "{task}"')
            path = alloc.dir / "alloc" / "logs" / f"{task}.{kind}.0"
        data = path.read_bytes()
        data = data[offset:] if origin == "start" else data[max(len(data) - offset, 0) :]
        if _bool(query.get("plain")):
            return Response(data, media_type="text/plain")
        frame = {"Data": base64.b64encode(data).decode(), "File": path.name, "Offset": len(data)}
        return JSONResponse(frame)


def _spec(job: dict[str, Any]) -> dict[str, Any]:
    """The parts of a job that make a new version when they change."""
    server = {"Status", "Stop", "Version", "CreateIndex", "ModifyIndex", "JobModifyIndex"}
    return {k: v for k, v in job.items() if k not in server | {"SubmitTime"}}


def _killpg(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the task's process group, unless the task was reaped (its id may be reused)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
