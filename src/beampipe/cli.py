"""The ``beampipe`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from beampipe.config import Pipeline, PipelineError, load_pipeline, parse_override
from beampipe.manager import LocalLauncher
from beampipe.manager.console import ConsoleObserver

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
    transport: Annotated[str, typer.Option(help="ipc (default) or tcp")] = "ipc",
    window: Annotated[int, typer.Option(help="credit: messages in flight per pipe")] = 32,
    window_mb: Annotated[
        float, typer.Option("--window-mb", help="credit: MB in flight per pipe")
    ] = 64.0,
    metrics: Annotated[
        bool, typer.Option("--metrics/--no-metrics", help="print per-node metrics at the end")
    ] = True,
) -> None:
    """Run a pipeline in the foreground on this machine until its sources are finished."""
    if transport not in ("ipc", "tcp"):
        raise typer.BadParameter("must be ipc or tcp", param_hint="--transport")
    pipeline = _load(file, set_)
    with ConsoleObserver(pipeline, console) as observer:
        launcher = LocalLauncher(
            pipeline,
            observer,
            transport=transport,
            window=window,
            window_bytes=int(window_mb * 1e6),
        )
        result = launcher.run()
    if metrics and result.metrics:
        observer.metrics_table(result.metrics, result.wall_time)
    observer.skipped(result.metrics, pipeline.dead_letter)
    observer.summary(result.exit_code, result.wall_time, _output_files(pipeline))
    raise typer.Exit(result.exit_code)
