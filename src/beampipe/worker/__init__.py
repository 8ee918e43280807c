"""The SDK a worker author uses."""

from beampipe.worker.base import Output, Params, Source, TransientError, Worker, by_port
from beampipe.worker.decorator import worker
from beampipe.worker.paths import InputPath
from beampipe.worker.reducer import Reducer, ReducerParams
from beampipe.worker.registry import UnknownNodeType, registered, resolve

__all__ = [
    "InputPath",
    "Output",
    "Params",
    "Reducer",
    "ReducerParams",
    "Source",
    "TransientError",
    "UnknownNodeType",
    "Worker",
    "by_port",
    "registered",
    "resolve",
    "worker",
]
