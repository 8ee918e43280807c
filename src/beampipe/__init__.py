"""beampipe: distributed near-real-time data processing pipelines for X-ray beamlines.

A worker author needs only this module::

    import beampipe

    class Transmission(beampipe.Worker):
        class Params(beampipe.Params):
            i0: str = "I0"
        def process(self, msg: beampipe.Message) -> beampipe.Message: ...

and a test of it :mod:`beampipe.testing` (``run(Transmission, [messages...]).messages()``).
"""

from beampipe.message import EndOfStream, Event, Message, StreamStart
from beampipe.worker import (
    InputPath,
    OutputPath,
    Params,
    Reducer,
    ReducerParams,
    ResultError,
    Source,
    TransientError,
    Worker,
    worker,
)

__all__ = [
    "EndOfStream",
    "Event",
    "InputPath",
    "Message",
    "OutputPath",
    "Params",
    "Reducer",
    "ReducerParams",
    "ResultError",
    "Source",
    "StreamStart",
    "TransientError",
    "Worker",
    "worker",
]
__version__ = "0.1.0"
