"""The ``beampipe`` command."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from beampipe.config import (
    Connection,
    NodeSpec,
    Pipeline,
    PipelineError,
    load_pipeline,
    parse_override,
)
from beampipe.manager import LocalLauncher
from beampipe.manager.client import ManagerClient, ManagerError
from beampipe.manager.console import ConsoleObserver
from beampipe.manager.store import FINAL, state_home
from beampipe.manager.supervisor import ui_missing

app = typer.Typer(
    help="Distributed near-real-time data processing pipelines for X-ray beamlines.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

PipelineFile = Annotated[Path, typer.Argument(help="the pipeline file (YAML)", metavar="FILE")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a parameter: NODE.PARAM=VALUE (VALUE is YAML)"),
]


def _overrides(pairs: list[str] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs or []:
        try:
            key, value = parse_override(pair)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--set") from None
        result[key] = value
    return result


def _load(path: Path, pairs: list[str] | None) -> Pipeline:
    # Worker modules next to the pipeline file are importable, as a script's neighbours are.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        return load_pipeline(path, overrides=_overrides(pairs))
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _output_files(pipeline: Pipeline) -> list[str]:
    """The ``path`` parameters of the sinks that exist: what the run wrote."""
    paths = []
    for name in pipeline.sinks():
        path = getattr(pipeline.node_params(name), "path", None)
        if path and Path(path).exists():
            paths.append(str(path))
    return paths


TransportOption = Annotated[str, typer.Option(help="ipc (default) or tcp")]
WindowOption = Annotated[int, typer.Option(help="credit: messages in flight per pipe")]
WindowMbOption = Annotated[float, typer.Option("--window-mb", help="credit: MB in flight per pipe")]
MetricsOption = Annotated[
    bool, typer.Option("--metrics/--no-metrics", help="print per-node metrics at the end")
]
LogsOption = Annotated[
    Path | None,
    typer.Option(
        "--logs",
        help="folder for the node logs (default: logs/NAME-TIME next to the first sink's output)",
        metavar="DIR",
    ),
]
UiOption = Annotated[
    bool, typer.Option("--ui", help="serve the live viewer (a web page; URL printed)")
]
UiPortOption = Annotated[int, typer.Option("--ui-port", help="viewer port (0: any free)")]
UiHostOption = Annotated[
    str, typer.Option("--ui-host", help="viewer address (0.0.0.0: all interfaces)")
]


@app.command()
def validate(file: PipelineFile, set_: SetOption = None) -> None:
    """Check a pipeline file without running it."""
    pipeline = _load(file, set_)
    nodes, connections = len(pipeline.nodes), len(pipeline.connections)
    console.print(
        f"[green]ok[/]: pipeline {pipeline.name!r}: {nodes} node{'s' * (nodes != 1)}, "
        f"{connections} connection{'s' * (connections != 1)}"
    )


@app.command()
def run(
    file: PipelineFile,
    set_: SetOption = None,
    transport: TransportOption = "ipc",
    window: WindowOption = 64,
    window_mb: WindowMbOption = 64.0,
    metrics: MetricsOption = True,
    logs: LogsOption = None,
    ui: UiOption = False,
    ui_port: UiPortOption = 0,
    ui_host: UiHostOption = "127.0.0.1",
) -> None:
    """Run a pipeline in the foreground on this machine until its sources are finished."""
    viewer = (ui_host, ui_port) if ui else None
    _launch(_load(file, set_), transport, window, window_mb, metrics, logs, viewer)


def _log_folder(pipeline: Pipeline) -> Path:
    """Where a run's node logs go by default: ``logs/NAME-YYYYmmdd-HHMMSS`` in the folder of
    the first sink's ``path`` (the working directory if no sink has one)."""
    folder = Path()
    for name in pipeline.sinks():
        path = getattr(pipeline.node_params(name), "path", None)
        if path:
            folder = Path(path).expanduser().parent
            break
    return folder / "logs" / f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _launch(
    pipeline: Pipeline,
    transport: str,
    window: int,
    window_mb: float,
    metrics: bool,
    logs: Path | None,
    ui: tuple[str, int] | None = None,
) -> None:
    if transport not in ("ipc", "tcp"):
        raise typer.BadParameter("must be ipc or tcp", param_hint="--transport")
    viewer = _viewer(pipeline, *ui) if ui is not None else None
    with ConsoleObserver(pipeline, console) as observer:
        launcher = LocalLauncher(
            pipeline,
            observer if viewer is None else viewer.observer(observer),
            transport=transport,
            window=window,
            window_bytes=int(window_mb * 1e6),
            logs=logs or _log_folder(pipeline),
        )
        if viewer is not None:
            viewer.start(launcher)
        result = launcher.run()
    if metrics and result.metrics:
        observer.metrics_table(result.metrics, result.wall_time)
    warned = observer.skipped(result.metrics, pipeline.dead_letter)
    warned += observer.warnings(result.metrics)
    observer.recovery(result.metrics)
    outputs = _output_files(pipeline)
    observer.summary(result.exit_code, result.wall_time, outputs, warned, str(launcher.logs))
    if viewer is not None and result.exit_code == 130:  # the run was interrupted: stop all
        viewer.stop()
    elif viewer is not None:  # keep the final plots and files browsable
        console.print(f"viewer: still serving {viewer.url} (Ctrl-C to stop)", highlight=False)
        viewer.serve_until_interrupted()
    raise typer.Exit(result.exit_code)


def _viewer(pipeline: Pipeline, host: str, port: int) -> Any:
    """The live viewer of ``run --ui`` (:class:`beampipe.viewer.Viewer`), its URL printed."""
    try:
        from beampipe.viewer import Viewer
    except ImportError as exc:
        message = f"[bold red]error:[/] {escape(ui_missing(exc))}"
        console.print(message, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        viewer = Viewer(pipeline, host, port)
    except OSError as exc:
        console.print(
            f"[bold red]error:[/] --ui: cannot listen on {escape(host)} port {port}: {exc}",
            highlight=False,
        )
        raise typer.Exit(2) from None
    console.print(f"viewer: {viewer.url}", highlight=False, soft_wrap=True)
    return viewer


@app.command()
def record(
    file: PipelineFile,
    port: Annotated[
        list[str],
        typer.Option(
            "--port",
            help="an output port to record: NODE.PORT, or NODE for its first port (repeatable)",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="the recording to write (HDF5)")],
    set_: SetOption = None,
    transport: TransportOption = "ipc",
    window: WindowOption = 64,
    window_mb: WindowMbOption = 64.0,
    metrics: MetricsOption = True,
    logs: LogsOption = None,
) -> None:
    """Run a pipeline and record what the given output ports send into an HDF5 file (a
    `recorder` node is added; play the file back with `use: replay`)."""
    pipeline = _with_recorder(_load(file, set_), port, output)
    _launch(pipeline, transport, window, window_mb, metrics, logs)


def _with_recorder(pipeline: Pipeline, ports: list[str], output: Path) -> Pipeline:
    """``pipeline`` plus a ``recorder`` node writing ``output``, fed by each ``NODE[.PORT]`` of
    ``ports`` on an input port named ``NODE_PORT``."""
    name, k = "recorder", 1
    while name in pipeline.nodes:
        k += 1
        name = f"recorder_{k}"
    origins: dict[str, str] = {}
    connections = []
    for text in ports:
        node, _, out = text.partition(".")
        if node not in pipeline.nodes:
            raise typer.BadParameter(
                f"{text!r}: no node {node!r} (nodes: {', '.join(pipeline.nodes)})",
                param_hint="--port",
            )
        outputs = pipeline.node_class(node).outputs
        out = out or (outputs[0] if outputs else "")
        if out not in outputs:
            have = f"its output ports: {', '.join(outputs)}" if outputs else "it is a sink"
            raise typer.BadParameter(
                f"{text!r}: {node!r} has no output port {out!r} ({have})", param_hint="--port"
            )
        target = f"{node}_{out}"
        if target in origins:
            raise typer.BadParameter(
                f"{text!r}: {origins[target]!r} is recorded as port {target!r} already",
                param_hint="--port",
            )
        origins[target] = f"{node}.{out}"
        connections.append(
            Connection(source=node, source_port=out, target=name, target_port=target, line=0)
        )
    spec = NodeSpec(
        name=name, use="recorder", params={"path": str(output), "origins": origins}, line=0
    )
    recorded = pipeline.model_copy(
        update={
            "nodes": {**pipeline.nodes, name: spec},
            "connections": [*pipeline.connections, *connections],
        }
    )
    recorded.node_params(name)
    return recorded


# -- deployed pipelines: thin clients of the manager's HTTP API (docs/manager.md) ------------------

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
        typer.Option(help="local, slurm or nomad (default: the file's `backend:`, else local)"),
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
) -> None:
    """Run a pipeline in the background under the manager (started if none runs); prints its id.
    Output paths are relative to the current directory, as with `run`. With --ui its supervisor
    serves the live viewer while it runs (URL printed)."""
    if backend is not None and backend not in ("local", "slurm", "nomad"):
        raise typer.BadParameter("must be local, slurm or nomad", param_hint="--backend")
    options = {}
    for pair in backend_option or []:
        try:
            key, value = parse_override(pair)
        except ValueError:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", "--backend-option") from None
        options[key] = value
    overrides = _overrides(set_)
    if not file.is_file():
        console.print(f"[bold red]error:[/] {escape(str(file))}: no such file", highlight=False)
        raise typer.Exit(2)
    client = _client(start=True)
    try:
        status = client.deploy(
            file,
            backend=backend,
            backend_options=options,
            overrides=overrides,
            window=window,
            window_mb=window_mb,
            ui=(ui_host, ui_port) if ui else None,
        )
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
    if not s["supervisor"]["answering"] and s["state"] not in ("done", "failed", "stopped"):
        out.print(f"[yellow]its supervisor (pid {s['supervisor']['pid']}) does not answer[/]")
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
) -> None:
    """Serve the manager's control API (`deploy` starts one when none runs); its URL is
    written to manager.json in the state home ($BEAMPIPE_HOME)."""
    from beampipe.manager.api import ManagerRunning, serve

    def ready(url: str) -> None:
        console.print(f"manager: {url} (API docs: {url}/docs)", highlight=False, soft_wrap=True)

    try:
        serve(state_home(), host, port, protect_reads, ready)
    except ManagerRunning as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[bold red]error:[/] cannot serve on {host} port {port}: {exc}")
        raise typer.Exit(2) from None
