"""The supervisor of one deployed pipeline: ``python -m beampipe.manager.supervisor DIR``.

A process of its own per pipeline, started detached by the manager (``--detach``: it forks,
leaves the manager's session and prints its pid), so that it outlives the manager: a manager
that restarts finds it again through the files below. It runs the pipeline with a
:class:`~beampipe.launch.Launcher` whose :class:`~beampipe.launch.placement.Placement`
is the pipeline's backend, and answers commands on a ZeroMQ ROUTER socket.

Files in ``DIR`` (the pipeline's directory, ``HOME/pipelines/<id>``):

``deployment.json`` (written by the manager, read here; :class:`Deployment`)
    ``{id, pipeline (Pipeline.to_dict()), backend, backend_options, window, window_bytes,
    drain_timeout, workdir, command_bind, token_file, ui}``; ``ui`` is ``{host, port}`` of the
    live viewer (``deploy --ui``) or null.
``supervisor.json`` (written once the command socket is bound and the viewer serves)
    ``{pid, host, endpoint, started, viewer}``: ``endpoint`` is the command socket
    (``tcp://HOST:PORT``), ``started`` a Unix time, ``viewer`` the live viewer's URL or null.
    The viewer (:class:`beampipe.viewer.Viewer`, read-only) serves while the pipeline runs and
    is stopped before ``result.json`` is written.
``events.log``
    JSON lines ``{time, event: "failure", text}`` and ``{time, event: "stream_end", node,
    replica, stream, messages, t_first, t_last}``.
``logs/{node}.{replica}[.{incarnation}].log``
    the node processes' output (written by the launcher).
``supervisor.log``
    the supervisor's own output (tracebacks, if it crashes).
``result.json`` (written at the end)
    ``{exit_code, state, errors, wall_time, finished, sent, metrics: {node: NodeMetrics
    snapshot}, status: the launcher's last status}``; ``state`` is ``done`` (exit code 0),
    ``failed`` (1) or ``stopped`` (130).

Commands (one msgpack map per request, one per reply, on the command socket; any number of
envelope frames before the body, so REQ and DEALER clients both work). The socket admits only
clients that present the manager's token as PLAIN credentials
(:class:`beampipe.transport.security.Credentials`); others are refused at the handshake,
counted and logged:

* ``{"t": "status", "token": T}`` -> ``{"ok": true, "status": launcher.status()}``
* ``{"t": "scale", "node": N, "replicas": R, "token": T}`` -> ``{"ok": true}``
* ``{"t": "stop", "token": T}`` -> ``{"ok": true, "state": "draining"}`` (the first drains the
  pipeline, a second one stops it at once)

A refused request gets ``{"ok": false, "status": S, "error": text}``: ``S`` is 403 for a
missing or wrong token, 400 for a malformed request, 422 for a ``scale`` the launcher refuses,
500 for an unexpected error; each is logged (``supervisor.log``, ``events.log``) and counted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import msgpack
import zmq
from pydantic import BaseModel, ConfigDict, Field

from beampipe.config import Backend, Pipeline, PipelineError, parse_pipeline
from beampipe.launch.backends import make_placement
from beampipe.launch.launcher import DRAIN_TIMEOUT, Launcher, RunResult
from beampipe.manager.auth import same_token
from beampipe.transport.security import Credentials, Gate
from beampipe.viewer import ViewerUnavailable, check_packages, open_viewer

DEPLOYMENT = "deployment.json"
SUPERVISOR = "supervisor.json"
RESULT = "result.json"
EVENTS = "events.log"
LOG = "supervisor.log"

STATES = {0: "done", 1: "failed", 130: "stopped"}
"""The pipeline's final state by the run's exit code."""


class ViewerOptions(BaseModel):
    """Where the live viewer of a deployed pipeline listens (``deploy --ui``), as ``run --ui``.

    Attributes:
        host: address to listen on (``0.0.0.0``: every interface).
        port: TCP port; 0 lets the OS choose a free one.
        allowed_hosts: more names it may be reached by (``--ui-allowed-host``).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    allowed_hosts: list[str] = []


class CannotStart(Exception):
    """The deployment cannot start; the message says why and what to check."""


class Deployment(BaseModel):
    """``deployment.json``: everything the supervisor needs to run the pipeline.

    Attributes:
        id: the pipeline id.
        pipeline: :meth:`Pipeline.to_dict` of the validated pipeline.
        backend: ``local``, ``slurm`` or ``nomad``.
        backend_options: keyword arguments of the backend's placement
            (:func:`beampipe.launch.backends.make_placement`).
        window, window_bytes, drain_timeout: as :class:`~beampipe.launch.Launcher`'s.
        workdir: the working directory of the run (where ``deploy`` was called): relative
            output paths of sinks are relative to it, as with ``beampipe run``.
        command_bind: the address the command socket binds (``tcp://HOST:*``).
        token_file: the manager's token file; commands must carry its token.
        ui: where the live viewer listens; None: no viewer.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    pipeline: dict[str, Any]
    backend: Backend
    backend_options: dict[str, Any] = {}
    window: int = 64
    window_bytes: int = 64 << 20
    drain_timeout: float = DRAIN_TIMEOUT
    workdir: str
    command_bind: str = "tcp://127.0.0.1:*"
    token_file: str
    ui: ViewerOptions | None = None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


class EventLog:
    """The launcher's observer: failures and stream ends, as JSON lines in ``events.log``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, event: str, **fields: Any) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"time": time.time(), "event": event, **fields}) + "\n")

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        """Not logged: the live counters are in ``status``."""

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        fields = {k: report.get(k) for k in ("stream", "messages", "t_first", "t_last")}
        self._write("stream_end", node=node, replica=replica, **fields)

    def failure(self, text: str) -> None:
        self._write("failure", text=text)


class Supervisor:
    """Runs the pipeline of the directory ``rundir`` (see the module docstring), in the
    deployment's ``workdir`` (it changes the process's working directory).

    Raises:
        OSError, pydantic.ValidationError: ``deployment.json`` or the token file cannot be read.
        ValueError, ImportError: the backend cannot be built (:func:`make_placement`).
        CannotStart: the viewer's packages are missing, or its address cannot be bound.
    """

    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.deployment = Deployment.model_validate_json((rundir / DEPLOYMENT).read_text())
        d = self.deployment
        # Relative output paths, and the node processes, start in the deployment's workdir.
        os.chdir(d.workdir)
        self.token = Path(d.token_file).read_text().strip()
        self.pipeline = Pipeline.from_dict(d.pipeline)
        # Worker modules next to the pipeline file are importable (scale checks node classes).
        sys.path.insert(0, str(self.pipeline.base_dir))
        self.viewer = _viewer(self.pipeline, d.ui) if d.ui is not None else None
        events = EventLog(rundir / EVENTS)
        self.launcher = Launcher(
            self.pipeline,
            events if self.viewer is None else self.viewer.observer(events),
            window=d.window,
            window_bytes=d.window_bytes,
            drain_timeout=d.drain_timeout,
            placement=make_placement(d.backend, d.backend_options),
            rundir=rundir,
        )
        self.events, self.ctx = events, zmq.Context()
        self.gate = Gate(self.ctx, Credentials(self.token), on_refuse=self._refused)
        self.commands = self.ctx.socket(zmq.ROUTER)
        self.commands.setsockopt(zmq.LINGER, 0)
        self.gate.serve(self.commands, "the supervisor's command socket")
        self.refused_requests = 0  # answered with an error

    def run(self) -> RunResult:
        """Bind the command socket, start the viewer (if any), write ``supervisor.json``, run
        the pipeline to its end, stop the viewer and write ``result.json``."""
        try:
            self.commands.bind(self.deployment.command_bind)
            endpoint = self.commands.getsockopt_string(zmq.LAST_ENDPOINT)
            if self.viewer is not None:
                self.viewer.start(self.launcher)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "endpoint": endpoint,
                "started": time.time(),
                "viewer": self.viewer.url if self.viewer is not None else None,
            }
            write_json(self.rundir / SUPERVISOR, info)
            self.launcher.watch(self.commands, self._serve)
            result = self.launcher.run()
            status = self.launcher.status()
            # No terminal keeps a deployed pipeline's viewer open: it ends with the run.
            self._stop_viewer()
            write_result(self.rundir, result, status)
            return result
        finally:
            self._stop_viewer()
            self._tally()
            self.gate.close()
            self.ctx.destroy(linger=0)

    def _refused(self, text: str) -> None:
        """A line in ``supervisor.log`` and ``events.log`` (from any thread)."""
        print(text, file=sys.stderr, flush=True)
        self.events.failure(text)

    def _tally(self) -> None:
        if self.gate.refused or self.refused_requests:  # said once more at the end
            self._refused(
                f"refused {self.gate.refused} connections without the manager's token and "
                f"{self.refused_requests} malformed or unauthorised requests"
            )

    def _stop_viewer(self) -> None:
        if self.viewer is not None:
            viewer, self.viewer = self.viewer, None
            viewer.stop()

    def _serve(self) -> None:
        """Answer the requests waiting; whatever a request holds, it gets an answer and the
        pipeline goes on (a refused one is logged and counted)."""
        while self.commands.poll(0):
            *envelope, body = self.commands.recv_multipart()
            try:
                answer = self._answer(body)
            except Exception as exc:
                answer = {"ok": False, "status": 500, "error": f"{type(exc).__name__}: {exc}"}
            if not answer["ok"]:
                self.refused_requests += 1
                self._refused(f"refused a request ({answer['status']}): {answer['error']}")
            self.commands.send_multipart([*envelope, msgpack.packb(answer)])

    def _answer(self, body: bytes) -> dict[str, Any]:
        try:
            request = msgpack.unpackb(body, raw=False)
        except Exception as exc:  # msgpack raises ValueError, TypeError (unhashable keys)...
            return {"ok": False, "status": 400, "error": f"not a msgpack request: {exc}"}
        if not isinstance(request, dict):
            return {"ok": False, "status": 400, "error": "a request is a msgpack map"}
        if not same_token(request.get("token"), self.token):
            return {"ok": False, "status": 403, "error": "missing or wrong token"}
        kind = request.get("t")
        if kind == "status":
            return {"ok": True, "status": self.launcher.status()}
        if kind == "stop":
            self.launcher.drain("beampipe stop")
            return {"ok": True, "state": "draining"}
        if kind == "scale":
            node, replicas = request.get("node"), request.get("replicas")
            if not isinstance(node, str) or not isinstance(replicas, int):
                error = "scale needs node (a string) and replicas (an integer)"
                return {"ok": False, "status": 400, "error": error}
            try:
                self.launcher.scale(node, replicas)
            except ValueError as exc:
                return {"ok": False, "status": 422, "error": str(exc)}
            return {"ok": True}
        return {"ok": False, "status": 400, "error": f"unknown request {kind!r}"}


def _viewer(pipeline: Pipeline, ui: ViewerOptions) -> Any:
    """The live viewer of ``pipeline`` (:class:`beampipe.viewer.Viewer`), bound to ``ui``.

    Raises:
        CannotStart: the ``ui`` extra's packages are missing, or the address cannot be bound.
    """
    try:
        return open_viewer(pipeline, ui.host, ui.port, ui.allowed_hosts)
    except ViewerUnavailable as exc:
        raise CannotStart(str(exc)) from None


def write_result(
    rundir: Path, result: RunResult, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``result.json`` for ``result`` (and the launcher's last ``status``); return it."""
    data = {
        "exit_code": result.exit_code,
        "state": STATES.get(result.exit_code, "failed"),
        "errors": result.errors,
        "wall_time": result.wall_time,
        "finished": time.time(),
        "sent": result.sent,
        "metrics": {node: m.snapshot() for node, m in result.metrics.items()},
        "status": status,
    }
    write_json(rundir / RESULT, data)
    return data


def _detach(rundir: Path) -> None:
    """Fork: the parent prints the child's pid and exits; the child leaves the session and
    writes its output to ``supervisor.log``."""
    pid = os.fork()
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    fd = os.open(rundir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


def validate(request: dict[str, Any]) -> dict[str, Any]:
    """The pipeline of a deployment request ``{file, text, base_dir, overrides, ui}`` validated
    as ``beampipe validate`` does, in this process (modules next to the file importable):
    :meth:`Pipeline.to_dict`. With ``ui`` true, the viewer's packages must be importable too.
    The manager runs it in a child process (``--validate``), in the deployment's working
    directory, so that its own process imports no node code.

    Raises:
        PipelineError: every problem found.
        CannotStart: ``ui`` is true and the ``ui`` extra's packages are missing.
    """
    sys.path.insert(0, request["base_dir"])
    pipeline = parse_pipeline(
        request["text"], request["file"], request["overrides"], request["base_dir"]
    )
    if request.get("ui"):
        try:
            check_packages()
        except ViewerUnavailable as exc:
            raise CannotStart(str(exc)) from None
    return pipeline.to_dict()


def main(argv: list[str] | None = None) -> int:
    """``python -m beampipe.manager.supervisor [--detach] DIR``: the run's exit code;
    ``... --validate``: a request as JSON on stdin, the pipeline dict as the last line of
    stdout (exit status 0) or its problems on stderr (exit status 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m beampipe.manager.supervisor",
        description="Run the deployed pipeline of DIR (see deployment.json) and answer commands.",
    )
    parser.add_argument("dir", type=Path, nargs="?", metavar="DIR", help="the pipeline's directory")
    parser.add_argument(
        "--detach", action="store_true", help="run in the background; print its pid and return"
    )
    parser.add_argument(
        "--validate", action="store_true", help="validate the deployment request on stdin"
    )
    args = parser.parse_args(argv)
    if args.validate:
        try:
            print(json.dumps(validate(json.load(sys.stdin))))
        except (PipelineError, CannotStart) as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    if args.dir is None:
        parser.error("DIR is required")
    rundir = args.dir.absolute()
    if args.detach:
        _detach(rundir)
    try:
        return Supervisor(rundir).run().exit_code
    except Exception as exc:
        if isinstance(exc, CannotStart):  # a clear reason: no traceback needed
            text = str(exc)
            print(text, file=sys.stderr)
        else:
            text = f"the supervisor of {rundir} failed: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        if not (rundir / RESULT).exists():
            write_result(rundir, RunResult(1, 0.0, [text]))
        return 1


if __name__ == "__main__":
    sys.exit(main())
