"""The client of the manager's HTTP API (:mod:`beampipe.manager.api`), used by ``beampipe deploy
| list | status | logs | scale | stop``.

The manager of a state home (:func:`beampipe.manager.store.state_home`) is found through its
``manager.json``; :func:`start_manager` starts one in the background when none answers. The
token is read from the home's ``token`` file and sent with every request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from beampipe.config import read_pipeline_file
from beampipe.manager.auth import ensure_home, read_token, token_path
from beampipe.manager.store import FINAL, MANAGER_JSON, MANAGER_LOG

START_TIMEOUT = 60.0
"""Seconds a manager started by :func:`start_manager` gets to answer."""
REQUEST_TIMEOUT = 120.0
"""Seconds a request may take (a deployment imports the pipeline's node classes)."""


class ManagerError(Exception):
    """The manager refused a request, or cannot be reached; the message says what to check.

    Attributes:
        status: the HTTP status of the refusal (None if there was no answer).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def manager_url(home: Path) -> str | None:
    """The URL of the manager of ``home`` if it runs and answers, else None."""
    try:
        info = json.loads((home / MANAGER_JSON).read_text())
        reply = httpx.get(f"{info['url']}/health", timeout=5)
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        return None
    if reply.status_code != 200 or reply.json().get("pid") != info.get("pid"):
        return None
    return str(info["url"])


def start_manager(home: Path, timeout: float = START_TIMEOUT) -> str:
    """Start ``beampipe manager`` for ``home`` in the background (its own session, output in
    ``home/manager.log``) and wait until it answers; its URL. If another manager started at
    the same time, that one's URL.

    Raises:
        ManagerError: it exited, or did not answer within ``timeout`` seconds (the message
            holds the end of its log).
    """
    ensure_home(home)
    log = home / MANAGER_LOG
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "beampipe", "manager"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "BEAMPIPE_HOME": str(home)},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = manager_url(home)
        if url is not None:
            return url
        if proc.poll() is not None:
            url = manager_url(home)
            if url is not None:
                return url
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-10:])
            raise ManagerError(
                f"the manager did not start (exit status {proc.returncode}); "
                f"last lines of {log}:\n{tail}"
            )
        time.sleep(0.1)
    raise ManagerError(f"the manager started for {home} did not answer in {timeout:.0f} s: {log}")


class ManagerClient:
    """Requests to the manager at ``url``, with ``token`` (None: without one).

    Every method raises :class:`ManagerError` when the manager refuses the request (its
    message) or does not answer.
    """

    def __init__(self, url: str, token: str | None, home: Path | None = None) -> None:
        self.url = url
        self.home = home
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=REQUEST_TIMEOUT)

    @classmethod
    def find(cls, home: Path, *, start: bool = False) -> ManagerClient:
        """The client of the manager of ``home``; with ``start``, one is started if none
        answers (:func:`start_manager`).

        Raises:
            ManagerError: no manager answers (and ``start`` is false), or it did not start.
        """
        url = manager_url(home)
        if url is None:
            if not start:
                raise ManagerError(
                    f"no manager is running for {home} (start one with `beampipe manager`; "
                    "`beampipe deploy` starts one when needed)"
                )
            url = start_manager(home)
        try:
            token: str | None = read_token(home)
        except FileNotFoundError:
            token = None
        return cls(url, token, home)

    def close(self) -> None:
        self.http.close()

    def _check(self, reply: httpx.Response) -> httpx.Response:
        if reply.status_code < 400:
            return reply
        try:
            message = reply.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text.strip() or reply.reason_phrase
        if not isinstance(message, str):  # a request the API's models reject
            message = json.dumps(message)
        if reply.status_code in (401, 403):
            where = token_path(self.home) if self.home is not None else "the state home"
            message += (
                f" (the token is read from {where}: run the command as the manager's user, "
                "with the manager's BEAMPIPE_HOME)"
            )
        raise ManagerError(message, reply.status_code)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ManagerError(f"the manager at {self.url} does not answer: {exc}") from None
        return self._check(reply).json()

    def deploy(
        self,
        file: Path,
        *,
        backend: str | None = None,
        backend_options: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
        window: int = 64,
        window_mb: float = 64.0,
        workdir: Path | None = None,
        ui: tuple[str, int] | None = None,
        ui_allowed_hosts: list[str] | None = None,
    ) -> dict[str, Any]:
        """Deploy the pipeline file ``file`` (read here; input paths relative to its folder,
        output paths to ``workdir``, default the current directory); the new pipeline's status.
        ``ui``: serve its live viewer at ``(host, port)`` (port 0: any free one) while it runs;
        the status's ``viewer`` is its URL; ``ui_allowed_hosts``: more names it may be reached
        by (``--ui-allowed-host``).

        Raises:
            ManagerError: 422 with the file's problems, as ``beampipe validate`` reports them.
            PipelineError: ``file`` cannot be read, is not UTF-8 or is too large.
        """
        body = {
            "file": str(file),
            "text": read_pipeline_file(file),
            "base_dir": str(file.resolve().parent),
            "workdir": str((workdir or Path.cwd()).resolve()),
            "backend": backend,
            "backend_options": backend_options or {},
            "overrides": overrides or {},
            "window": window,
            "window_mb": window_mb,
            "ui": (
                {"host": ui[0], "port": ui[1], "allowed_hosts": ui_allowed_hosts or []}
                if ui is not None
                else None
            ),
        }
        return self._request("POST", "/pipelines", json=body)

    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline: id, name, backend, state, created, uptime, exit_code, viewer."""
        return self._request("GET", "/pipelines")

    def status(self, pipeline_id: str) -> dict[str, Any]:
        """The pipeline's status (docs/manager.md)."""
        return self._request("GET", f"/pipelines/{pipeline_id}")

    def scale(self, pipeline_id: str, node: str, replicas: int) -> dict[str, Any]:
        return self._request(
            "POST", f"/pipelines/{pipeline_id}/scale", json={"node": node, "replicas": replicas}
        )

    def stop(self, pipeline_id: str) -> dict[str, Any]:
        """Ask the pipeline to drain; returns at once (see :meth:`wait`)."""
        return self._request("POST", f"/pipelines/{pipeline_id}/stop")

    def wait(self, pipeline_id: str, timeout: float, interval: float = 0.2) -> dict[str, Any]:
        """Poll the pipeline's status until it has finished; its last status.

        Raises:
            ManagerError: still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(pipeline_id)
            if status["state"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise ManagerError(
                    f"pipeline {pipeline_id} is still {status['state']} after {timeout:.0f} s"
                )
            time.sleep(interval)

    def logs(
        self,
        pipeline_id: str,
        node: str,
        replica: int = 0,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The log of a node replica's current process, in chunks as they arrive; with
        ``follow``, until the pipeline has finished."""
        params: dict[str, Any] = {"replica": replica, "follow": follow}
        if tail is not None:
            params["tail"] = tail
        path = f"/pipelines/{pipeline_id}/logs/{node}"
        try:
            with self.http.stream("GET", path, params=params, timeout=None) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    self._check(reply)
                yield from reply.iter_bytes()
        except httpx.HTTPError as exc:
            raise ManagerError(f"the manager at {self.url} does not answer: {exc}") from None
