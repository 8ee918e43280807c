"""Workers that go wrong without raising: they warn, log, drop inputs or emit NaN (copied next
to the pipeline file of tests/test_run_warnings.py)."""

from __future__ import annotations

import logging

import numpy as np

import beampipe

log = logging.getLogger("noisy")


class Noisy(beampipe.Worker):
    """Passes ``x`` on as ``y`` (a float64 array of 4) and, by id: numpy's ``Mean of empty
    slice`` warning on every even id, a ``logging`` warning on id 3, ``dead_letter`` on the
    ids in ``drop`` (nothing sent), and ``y`` all NaN on the ids in ``nan``."""

    class Params(beampipe.Params):
        drop: tuple[int, ...] = ()
        nan: tuple[int, ...] = ()

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        if msg.id % 2 == 0:
            np.mean(np.array([]))
        if msg.id == 3:
            log.warning("detector temperature %.1f K above its set point", 2.5)
        if msg.id in self.params.drop:
            self.dead_letter(
                msg, f"frame size 1000 does not match the header's 4148x4362 (id {msg.id})"
            )
            return None
        y = np.full(4, np.nan if msg.id in self.params.nan else float(msg.data["x"]))
        return beampipe.Message(data={"y": y})


class Raises(beampipe.Worker):
    """Passes ``x`` on; raises ValueError at id ``at``."""

    class Params(beampipe.Params):
        at: int = 100

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        if msg.id == self.params.at:
            raise ValueError(f"cannot use id {msg.id}")
        return beampipe.Message(data=dict(msg.data))
