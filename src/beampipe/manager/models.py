"""The bodies of the manager's HTTP API: what a deploy or scale request holds and what a listed
pipeline shows (pydantic models; they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from beampipe.config import Backend
from beampipe.manager.supervisor import (
    ViewerOptions,
)


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
