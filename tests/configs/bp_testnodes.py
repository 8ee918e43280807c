"""Small node classes for the config tests (copied into a temporary directory by the tests)."""

from typing import Literal

from pydantic import Field

import beampipe


class Replay(beampipe.Source):
    """A source with typed params."""

    class Params(beampipe.Params):
        paths: list[str] = Field(default_factory=list)
        pace: Literal["realtime", "max"] = "realtime"


class Scale(beampipe.Worker):
    """One input, one output."""

    class Params(beampipe.Params):
        every: int = 10
        factor: float = 1.0


class Join(beampipe.Worker):
    """Two named inputs, two outputs."""

    inputs = ("image", "i0")
    outputs = ("out", "stats")


class Normalise(beampipe.Worker):
    """Joins its two inputs into events."""

    inputs = ("image", "i0")
    events = True


class AnyEvents(beampipe.Worker):
    """Joins whatever input ports its connections feed into events."""

    inputs = None
    events = True


class AnyIn(beampipe.Worker):
    """Accepts any input port name."""

    inputs = None


class Writer(beampipe.Worker):
    """A sink with a required param."""

    outputs = ()

    class Params(beampipe.Params):
        path: str
        groups: dict[str, dict[str, str]] = Field(default_factory=dict)


class NotAWorker:
    """Not a beampipe.Worker subclass."""


class Fold(beampipe.Reducer):
    """A reducer (runs as one replica)."""
