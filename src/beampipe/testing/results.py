"""What a node did under the test harness: :class:`Results`."""

from __future__ import annotations

from dataclasses import dataclass, field

from beampipe.message import Event, Item, Message, StreamStart
from beampipe.worker.base import Node

DeadLetter = tuple[Message | Event, str | BaseException]
"""An input the node dropped and why (:meth:`beampipe.Worker.dead_letter`); for an id a source
never issued, a ``Message(stream=..., id=...)`` without data and the reason."""


@dataclass
class Results:
    """What a node sent, dropped and warned about, during a :func:`run` (or one call of a
    :class:`Harness`).

    Attributes:
        node: the node driven.
        sent: every item that went out, as ``(output port, item)`` in order: the messages,
            and the stream markers (``StreamStart`` with the stream's metadata, ``EndOfStream``
            with ``warnings``: what was noted while the stream was handled), on every port.
        dead_letters: what the node dropped (:data:`DeadLetter`).
        warnings: each distinct thing noted (a Python warning or a ``logging`` record at
            WARNING or above raised while the node was called, an input dropped, non-finite
            values sent) by its first text: how often.
    """

    node: Node
    sent: list[tuple[str, Item]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, str]:
        """What the node reported about itself (:meth:`beampipe.Worker.report_info`), as a
        pipeline's metrics carry it (``info``)."""
        return dict(self.node.info)

    def items(self, port: str | None = None) -> list[Item]:
        """What went out on ``port`` (default: the node's first output port), markers too."""
        port = self._port(port)
        return [item for p, item in self.sent if p == port]

    def messages(self, port: str | None = None) -> list[Message]:
        """The messages that went out on ``port`` (default: the first output port)."""
        return [item for item in self.items(port) if isinstance(item, Message)]

    @property
    def streams(self) -> dict[str, list[Message]]:
        """The messages on the first output port by stream, in the order the streams opened."""
        out: dict[str, list[Message]] = {}
        for item in self.items():
            if isinstance(item, StreamStart):
                out.setdefault(item.stream, [])
            elif isinstance(item, Message):
                out.setdefault(item.stream, []).append(item)
        return out

    def _port(self, port: str | None) -> str:
        if port is not None:
            return port
        return self.node.outputs[0] if self.node.outputs else ""
