"""``@beampipe.worker``: a plain function as a worker, for the one-line case."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from beampipe.worker.base import Output, Params, Worker


def worker(
    func: Callable[..., Output] | None = None,
    *,
    params: type[Params] = Params,
    inputs: tuple[str, ...] | None = ("in",),
    outputs: tuple[str, ...] = ("out",),
) -> Any:
    """Turn ``func(msg)`` or ``func(msg, params)`` into a :class:`Worker` subclass.

    Use bare (``@beampipe.worker``) or with arguments (``@beampipe.worker(params=MyParams)``).
    The function's return value is handled as :meth:`Worker.process`'s.
    """

    def wrap(f: Callable[..., Output]) -> type[Worker]:
        takes_params = len(inspect.signature(f).parameters) >= 2

        def process(self: Worker, msg: Any) -> Output:
            return f(msg, self.params) if takes_params else f(msg)

        cls = type(
            f.__name__,
            (Worker,),
            {
                "Params": params,
                "inputs": inputs,
                "outputs": outputs,
                "process": process,
                "__doc__": f.__doc__,
                "__module__": f.__module__,
                "__qualname__": f.__qualname__,
            },
        )
        return cls

    return wrap(func) if func is not None else wrap
