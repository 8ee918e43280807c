"""What the runtime's parts need of a node's wiring and error policy, in-process: pipes that
only have a port, output ports that take every item at once, receipts without credit, a
source's skipped ids kept as dead letters, and a message it yields that cannot be sent failing
(:mod:`beampipe.testing`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from beampipe.message import Event, Item, Message
from beampipe.runtime.failure import NodeFailure
from beampipe.runtime.progress import Progress
from beampipe.worker import ResultError


def no_wait(timeout_ms: int) -> None:
    """Nothing to service in-process: there are no sockets."""


@dataclass
class Pipe:
    """An input pipe as the stream book sees it: its port; it does not finish by itself."""

    port: str
    finished: bool = False


@dataclass
class Port:
    """An output port that takes every item at once (what the emitter asks of one)."""

    name: str
    take: Callable[[str, Item], None]

    def try_send(self, item: Item, frames: object, origin: object, batchable: bool) -> bool:
        self.take(self.name, item)
        return True

    def flush(self) -> None:
        """Nothing waits in a batch."""


@dataclass
class Gate:
    """In-process no process connects: none is refused."""

    refused: int = 0


@dataclass
class Wiring:
    """What the runtime's parts read of a node's wiring, in-process."""

    node: str
    replica: int
    inputs: list[Pipe]
    outputs: dict[str, Port]
    tap: None = None
    control: None = None
    gate: Gate = field(default_factory=Gate)
    draining: bool = False


class Receipt:
    """An input's receipt: in-process there is no credit to give back, nothing to acknowledge."""

    def credit(self) -> None:
        """Nothing to give back."""

    def discard(self) -> None:
        """Nothing to give back or acknowledge."""


RECEIPT = Receipt()


@dataclass
class SourcePolicy:
    """What the source loop asks of the error policy: the progress, and where the ids a source
    skipped go (the dead letters, as in a pipeline's dead-letter file)."""

    progress: Progress
    dead_letter: Callable[[Message | Event, str | BaseException], None]

    def missing(self, stream: str, first: int, last: int, why: str) -> None:
        """Ids ``first`` to ``last`` were never issued: counted, one dead letter per range
        (for the first id; the text names the range when it holds more than one)."""
        self.progress.metrics.missing += last - first + 1
        text = why if last == first else f"ids {first}..{last} missing: {why}"
        self.dead_letter(Message(stream=stream, id=first), text)

    def refused(self, item: Message, exc: ResultError) -> None:
        """A message the source yielded cannot be sent: the run fails, as under ``on_error:
        fail_fast`` (the harness raises ``exc``)."""
        raise NodeFailure(item.stream, item.id, exc)
