"""The manager: ``beampipe manager``, an HTTP control API over the deployed pipelines.

:class:`~beampipe.manager.service.Manager` keeps the pipelines in a SQLite table
(:mod:`beampipe.manager.store`), starts one supervisor per deployed pipeline
(:mod:`beampipe.manager.supervisor`) and talks to it over its ZeroMQ command socket;
:func:`create_app` serves it with FastAPI (OpenAPI document at
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
and nothing changes. Reading is open unless the manager runs with ``protect_reads``; a reader
without the token is not shown the pipeline's directory, its log paths nor its supervisor's
command endpoint. A request whose ``Host`` is not one of the manager's names is refused with
400 (:mod:`beampipe.viewer.hosts`), a body over :data:`MAX_BODY` bytes with 413, unread.

The manager holds no state a restart would lose: the table, the pipelines' directories and the
supervisors (detached processes) are all found again by a new manager.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from beampipe.manager.auth import ensure_home, same_token
from beampipe.manager.logs import follow_log, log_files, tail_lines
from beampipe.manager.models import DeployRequest, PipelineSummary, ScaleRequest
from beampipe.manager.service import Manager, _read_json
from beampipe.manager.store import (
    ACTIVE,
    MANAGER_JSON,
    MANAGER_LOCK,
)
from beampipe.manager.supervisor import (
    write_json,
)
from beampipe.viewer.hosts import LOCAL_NAMES, HostCheck, Refusals, allowed_hosts

MAX_BODY = 4 * 1024 * 1024
"""Bytes a request body may have (a deployment carries its pipeline file: a few KB)."""


class ManagerRunning(RuntimeError):
    """Another manager holds this state home."""


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


def create_app(manager: Manager, hosts: Sequence[str] = LOCAL_NAMES) -> FastAPI:
    """The FastAPI app of ``manager`` (endpoints: module docstring and docs/manager.md),
    answering requests for the ``Host`` names ``hosts`` only."""
    app = FastAPI(
        title="beampipe manager",
        description="Deploy, watch, scale and stop beampipe pipelines (docs/manager.md).",
        max_body_size=MAX_BODY,
    )
    app.add_middleware(
        HostCheck, hosts=hosts, refusals=Refusals(), server="manager", option="--allowed-host"
    )

    def write_access(credentials: Credentials) -> None:
        _check(manager, credentials)

    def read_access(credentials: Credentials) -> bool:
        """Whether the reader gave the token (needed with ``protect_reads``)."""
        if manager.protect_reads:
            _check(manager, credentials)
            return True
        return credentials is not None and same_token(credentials.credentials, manager.token)

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

    @app.get("/pipelines/{pipeline_id}")
    def status(pipeline_id: str, token_given: bool = Depends(read_access)) -> dict[str, Any]:
        """The pipeline: stored facts, the supervisor's live status per node replica, or its
        final result; state ``lost`` if its supervisor has gone without one. Without the
        token: without ``dir``, the replicas' ``log`` and the supervisor's ``endpoint``."""
        return manager.status(pipeline_id, private=token_given)

    _pipeline_routes(app, manager, Write, Read)
    return app


def _pipeline_routes(app: FastAPI, manager: Manager, Write: list[Any], Read: list[Any]) -> None:
    """The routes of one pipeline: its logs, scale and stop."""

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
        path = log_files(record, node, replica)[-1]
        if follow:
            content: Any = follow_log(record, node, replica, tail, manager.refresh)
        else:
            with open(path, "rb") as f:
                content = iter([b"".join(tail_lines(f, tail))])
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
    extra_hosts: Sequence[str] = (),
) -> None:
    """Run the manager of state home ``home`` until SIGINT or SIGTERM: take its lock, find the
    running pipelines again, bind ``host:port`` (0: any free port), write ``manager.json``
    ``{url, pid, host, started, protect_reads}``, call ``ready(url)`` and serve requests for
    the localhost names, this machine's names (unless ``host`` is loopback) and
    ``extra_hosts`` (:func:`beampipe.viewer.hosts.allowed_hosts`).

    Raises:
        ManagerRunning: another manager serves this home.
        OSError: the address cannot be bound, or ``home`` not written.
        ValueError: an ``extra_hosts`` entry is not a host name.
    """
    hosts = allowed_hosts(host, extra_hosts)
    ensure_home(home)
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
            create_app(manager, hosts), log_level="warning", timeout_graceful_shutdown=2
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
