"""The worker of the EPICS feedback example: I0 normalised to the storage-ring current."""

from __future__ import annotations

import numpy as np

import beampipe


class NormalizedI0(beampipe.Worker):
    """``quality = I0 / ring current`` (float64, 0-d; counts per mA) for each snapshot.

    No figure is sent while the ring current is at or below ``min_current`` (mA): without beam
    the ratio means nothing.

    Raises:
        KeyError: the message has no ``i0`` or ``current`` entry.
    """

    class Params(beampipe.Params):
        i0: str = "i0"
        current: str = "ring_current"
        min_current: float = 1.0

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        p = self.params
        current = float(msg.data[p.current])
        if current <= p.min_current:
            return None
        quality = np.float64(msg.data[p.i0]) / current
        return beampipe.Message(data={"quality": quality}, metadata={"units": {"quality": "1/mA"}})
