"""The SDK a worker author uses: what :mod:`beampipe` exports. The runtime and the pipeline
checks import the rest from its modules: :mod:`~beampipe.worker.base` (``Node``, ``Output``,
``by_port``) and :mod:`~beampipe.worker.registry` (``resolve``, ``registered``,
``UnknownNodeType``)."""

from beampipe.worker.base import Params, ResultError, Source, TransientError, Worker
from beampipe.worker.decorator import worker
from beampipe.worker.paths import InputPath, OutputPath
from beampipe.worker.reducer import Reducer, ReducerParams

__all__ = [
    "InputPath",
    "OutputPath",
    "Params",
    "Reducer",
    "ReducerParams",
    "ResultError",
    "Source",
    "TransientError",
    "Worker",
    "worker",
]
