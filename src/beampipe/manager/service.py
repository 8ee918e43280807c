"""The manager's work behind its HTTP API: deploy (one detached supervisor per pipeline), list,
status, logs, scale and stop, over the SQLite table (:mod:`beampipe.manager.store`) and the
supervisors' ZeroMQ command sockets. See :mod:`beampipe.manager.api` for the routes."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import zmq
from fastapi import HTTPException

from beampipe.config import Pipeline
from beampipe.launch.backends import make_placement
from beampipe.manager.auth import ensure_token, token_path
from beampipe.manager.models import DeployRequest
from beampipe.manager.store import (
    ACTIVE,
    FINAL,
    PipelineRecord,
    Store,
)
from beampipe.manager.supervisor import (
    DEPLOYMENT,
    EVENTS,
    RESULT,
    SUPERVISOR,
    Deployment,
    write_json,
)
from beampipe.transport.security import Credentials

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


class InvalidDeployment(ValueError):
    """A deployment request that cannot run: its message says why (HTTP 422)."""


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
        Credentials(self.token).client(sock)  # the supervisor admits the token's holders only
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

    def status(self, pipeline_id: str, *, private: bool = True) -> dict[str, Any]:
        """The stored facts of the pipeline merged with its supervisor's live status, or with
        its result once it has finished (docs/manager.md lists the keys). A final ``state``
        comes with the result: until the supervisor has written it, the state stays
        ``running`` or ``draining`` even when every replica is done. Unless ``private``
        (a reader without the token), without what leads to the pipeline's files and
        command socket: ``dir``, the replicas' ``log`` and the supervisor's ``endpoint``."""
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
            "hangs": [],
            "events": _tail_events(Path(record.dir) / EVENTS),
        }
        final = (result or {}).get("status") or {}
        for key in ("placement", "replicas", "hangs"):
            out[key] = (live or final).get(key, out[key])
        if result is not None:
            for key in ("errors", "wall_time", "metrics", "sent"):
                out[key] = result[key]
        if not private:
            del out["dir"], out["supervisor"]["endpoint"]
            out["replicas"] = [{k: v for k, v in r.items() if k != "log"} for r in out["replicas"]]
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _tail_events(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in deque(f, maxlen=EVENTS_SHOWN)]
    except FileNotFoundError:
        return []
