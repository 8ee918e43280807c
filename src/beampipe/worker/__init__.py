"""The SDK a worker author uses."""

from beampipe.worker.base import Output, Params, Source, Worker
from beampipe.worker.decorator import worker
from beampipe.worker.paths import InputPath
from beampipe.worker.registry import UnknownNodeType, registered, resolve

__all__ = [
    "InputPath",
    "Output",
    "Params",
    "Source",
    "UnknownNodeType",
    "Worker",
    "registered",
    "resolve",
    "worker",
]
