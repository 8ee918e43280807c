"""A batching worker for the tests of the batch hook (copied next to the test's pipeline
file)."""

from __future__ import annotations

import beampipe


class BatchTag(beampipe.Worker):
    """Passes each message on with metadata ``batch`` (how many messages its call held) and
    ``call`` (the call's number, from 1). Raises ValueError for a message whose id is a multiple
    of ``every`` (0: never), in ``process_batch`` and in ``process``. ``wrong_length``:
    ``process_batch`` returns one result too many."""

    class Params(beampipe.Params):
        max_batch: int = 8
        max_wait: float = 0.0
        every: int = 0
        wrong_length: bool = False

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.max_batch = params.max_batch
        self.max_wait = params.max_wait
        self.calls = 0

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        return self.process_batch([msg])[0]

    def process_batch(self, msgs: list[beampipe.Message]) -> list[beampipe.Message]:
        self.calls += 1
        every = self.params.every
        for msg in msgs:
            if every and msg.id % every == 0:
                raise ValueError(f"bad point {msg.id}")
        tag = {"batch": len(msgs), "call": self.calls}
        out = [beampipe.Message(data=dict(m.data), metadata=tag) for m in msgs]
        return out + out[:1] if self.params.wrong_length else out
