"""``beampipe deploy``, ``list``, ``status``, ``logs``, ``scale``, ``stop`` and ``manager``: the
clients of the pipeline manager, and the manager itself."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from beampipe.cli.app import (
    PipelineFile,
    SetOption,
    UiAllowedHostOption,
    UiHostOption,
    UiOption,
    UiPortOption,
    WindowMbOption,
    WindowOption,
    app,
    console,
    host_names,
    overrides,
)
from beampipe.config import BACKENDS, PipelineError, parse_override, read_pipeline_file
from beampipe.manager.client import ManagerClient, ManagerError
from beampipe.manager.store import FINAL, state_home

IdArgument = Annotated[
    str, typer.Argument(help="the pipeline id (see `beampipe list`)", metavar="ID")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the manager's answer as JSON")]


def _client(start: bool = False) -> ManagerClient:
    try:
        return ManagerClient.find(state_home(), start=start)
    except ManagerError as exc:
        _manager_error(exc)


def _manager_error(exc: ManagerError) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2 if exc.status == 422 else 1)


def _stdout() -> Console:
    """The console for tables on stdout (wide enough not to cut columns when piped)."""
    return Console(width=None if sys.stdout.isatty() else 160)


def _duration_text(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


@app.command()
def deploy(
    file: PipelineFile,
    set_: SetOption = None,
    backend: Annotated[
        str | None,
        typer.Option(help=f"{', '.join(BACKENDS)} (default: the file's `backend:`, else local)"),
    ] = None,
    backend_option: Annotated[
        list[str] | None,
        typer.Option(
            "--backend-option",
            help="an option of the backend: KEY=VALUE (VALUE is YAML), e.g. partition=maxwell",
        ),
    ] = None,
    window: WindowOption = 64,
    window_mb: WindowMbOption = 64.0,
    ui: UiOption = False,
    ui_port: UiPortOption = 0,
    ui_host: UiHostOption = "127.0.0.1",
    ui_allowed_host: UiAllowedHostOption = None,
) -> None:
    """Run a pipeline in the background under the manager (started if none runs); prints its id.
    Output paths are relative to the current directory, as with `run`. With --ui its supervisor
    serves the live viewer while it runs (URL printed)."""
    if backend is not None and backend not in BACKENDS:
        raise typer.BadParameter(f"must be one of {', '.join(BACKENDS)}", param_hint="--backend")
    options = {}
    for pair in backend_option or []:
        try:
            key, value = parse_override(pair)
        except ValueError:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", "--backend-option") from None
        options[key] = value
    changes = overrides(set_)
    if not file.is_file():
        console.print(f"[bold red]error:[/] {escape(str(file))}: no such file", highlight=False)
        raise typer.Exit(2)
    try:
        read_pipeline_file(file)  # a file that cannot be read starts no manager
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    client = _client(start=True)
    try:
        status = client.deploy(
            file,
            backend=backend,
            backend_options=options,
            overrides=changes,
            window=window,
            window_mb=window_mb,
            ui=(ui_host, ui_port) if ui else None,
            ui_allowed_hosts=ui_allowed_host,
        )
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        console.print(f"[bold red]error:[/] {escape(str(file))}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    except ManagerError as exc:
        _manager_error(exc)
    print(status["id"])
    if status["state"] in ("failed", "lost"):
        for error in status.get("errors") or [f"the pipeline is {status['state']}"]:
            console.print(f"[bold red]error:[/] {escape(error)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(
        f"deployed {status['name']!r} as {status['id']} (backend {status['backend']}): "
        f"see `beampipe status {status['id']}`",
        highlight=False,
        soft_wrap=True,
    )
    if ui:
        _deployed_viewer(client, status)


VIEWER_TIMEOUT = 30.0
"""Seconds `deploy --ui` waits for the supervisor to report its viewer's URL."""


def _deployed_viewer(client: ManagerClient, status: dict[str, Any]) -> None:
    """Print the viewer URL of a pipeline deployed with --ui, polling its status until the
    supervisor reports it (or the pipeline has finished, or :data:`VIEWER_TIMEOUT`)."""
    pipeline_id = status["id"]
    deadline = time.monotonic() + VIEWER_TIMEOUT
    while status.get("viewer") is None:
        if status["state"] in FINAL:
            console.print(f"viewer: none, pipeline {pipeline_id} is {status['state']}")
            return
        if time.monotonic() > deadline:
            console.print(
                f"[yellow]viewer: not serving yet; `beampipe status {pipeline_id}` shows its URL[/]"
            )
            return
        time.sleep(0.2)
        try:
            status = client.status(pipeline_id)
        except ManagerError as exc:
            _manager_error(exc)
    console.print(f"viewer: {escape(status['viewer'])}", highlight=False, soft_wrap=True)


@app.command("list")
def list_(json_: JsonOption = False) -> None:
    """List the deployed pipelines: id, name, backend, state, uptime."""
    try:
        pipelines = _client().pipelines()
    except ManagerError as exc:
        _manager_error(exc)
    if json_:
        print(json.dumps(pipelines, indent=1))
        return
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for header in ("id", "name", "backend", "state", "uptime"):
        table.add_column(header, no_wrap=True)
    for p in pipelines:
        table.add_row(p["id"], p["name"], p["backend"], p["state"], _duration_text(p["uptime"]))
    _stdout().print(table)


@app.command()
def status(pipeline_id: IdArgument, json_: JsonOption = False) -> None:
    """Show a deployed pipeline: per node and replica its state, where it runs, restarts,
    rates, messages in flight, errors and warnings."""
    try:
        s = _client().status(pipeline_id)
    except ManagerError as exc:
        _manager_error(exc)
    if json_:
        print(json.dumps(s, indent=1))
        return
    out = _stdout()
    facts = ", ".join(f"{k} {v}" for k, v in s["placement"].items())
    out.print(
        f"pipeline {s['id']} ({s['name']}): [bold]{s['state']}[/], backend {s['backend']}"
        + (f" ({escape(facts)})" if facts else "")
        + f", up {_duration_text(s['uptime'])}"
        + (f", exit code {s['exit_code']}" if s["exit_code"] is not None else ""),
        highlight=False,
        soft_wrap=True,
    )
    if s.get("viewer"):
        out.print(f"viewer: {escape(s['viewer'])}", highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for header in ("node", "replica", "state", "host", "where", "restarts"):
        table.add_column(header, no_wrap=True)
    for header in ("msg/s", "MB/s", "in flight", "errors", "warnings"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in s["replicas"]:
        receives = r["messages_in"] > 0 or r["rate_in"] > 0  # a source only sends
        table.add_row(
            r["node"],
            str(r["replica"]),
            r["state"],
            r["host"] or "",
            r["where"] or "",
            str(r["restarts"]),
            f"{r['rate_in'] if receives else r['rate_out']:.0f}",
            f"{r['mb_in'] if receives else r['mb_out']:.2f}",
            str(r["in_flight"]),
            str(r["errors"]),
            str(r.get("warnings", 0)),
        )
    out.print(table)
    for r in s["replicas"]:
        if r.get("info"):
            facts = "; ".join(f"{key} {value}" for key, value in r["info"].items())
            out.print(
                f"{r['node']}#{r['replica']}: {escape(facts)}", highlight=False, soft_wrap=True
            )
    if not s["supervisor"]["answering"] and s["state"] not in ("done", "failed", "stopped"):
        out.print(f"[yellow]its supervisor (pid {s['supervisor']['pid']}) does not answer[/]")
    for hang in s.get("hangs") or []:
        out.print(f"[bold yellow]hung:[/] {escape(hang)}", highlight=False, soft_wrap=True)
    label = "[yellow]stopped:[/]" if s["state"] == "stopped" else "[bold red]error:[/]"
    for error in s.get("errors") or []:
        out.print(f"{label} {escape(error)}", highlight=False, soft_wrap=True)


@app.command()
def logs(
    pipeline_id: IdArgument,
    node: Annotated[str, typer.Argument(help="the node", metavar="NODE")],
    replica: Annotated[int, typer.Option(help="the replica")] = 0,
    tail: Annotated[int | None, typer.Option(help="only the last lines")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="go on printing until the pipeline ends")
    ] = False,
) -> None:
    """Print the log of a node replica of a deployed pipeline, from wherever it runs."""
    client = _client()
    try:
        for chunk in client.logs(pipeline_id, node, replica, tail, follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    except ManagerError as exc:
        _manager_error(exc)


@app.command()
def scale(
    pipeline_id: IdArgument,
    node: Annotated[str, typer.Argument(help="a worker node", metavar="NODE")],
    replicas: Annotated[int, typer.Argument(help="its new number of replicas", metavar="N")],
) -> None:
    """Change the number of replicas of a worker while the pipeline runs."""
    try:
        _client().scale(pipeline_id, node, replicas)
    except ManagerError as exc:
        _manager_error(exc)
    console.print(f"pipeline {pipeline_id}: {node} scaled to {replicas}", highlight=False)


@app.command()
def stop(
    pipeline_id: IdArgument,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait until it has stopped")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 120.0,
) -> None:
    """Drain and stop a deployed pipeline: its sources end their streams, everything already
    sent is processed and written. A second stop stops it at once."""
    client = _client()
    try:
        client.stop(pipeline_id)
        if not wait:
            console.print(f"pipeline {pipeline_id}: draining", highlight=False)
            return
        s = client.wait(pipeline_id, timeout)
    except ManagerError as exc:
        _manager_error(exc)
    console.print(f"pipeline {pipeline_id}: {s['state']}", highlight=False)
    if s["state"] in ("failed", "lost"):
        raise typer.Exit(1)


@app.command()
def manager(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: all)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free one)")] = 0,
    protect_reads: Annotated[
        bool, typer.Option("--protect-reads", help="read-only requests need the token too")
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            callback=host_names,
            help="another name the manager may be reached by, e.g. a proxy's (repeatable; "
            "localhost and, off loopback, this machine's names always are)",
            metavar="HOST",
        ),
    ] = None,
) -> None:
    """Serve the manager's control API (`deploy` starts one when none runs); its URL is
    written to manager.json in the state home ($BEAMPIPE_HOME)."""
    from beampipe.manager.api import ManagerRunning, serve

    def ready(url: str) -> None:
        console.print(f"manager: {url} (API docs: {url}/docs)", highlight=False, soft_wrap=True)

    try:
        serve(state_home(), host, port, protect_reads, ready, allowed_host or [])
    except ManagerRunning as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[bold red]error:[/] cannot serve on {host} port {port}: {exc}")
        raise typer.Exit(2) from None
