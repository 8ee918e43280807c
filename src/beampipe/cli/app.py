"""The ``beampipe`` command: the Typer app and what its commands share (the pipeline file
argument, ``--set``, loading a pipeline file)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from beampipe.config import (
    Pipeline,
    PipelineError,
    load_pipeline,
    parse_override,
)

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


def overrides(pairs: list[str] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs or []:
        try:
            key, value = parse_override(pair)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--set") from None
        result[key] = value
    return result


def load(path: Path, pairs: list[str] | None) -> Pipeline:
    # Worker modules next to the pipeline file are importable, as a script's neighbours are.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        return load_pipeline(path, overrides=overrides(pairs))
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


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


def host_names(hosts: list[str] | None) -> list[str] | None:
    """``--ui-allowed-host`` / ``--allowed-host``, each checked to be a host name."""
    from beampipe.viewer.hosts import host_name

    try:
        return [host_name(h) for h in hosts] if hosts else hosts
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


UiAllowedHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ui-allowed-host",
        callback=host_names,
        help="another name the viewer may be reached by, e.g. a proxy's (repeatable; "
        "localhost and, off loopback, this machine's names always are)",
        metavar="HOST",
    ),
]
