"""How a node fails: an exception in a worker hook stops it, and it reports where.

:func:`call` calls a worker hook whose exception stops the node (every hook but ``process``,
whose exceptions go to the error policy first, :mod:`beampipe.runtime.policy`); the exception
becomes a :class:`NodeFailure`, which the node reports to the launcher with node, stream,
message id and a traceback that starts in the worker's code, and the process exits with
status 1 (docs/reliability.md, "Errors inside a worker").
"""

from __future__ import annotations

import traceback
from typing import Any

from beampipe.runtime.control import ControlClient, Failed
from beampipe.runtime.notes import NoteLog


class NodeFailure(Exception):
    """What a node reports when it fails: the error, where it happened and its traceback.

    Args:
        stream, msg_id: the stream and message id being handled (None if not known).
        exc: the exception; its traceback is reported as it is (see :func:`in_hook`); none
            if it has no frames (a :class:`~beampipe.ResultError`: its text says it all).

    Attributes:
        error: ``exc``, as the worker raised it (:mod:`beampipe.testing` raises it again).
    """

    def __init__(self, stream: str | None, msg_id: int | None, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.error = exc
        self.stream = stream
        self.msg_id = msg_id
        frames = exc.__traceback__ is not None
        self.traceback = "".join(traceback.format_exception(exc)) if frames else ""

    def report(self, control: ControlClient, node: str, replica: int, drained: bool) -> None:
        """Report the failure of ``node`` replica ``replica`` to the launcher; ``drained``:
        what the node had sent was processed downstream first."""
        control.send(
            Failed(node, replica, self.stream, self.msg_id, str(self), self.traceback, drained)
        )


def in_hook(exc: BaseException) -> BaseException:
    """``exc``, caught where a worker hook was called, with a traceback that starts in the hook
    (the caller's frame left out)."""
    frames = exc.__traceback__
    return exc.with_traceback(frames.tb_next if frames is not None else None)


def call(notes: NoteLog, stream: str | None, msg_id: int | None, hook: Any, *args: Any) -> Any:
    """``hook(*args)`` for ``stream``/``msg_id``, where what the hook warns is noted.

    Raises:
        NodeFailure: the hook raised.
    """
    notes.stream, notes.msg_id = stream, msg_id
    try:
        return hook(*args)
    except Exception as exc:
        raise NodeFailure(stream, msg_id, in_hook(exc)) from exc
