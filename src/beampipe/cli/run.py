"""``beampipe validate``, ``run`` and ``record``: a pipeline in the foreground on this machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from beampipe.cli.app import (
    LogsOption,
    MetricsOption,
    PipelineFile,
    SetOption,
    TransportOption,
    UiAllowedHostOption,
    UiHostOption,
    UiOption,
    UiPortOption,
    WindowMbOption,
    WindowOption,
    app,
    console,
    load,
)
from beampipe.cli.console import ConsoleObserver
from beampipe.config import Connection, NodeSpec, Pipeline
from beampipe.launch import Launcher
from beampipe.viewer import ViewerUnavailable, open_viewer


def _output_files(pipeline: Pipeline) -> list[str]:
    """The ``path`` parameters of the sinks that exist: what the run wrote."""
    paths = []
    for name in pipeline.sinks():
        path = getattr(pipeline.node_params(name), "path", None)
        if path and Path(path).exists():
            paths.append(str(path))
    return paths


@app.command()
def validate(file: PipelineFile, set_: SetOption = None) -> None:
    """Check a pipeline file without running it."""
    pipeline = load(file, set_)
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
    ui_allowed_host: UiAllowedHostOption = None,
) -> None:
    """Run a pipeline in the foreground on this machine until its sources are finished."""
    viewer = (ui_host, ui_port, ui_allowed_host or []) if ui else None
    _launch(load(file, set_), transport, window, window_mb, metrics, logs, viewer)


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
    ui: tuple[str, int, list[str]] | None = None,
) -> None:
    if transport not in ("ipc", "tcp"):
        raise typer.BadParameter("must be ipc or tcp", param_hint="--transport")
    viewer = _viewer(pipeline, *ui) if ui is not None else None
    with ConsoleObserver(pipeline, console) as observer:
        launcher = Launcher(
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
    warned += observer.hangs(result.hangs)
    warned += observer.refused(result.refused)
    observer.recovery(result.metrics)
    outputs = _output_files(pipeline)
    observer.summary(result.exit_code, result.wall_time, outputs, warned, str(launcher.logs))
    if viewer is not None and (viewer.refusals.host or viewer.refusals.origin):
        console.print(
            f"[yellow]viewer: refused {viewer.refusals.host} request(s) for another host name "
            f"and {viewer.refusals.origin} websocket(s) from another site's page[/]",
            highlight=False,
            soft_wrap=True,
        )
    if viewer is not None and (viewer.previews.failed or viewer.previews.corrupt):
        previews = viewer.previews
        console.print(
            f"[yellow]viewer: {previews.failed} item(s) not shown (their preview failed; first: "
            f"{previews.failure}) and {previews.corrupt} tap message(s) not decodable[/]",
            highlight=False,
            soft_wrap=True,
        )
    if viewer is not None and result.exit_code == 130:  # the run was interrupted: stop all
        viewer.stop()
    elif viewer is not None:  # keep the final plots and files browsable
        console.print(f"viewer: still serving {viewer.url} (Ctrl-C to stop)", highlight=False)
        viewer.serve_until_interrupted()
    raise typer.Exit(result.exit_code)


def _viewer(pipeline: Pipeline, host: str, port: int, extra_hosts: list[str]) -> Any:
    """The live viewer of ``run --ui`` (:class:`beampipe.viewer.Viewer`), its URL printed."""
    try:
        viewer = open_viewer(pipeline, host, port, extra_hosts)
    except ViewerUnavailable as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
    pipeline = _with_recorder(load(file, set_), port, output)
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
