"""Pacing of sources: items sent on a deadline schedule of a monotonic clock.

Used by the sources that can send at a rate or at a recorded pace: ``xdi_replay``,
``hdf5_replay``, ``replay`` and ``detector_sim``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

from pydantic import Field

__all__ = ["MIN_RATE", "Pacer", "Rate", "Speedup"]

MIN_RATE = 1e-3
"""The slowest pace, items per second (one every 1000 s), and the smallest ``speedup``: slower
is a hang, not a pace (and a wait beyond what ``time.sleep`` takes)."""

Rate = Annotated[float, Field(ge=MIN_RATE, allow_inf_nan=False)]
"""A ``pace`` or ``rate`` parameter in items per second: finite, at least :data:`MIN_RATE`."""

Speedup = Annotated[float, Field(ge=MIN_RATE, allow_inf_nan=False)]
"""A ``speedup`` parameter dividing a recorded pace: finite, at least :data:`MIN_RATE`."""


class Pacer:
    """Waits before each item so that the items go out on a deadline schedule.

    The first :meth:`wait` of a schedule (after creation or :meth:`restart`) sets the deadline to
    the clock's time and returns at once; each later one moves the deadline on by its ``gap``
    and sleeps until then. Time spent between two waits (downstream, reading a file) is thus not
    added to the gaps, and after a stall (backpressure) the overdue items go out at once until
    the schedule has caught up, as a buffering detector would.

    Args:
        clock: seconds of a monotonic clock (``time.monotonic``); tests pass a fake one.
        sleep: sleeps that many seconds (``time.sleep``); tests pass the fake clock's.

    Attributes:
        deadline: the clock time of the last item's deadline, seconds; None before the first
            :meth:`wait` of a schedule.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.deadline: float | None = None

    def restart(self) -> None:
        """Start a new schedule: the next :meth:`wait` does not wait."""
        self.deadline = None

    def wait(self, gap: float) -> None:
        """Sleep until ``gap`` seconds after the previous item's deadline, if that is still to
        come; at the first call of a schedule, start it now (``gap`` is not used). A negative or
        non-finite ``gap`` counts as 0."""
        if self.deadline is None:
            self.deadline = self.clock()
            return
        self.deadline += gap if math.isfinite(gap) and gap > 0 else 0.0
        delay = self.deadline - self.clock()
        if delay > 0:
            self.sleep(delay)
