"""The manager: ``beampipe manager``, an HTTP control API over the deployed pipelines.

:class:`Manager` keeps the pipelines in a SQLite table (:mod:`beampipe.manager.store`), starts
one supervisor per deployed pipeline (:mod:`beampipe.manager.supervisor`) and talks to it over
its ZeroMQ command socket; :func:`create_app` serves it with FastAPI (OpenAPI document at
``/openapi.json``, interactive docs at ``/docs``; see docs/manager.md):

* ``GET /health``: always open; the manager's pid.
* ``POST /pipelines``: deploy a pipeline file (validated as ``beampipe validate`` does: 422 with
  the same messages), with its live viewer if ``ui`` is given. ``GET /pipelines``: every
  pipeline. ``GET /pipelines/{id}``: its status. Both give the viewer's URL (``viewer``) while
  the pipeline runs.
* ``GET /pipelines/{id}/logs/{node}``: a node replica's log (``replica``, ``tail``, ``follow``).
* ``POST /pipelines/{id}/scale`` ``{node, replicas}``; ``POST /pipelines/{id}/stop``: drain.

Every request that changes something needs ``Authorization: Bearer TOKEN`` (the token of
:mod:`beampipe.manager.auth`): without one it is refused with 401, with a wrong one with 403,
and nothing changes. Reading is open unless the manager runs with ``protect_reads``.

The manager holds no state a restart would lose: the table, the pipelines' directories and the
supervisors (detached processes) are all found again by a new manager.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import msgpack
import uvicorn
import zmq
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from beampipe.config import Backend, Pipeline
from beampipe.launch.backends import make_placement
from beampipe.manager.auth import ensure_token, same_token, token_path
from beampipe.manager.store import (
    ACTIVE,
    FINAL,
    MANAGER_JSON,
    MANAGER_LOCK,
    PipelineRecord,
    Store,
)
from beampipe.manager.supervisor import (
    DEPLOYMENT,
    EVENTS,
    RESULT,
    SUPERVISOR,
    Deployment,
    ViewerOptions,
    write_json,
)

COMMAND_TIMEOUT = 3.0
"""Seconds a supervisor gets to answer a command."""
START_TIMEOUT = 30.0
"""Seconds a new supervisor gets to bind its command socket."""
VALIDATE_TIMEOUT = 120.0
"""Seconds the validation of a pipeline file may take (it imports the node classes)."""
FOLLOW_INTERVAL = 0.25
"""Seconds between looks at a followed log file that has no new lines."""
EVENTS_SHOWN = 20
"""Most recent events of ``events.log`` in a pipeline's status."""


class ManagerRunning(RuntimeError):
    """Another manager holds this state home."""


class InvalidDeployment(ValueError):
    """A deployment request that cannot run: its message says why (HTTP 422)."""


class DeployRequest(BaseModel):
    """``POST /pipelines``: a pipeline file and how to run it (what ``beampipe deploy`` sends)."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="the pipeline file's name as the user gave it (for messages)")
    text: str = Field(description="the pipeline file's content (YAML)")
    base_dir: str = Field(description="absolute directory of the file: input paths are relative")
    workdir: str = Field(description="absolute working directory: output paths are relative")
    backend: Backend | None = Field(
        None, description="where to run it; default the file's `backend:` (else local)"
    )
    backend_options: dict[str, Any] = Field(
        {}, description="keyword arguments of the backend's placement, e.g. {partition: maxwell}"
    )
    overrides: dict[str, Any] = Field(
        {}, description='parameter overrides {"node.param": value}, as `--set`'
    )
    window: int = Field(32, ge=1, description="credit: messages in flight per pipe")
    window_mb: float = Field(64.0, gt=0, description="credit: MB in flight per pipe")
    ui: ViewerOptions | None = Field(
        None, description="serve the live viewer at {host, port} (port 0: any free), as `--ui`"
    )


class ScaleRequest(BaseModel):
    """``POST /pipelines/{id}/scale``."""

    model_config = ConfigDict(extra="forbid")

    node: str = Field(description="a worker node of the pipeline")
    replicas: int = Field(description="its new number of replicas")


class PipelineSummary(BaseModel):
    """One pipeline as ``GET /pipelines`` lists it."""

    id: str
    name: str
    backend: str
    state: str = Field(description="starting, running, draining, done, failed, stopped or lost")
    created: float = Field(description="Unix time of the deployment")
    uptime: float = Field(description="seconds since the deployment (until it finished)")
    exit_code: int | None = None
    viewer: str | None = Field(None, description="the live viewer's URL while it runs")


class Manager:
    """The deployed pipelines of state home ``home`` (see the module docstring).

    Raises:
        OSError: ``home`` cannot be created, or its token or database not written.
    """

    def __init__(self, home: Path, *, protect_reads: bool = False) -> None:
        self.home = home
        self.store = Store(home)
        self.token = ensure_token(home)
        self.protect_reads = protect_reads
        self.ctx = zmq.Context()

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    # -- supervisors ---------------------------------------------------------------------------

    def ask(self, record: PipelineRecord, request: dict[str, Any]) -> dict[str, Any] | None:
        """Send ``request`` to the pipeline's supervisor; its answer, or None if it does not
        answer within :data:`COMMAND_TIMEOUT`."""
        if record.supervisor_endpoint is None:
            return None
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(record.supervisor_endpoint)
            sock.send(msgpack.packb({**request, "token": self.token}))
            if not sock.poll(int(COMMAND_TIMEOUT * 1000)):
                return None
            return msgpack.unpackb(sock.recv(), raw=False)
        finally:
            sock.close()

    def _supervisor_alive(self, record: PipelineRecord) -> bool:
        """Whether the supervisor process still exists (a process on another host is taken
        to exist)."""
        if record.supervisor_pid is None:
            return False
        if record.supervisor_host not in (None, socket.gethostname()):
            return True
        proc = Path(f"/proc/{record.supervisor_pid}")
        if not Path("/proc/self").exists():  # no procfs: ask the kernel
            try:
                os.kill(record.supervisor_pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return state != "Z" and record.dir in cmdline  # not a zombie, nor a reused pid

    def _adopt(self, record: PipelineRecord) -> PipelineRecord:
        """Take the command endpoint from ``supervisor.json`` once the supervisor wrote it."""
        info = _read_json(Path(record.dir) / SUPERVISOR)
        if info is None:
            return record
        changes = {
            "supervisor_pid": info["pid"],
            "supervisor_host": info["host"],
            "supervisor_endpoint": info["endpoint"],
        }
        self.store.update(record.id, **changes)
        return PipelineRecord(**{**asdict(record), **changes})

    def _finish(self, record: PipelineRecord, result: dict[str, Any]) -> PipelineRecord:
        changes = {
            "state": result["state"],
            "exit_code": result["exit_code"],
            "finished": result["finished"],
        }
        self.store.update(record.id, **changes)
        return PipelineRecord(**{**asdict(record), **changes})

    def refresh(
        self, record: PipelineRecord
    ) -> tuple[PipelineRecord, dict[str, Any] | None, dict[str, Any] | None]:
        """The pipeline's record brought up to date, the supervisor's ``status`` answer (None
        if it did not answer) and ``result.json`` (None while it runs). A pipeline whose
        supervisor has gone without writing a result is marked ``lost``."""
        rundir = Path(record.dir)
        if record.state in FINAL:
            return record, None, _read_json(rundir / RESULT)
        if record.supervisor_endpoint is None:
            record = self._adopt(record)
        result = _read_json(rundir / RESULT)
        if result is None and not self._supervisor_alive(record):
            result = _read_json(rundir / RESULT)  # it may have just been written
            if result is None:
                changes = {"state": "lost", "finished": time.time()}
                self.store.update(record.id, **changes)
                return PipelineRecord(**{**asdict(record), **changes}), None, None
        reply = self.ask(record, {"t": "status"}) if result is None else None
        live = reply["status"] if reply is not None and reply.get("ok") else None
        if live is None and result is None:
            result = _read_json(rundir / RESULT)  # it may have finished meanwhile
        if result is not None:
            return self._finish(record, result), None, result
        if live is not None and live["state"] in ACTIVE and live["state"] != record.state:
            self.store.update(record.id, state=live["state"])
            record = PipelineRecord(**{**asdict(record), "state": live["state"]})
        return record, live, None

    def reconnect(self) -> None:
        """Find every pipeline that was running when the last manager stopped: its supervisor
        answers (it goes on), has finished (its result is taken) or is gone (``lost``)."""
        for record in self.store.all():
            if record.state in ACTIVE:
                self.refresh(record)

    def _start_supervisor(self, rundir: Path) -> int:
        """Start the detached supervisor of ``rundir``; its pid.

        Raises:
            RuntimeError: it did not start (its error output in the message).
        """
        done = subprocess.run(
            [sys.executable, "-m", "beampipe.manager.supervisor", "--detach", str(rundir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the supervisor did not start: {done.stderr.strip()}")
        return int(done.stdout.split()[-1])

    # -- requests ------------------------------------------------------------------------------

    def validate(self, request: DeployRequest) -> Pipeline:
        """The pipeline of ``request``, validated as ``beampipe validate`` does, in a child
        process started in the request's working directory (node classes are imported there,
        fresh each time, never in the manager).

        Raises:
            InvalidDeployment: what ``beampipe validate`` would report, a working directory
                that does not exist here, or a viewer (``ui``) whose packages are missing.
            RuntimeError: the validation itself failed (its output in the message).
        """
        fields = ("file", "text", "base_dir", "overrides")
        check = {name: getattr(request, name) for name in fields}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "beampipe.manager.supervisor", "--validate"],
                input=json.dumps({**check, "ui": request.ui is not None}),
                capture_output=True,
                text=True,
                cwd=request.workdir,
                timeout=VALIDATE_TIMEOUT,
            )
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidDeployment(
                f"working directory {request.workdir} does not exist on the manager's host"
            ) from None
        if done.returncode == 2:
            raise InvalidDeployment(done.stderr.strip())
        if done.returncode != 0:
            raise RuntimeError(f"validating the pipeline failed:\n{done.stderr.strip()}")
        return Pipeline.from_dict(json.loads(done.stdout.splitlines()[-1]))

    def deploy(self, request: DeployRequest) -> dict[str, Any]:
        """Validate, write ``deployment.json``, start the supervisor and wait until it answers
        (or has failed); the pipeline's status.

        Raises:
            InvalidDeployment: the file is not a valid pipeline.
            ValueError: the backend cannot take the options.
            ImportError: the backend's module cannot be imported.
            RuntimeError: the supervisor did not start.
        """
        pipeline = self.validate(request)
        backend = request.backend or pipeline.backend
        make_placement(backend, request.backend_options)
        pipelines = self.home / "pipelines"
        pipelines.mkdir(parents=True, exist_ok=True)
        while True:  # a fresh id: its directory did not exist
            pipeline_id = secrets.token_hex(4)
            rundir = pipelines / pipeline_id
            try:
                rundir.mkdir()
                break
            except FileExistsError:
                continue
        deployment = Deployment(
            id=pipeline_id,
            pipeline=pipeline.to_dict(),
            backend=backend,
            backend_options=request.backend_options,
            window=request.window,
            window_bytes=int(request.window_mb * 1e6),
            workdir=request.workdir,
            token_file=str(token_path(self.home)),
            ui=request.ui,
        )
        write_json(rundir / DEPLOYMENT, deployment.model_dump(mode="json"))
        record = PipelineRecord(
            id=pipeline_id,
            name=pipeline.name,
            backend=backend,
            dir=str(rundir),
            state="starting",
            created=time.time(),
            supervisor_host=socket.gethostname(),
        )
        try:  # stored once its pid is known, so that no look at it finds it gone
            record.supervisor_pid = self._start_supervisor(rundir)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            record.state, record.finished = "failed", time.time()
            self.store.add(record)
            raise RuntimeError(str(exc)) from None
        self.store.add(record)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            record = self._adopt(record)
            if record.supervisor_endpoint is not None or (rundir / RESULT).exists():
                break
            if not self._supervisor_alive(record):
                break
            time.sleep(0.05)
        return self.status(record.id)

    def get(self, pipeline_id: str) -> PipelineRecord:
        """Raises: HTTPException 404 for an unknown id."""
        record = self.store.get(pipeline_id)
        if record is None:
            raise HTTPException(404, f"no pipeline {pipeline_id!r} (`beampipe list` shows them)")
        return record

    def summary(self, record: PipelineRecord) -> dict[str, Any]:
        """The facts ``GET /pipelines`` lists; ``viewer`` is the URL of the live viewer while
        the pipeline runs (its supervisor stops it at the end), else None."""
        end = record.finished if record.finished is not None else time.time()
        running = record.state in ACTIVE
        info = _read_json(Path(record.dir) / SUPERVISOR) if running else None
        return {
            "id": record.id,
            "name": record.name,
            "backend": record.backend,
            "state": record.state,
            "created": record.created,
            "uptime": end - record.created,
            "exit_code": record.exit_code,
            "viewer": (info or {}).get("viewer"),
        }

    def status(self, pipeline_id: str) -> dict[str, Any]:
        """The stored facts of the pipeline merged with its supervisor's live status, or with
        its result once it has finished (docs/manager.md lists the keys). A final ``state``
        comes with the result: until the supervisor has written it, the state stays
        ``running`` or ``draining`` even when every replica is done."""
        record, live, result = self.refresh(self.get(pipeline_id))
        out: dict[str, Any] = {
            **self.summary(record),
            "dir": record.dir,
            "finished": record.finished,
            "supervisor": {
                "pid": record.supervisor_pid,
                "host": record.supervisor_host,
                "endpoint": record.supervisor_endpoint,
                "answering": live is not None,
            },
            "placement": {},
            "replicas": [],
            "events": _tail_events(Path(record.dir) / EVENTS),
        }
        final = (result or {}).get("status") or {}
        for key in ("placement", "replicas"):
            out[key] = (live or final).get(key, out[key])
        if result is not None:
            for key in ("errors", "wall_time", "metrics", "sent"):
                out[key] = result[key]
        return out

    def command(self, pipeline_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Send a state-changing ``request`` to a running pipeline's supervisor.

        Raises:
            HTTPException: 404 unknown id, 409 the pipeline is not running, 503 the supervisor
                does not answer, or the supervisor's refusal (422: e.g. an impossible scale).
        """
        record, _, _ = self.refresh(self.get(pipeline_id))
        if record.state not in ACTIVE:
            raise HTTPException(409, f"pipeline {pipeline_id} has finished ({record.state})")
        reply = self.ask(record, request)
        if reply is None:
            raise HTTPException(
                503, f"the supervisor of pipeline {pipeline_id} does not answer; try again"
            )
        if not reply.get("ok"):
            raise HTTPException(reply.get("status", 500), reply.get("error", "refused"))
        return reply

    def log_files(self, record: PipelineRecord, node: str, replica: int) -> list[Path]:
        """The log files of one node replica, oldest process first.

        Raises:
            HTTPException 404: no such node, or no log of that replica (yet).
        """
        deployment = _read_json(Path(record.dir) / DEPLOYMENT) or {}
        nodes = list((deployment.get("pipeline") or {}).get("nodes", {}))
        if node not in nodes:
            raise HTTPException(
                404, f"pipeline {record.id} has no node {node!r} (nodes: {', '.join(nodes)})"
            )
        logs = Path(record.dir) / "logs"
        prefix = f"{node}.{replica}."
        found = []
        for path in logs.glob("*.log") if logs.is_dir() else []:
            rest = path.name[len(prefix) : -len(".log")]
            if path.name.startswith(prefix) and (rest == "" or rest.isdigit()):
                found.append((int(rest or 0), path))
        if not found:
            raise HTTPException(404, f"no log of node {node!r} replica {replica} (yet)")
        return [path for _, path in sorted(found)]

    def follow(
        self, record: PipelineRecord, node: str, replica: int, tail: int | None
    ) -> Iterator[bytes]:
        """The replica's log from the last ``tail`` lines (all if None) on, going on with the
        lines written later (and with a restarted process's new log) until the pipeline has
        finished."""
        path = self.log_files(record, node, replica)[-1]
        with contextlib.ExitStack() as files:
            f = files.enter_context(open(path, "rb"))
            yield b"".join(_tail(f, tail))
            checked = 0.0
            while True:
                chunk = f.read()
                if chunk:
                    yield chunk
                    continue
                newest = self.log_files(record, node, replica)[-1]
                if newest != path:
                    path = newest
                    files.close()
                    f = files.enter_context(open(path, "rb"))
                    continue
                if time.monotonic() - checked > 1.0:
                    checked = time.monotonic()
                    record, _, _ = self.refresh(record)
                    if record.state in FINAL:
                        yield f.read()
                        return
                time.sleep(FOLLOW_INTERVAL)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _tail(f: Any, lines: int | None) -> list[bytes]:
    """The last ``lines`` lines of the open file ``f`` (all if None), read to its end."""
    if lines is None:
        return [f.read()]
    return list(deque(f, maxlen=lines)) if lines > 0 else []


def _tail_events(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in deque(f, maxlen=EVENTS_SHOWN)]
    except FileNotFoundError:
        return []


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="the manager's token: the content of $BEAMPIPE_HOME/token",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _check(manager: Manager, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None:
        raise HTTPException(
            401,
            "this request needs the manager's token: Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not same_token(credentials.credentials, manager.token):
        raise HTTPException(403, "wrong token (the manager's is in its state home's token file)")


def create_app(manager: Manager) -> FastAPI:
    """The FastAPI app of ``manager`` (endpoints: module docstring and docs/manager.md)."""
    app = FastAPI(
        title="beampipe manager",
        description="Deploy, watch, scale and stop beampipe pipelines (docs/manager.md).",
    )

    def write_access(credentials: Credentials) -> None:
        _check(manager, credentials)

    def read_access(credentials: Credentials) -> None:
        if manager.protect_reads:
            _check(manager, credentials)

    Write = [Depends(write_access)]
    Read = [Depends(read_access)]

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": exc.detail}, exc.status_code, headers=exc.headers)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the manager answers (never needs the token)."""
        return {"service": "beampipe-manager", "pid": os.getpid()}

    @app.post("/pipelines", status_code=201, dependencies=Write)
    def deploy(request: DeployRequest) -> dict[str, Any]:
        """Validate the pipeline file, start its supervisor; the new pipeline's status (422:
        the file's problems, as `beampipe validate` reports them)."""
        try:
            return manager.deploy(request)
        except (ValueError, ImportError) as exc:
            raise HTTPException(422, str(exc)) from None
        except RuntimeError as exc:
            raise HTTPException(500, str(exc)) from None

    @app.get("/pipelines", dependencies=Read)
    def pipelines() -> list[PipelineSummary]:
        """Every deployed pipeline, oldest first."""
        out = []
        for record in manager.store.all():
            if record.state in ACTIVE:
                record, _, _ = manager.refresh(record)
            out.append(PipelineSummary(**manager.summary(record)))
        return out

    @app.get("/pipelines/{pipeline_id}", dependencies=Read)
    def status(pipeline_id: str) -> dict[str, Any]:
        """The pipeline: stored facts, the supervisor's live status per node replica, or its
        final result; state ``lost`` if its supervisor has gone without one."""
        return manager.status(pipeline_id)

    @app.get("/pipelines/{pipeline_id}/logs/{node}", dependencies=Read)
    def logs(
        pipeline_id: str,
        node: str,
        replica: Annotated[int, Query(ge=0, description="the replica")] = 0,
        tail: Annotated[int | None, Query(ge=0, description="only the last lines")] = None,
        follow: Annotated[bool, Query(description="go on until the pipeline ends")] = False,
    ) -> StreamingResponse:
        """The log of one node replica's current process (text)."""
        record = manager.get(pipeline_id)
        path = manager.log_files(record, node, replica)[-1]
        if follow:
            content: Any = manager.follow(record, node, replica, tail)
        else:
            with open(path, "rb") as f:
                content = iter([b"".join(_tail(f, tail))])
        return StreamingResponse(content, media_type="text/plain; charset=utf-8")

    @app.post("/pipelines/{pipeline_id}/scale", dependencies=Write)
    def scale(pipeline_id: str, request: ScaleRequest) -> dict[str, Any]:
        """Change a worker's number of replicas while the pipeline runs (422 if it cannot)."""
        manager.command(pipeline_id, {"t": "scale", **request.model_dump()})
        return {"id": pipeline_id, "node": request.node, "replicas": request.replicas}

    @app.post("/pipelines/{pipeline_id}/stop", status_code=202, dependencies=Write)
    def stop(pipeline_id: str) -> dict[str, Any]:
        """Drain the pipeline: sources end their streams, everything sent is processed, files
        are closed. A second stop stops every process at once."""
        reply = manager.command(pipeline_id, {"t": "stop"})
        return {"id": pipeline_id, "state": reply["state"]}

    return app


def _url(host: str, port: int) -> str:
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    shown = socket.gethostname() if unspecified else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def serve(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    protect_reads: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the manager of state home ``home`` until SIGINT or SIGTERM: take its lock, find the
    running pipelines again, bind ``host:port`` (0: any free port), write ``manager.json``
    ``{url, pid, host, started, protect_reads}``, call ``ready(url)`` and serve.

    Raises:
        ManagerRunning: another manager serves this home.
        OSError: the address cannot be bound, or ``home`` not written.
    """
    home.mkdir(parents=True, exist_ok=True)
    lock = open(home / MANAGER_LOCK, "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        info = _read_json(home / MANAGER_JSON) or {}
        raise ManagerRunning(
            f"a manager already serves {home} (pid {info.get('pid')}, {info.get('url')})"
        ) from None
    manager = Manager(home, protect_reads=protect_reads)
    try:
        manager.reconnect()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
        url = _url(host, sock.getsockname()[1])
        info = {
            "url": url,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "protect_reads": protect_reads,
        }
        write_json(home / MANAGER_JSON, info)
        if ready is not None:
            ready(url)
        config = uvicorn.Config(
            create_app(manager), log_level="warning", timeout_graceful_shutdown=2
        )
        # uvicorn shuts down gracefully at SIGINT/SIGTERM, then raises the signal again with
        # the handlers it found: these, so that the files are cleaned up below.
        previous = {s: signal.signal(s, _stopped) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except _Stopped:
            pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    finally:
        if (_read_json(home / MANAGER_JSON) or {}).get("pid") == os.getpid():
            (home / MANAGER_JSON).unlink()
        manager.close()
        lock.close()


class _Stopped(Exception):
    """SIGINT or SIGTERM after uvicorn's graceful shutdown."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped
