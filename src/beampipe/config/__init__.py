"""Pipeline file (YAML) -> validated :class:`Pipeline`; every problem is a :class:`PipelineError`
naming file, line and node.

    from beampipe.config import load_pipeline
    pipeline = load_pipeline("pipeline.yaml", overrides={"scan.pace": "max"})
    for name, spec in pipeline.nodes.items():
        cls, params = pipeline.node_class(name), pipeline.node_params(name)
"""

from beampipe.config.errors import PipelineError
from beampipe.config.loader import load_pipeline, parse_pipeline, read_pipeline_file
from beampipe.config.model import Connection, NodeSpec, Pipeline
from beampipe.config.overrides import parse_override
from beampipe.config.schema import BACKENDS, Backend

__all__ = [
    "BACKENDS",
    "Backend",
    "Connection",
    "NodeSpec",
    "Pipeline",
    "PipelineError",
    "load_pipeline",
    "parse_override",
    "parse_pipeline",
    "read_pipeline_file",
]
