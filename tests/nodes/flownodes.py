"""Node classes for the data-flow tests (copied next to the test's pipeline file)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

import beampipe


class Counter(beampipe.Source):
    """``streams`` streams of ``n`` messages; data ``x = id**2`` (float64, 0-d). Ids in
    ``skip`` are left out. After id ``hold_after`` of each stream, waits (yielding ``None``:
    the node answers its peers meanwhile) until the file ``hold_until`` exists (``{stream}``
    in its name replaced by the stream's), to hold a stream open until a downstream node has
    reacted; raises RuntimeError if it does not within 30 s. ``burst`` > 0: the messages are
    yielded in lists (bursts) of that many. ``fail_after`` > 0: raises RuntimeError after that
    id."""

    class Params(beampipe.Params):
        n: int = 100
        streams: int = 1
        skip: tuple[int, ...] = ()
        hold_after: int = 0
        hold_until: str | None = None
        payload: int = 0
        """Bytes of an extra uint8 array ``blob`` in every message."""
        burst: int = 0
        fail_after: int = 0

    def generate(self):
        p = self.params
        for s in range(p.streams):
            name = f"s{s}"
            yield beampipe.StreamStart(name, {"n": p.n})
            burst = []
            for i in range(1, p.n + 1):
                if i not in p.skip:
                    data = {"x": float(i * i)}
                    if p.payload:
                        data["blob"] = np.full(p.payload, i % 256, dtype=np.uint8)
                    msg = beampipe.Message(data=data, stream=name, id=i)
                    if p.burst:
                        burst.append(msg)
                    else:
                        yield msg
                if burst and (len(burst) == p.burst or i == p.hold_after or i == p.n):
                    yield burst
                    burst = []
                if i == p.fail_after:
                    raise RuntimeError(f"detector connection lost after id {i}")
                if i == p.hold_after and p.hold_until:
                    flag = Path(p.hold_until.replace("{stream}", name))
                    deadline = time.monotonic() + 30
                    while not flag.exists():
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{flag} did not appear within 30 s")
                        time.sleep(0.01)
                        yield None
            yield beampipe.EndOfStream(name, p.n)


class Ids(beampipe.Source):
    """One stream ``s0`` of messages with the ids ``ids`` (data ``x = id``), ended with
    ``last``."""

    class Params(beampipe.Params):
        ids: tuple[int, ...]
        last: int

    def generate(self):
        yield beampipe.StreamStart("s0")
        for i in self.params.ids:
            yield beampipe.Message(data={"x": float(i)}, stream="s0", id=i)
        yield beampipe.EndOfStream("s0", self.params.last)


class Join(beampipe.Worker):
    """Forms events of ports ``a`` and ``b``: ``x = a.x + b.x`` of the parts present, metadata
    ``missing`` (the missing ports). Touches ``flag`` at the first incomplete event."""

    inputs = ("a", "b")
    events = True

    class Params(beampipe.Params):
        flag: str | None = None

    def process(self, event: beampipe.Event) -> beampipe.Message:
        if event.missing and self.params.flag:
            Path(self.params.flag).touch()
        x = sum(float(m.data["x"]) for m in event.messages.values())
        return beampipe.Message(data={"x": x}, metadata={"missing": list(event.missing)})


class Tag(beampipe.Worker):
    """Passes messages on with ``metadata["replica"]``; sleeps ``delay`` s per message, or
    ``delay * slow_factor`` on replica ``slow_replica``; with ``jitter``, a random delay in
    [0, jitter) s instead (seeded per replica). Replica ``slow_replica`` sleeps
    ``finish_delay`` s in ``on_finish``."""

    class Params(beampipe.Params):
        delay: float = 0.0
        slow_replica: int = -1
        slow_factor: float = 10.0
        jitter: float = 0.0
        finish_delay: float = 0.0

    def on_finish(self) -> None:
        if self.replica == self.params.slow_replica:
            time.sleep(self.params.finish_delay)

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        p = self.params
        if p.jitter:
            if not hasattr(self, "_rng"):
                self._rng = random.Random(self.replica)
            time.sleep(self._rng.random() * p.jitter)
        elif p.delay:
            time.sleep(p.delay * (p.slow_factor if self.replica == p.slow_replica else 1))
        return beampipe.Message(data=dict(msg.data), metadata={"replica": self.replica})


class Flaky(beampipe.Worker):
    """Raises ValueError on every ``every``-th id; raises beampipe.TransientError on the
    first ``transient`` attempts at each id in ``transient_ids``; otherwise passes on."""

    class Params(beampipe.Params):
        every: int = 0
        transient_ids: tuple[int, ...] = ()
        transient: int = 1

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.attempts: dict[int, int] = {}

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        p = self.params
        if p.every and msg.id % p.every == 0:
            raise ValueError(f"bad point {msg.id}")
        if msg.id in p.transient_ids:
            self.attempts[msg.id] = self.attempts.get(msg.id, 0) + 1
            if self.attempts[msg.id] <= p.transient:
                raise beampipe.TransientError(f"not ready yet ({self.attempts[msg.id]})")
        return beampipe.Message(
            data=dict(msg.data), metadata={"attempts": self.attempts.get(msg.id, 1)}
        )


class Diff(beampipe.Worker):
    """Stateful: ``dx`` = x minus the x of the previous message of the same block of ten ids
    seen by this replica (``nan`` for the first)."""

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.last: dict[tuple[str, int], float] = {}

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        x = float(msg.data["x"])
        block = (msg.stream, msg.id // 10)
        dx = x - self.last.get(block, np.nan)
        self.last[block] = x
        return beampipe.Message(data={"dx": dx}, metadata={"replica": self.replica})


class Collect(beampipe.Worker):
    """Sink: one JSON line per message (stream, id, port, metadata, 0-d data as floats) in
    ``path``, written at close, in arrival order. Touches the file ``flag`` when it has
    received ``flag_after`` messages. Sleeps ``delay`` s per message."""

    outputs = ()
    inputs = None

    class Params(beampipe.Params):
        path: str
        flag: str | None = None
        flag_after: int = 0
        delay: float = 0.0

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.rows: list[dict[str, Any]] = []

    def process(self, msg: beampipe.Message) -> None:
        data = {k: float(v) for k, v in msg.data.items() if np.ndim(v) == 0}
        self.rows.append(
            {"stream": msg.stream, "id": msg.id, "port": msg.port, "meta": msg.metadata, **data}
        )
        if self.params.flag and len(self.rows) == self.params.flag_after:
            Path(self.params.flag).touch()
        if self.params.delay:
            time.sleep(self.params.delay)

    def close(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.rows)
        Path(self.params.path).write_text(text)


class RunningSum(beampipe.Worker):
    """Stateful: ``total`` = the sum of ``x`` over the stream so far, in arrival order; keeps
    its state across a restart with :meth:`snapshot` / :meth:`restore`."""

    stateful = True

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.totals: dict[str, float] = {}

    def on_stream_start(self, stream: str, metadata: dict) -> None:
        self.totals[stream] = 0.0

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        self.totals[msg.stream] += float(msg.data["x"])
        return beampipe.Message(data={"total": self.totals[msg.stream]})

    def on_stream_end(self, stream: str) -> None:
        del self.totals[stream]

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)

    def restore(self, state: dict[str, float]) -> None:
        self.totals = state


class ForgetfulSum(RunningSum):
    """:class:`RunningSum` not declared stateful: a restart loses the totals."""

    stateful = False


class TupleBurst(beampipe.Source):
    """Yields a stream's messages as a tuple, which is not a burst (only a list is)."""

    def generate(self):
        yield beampipe.StreamStart("s0", {})
        yield (beampipe.Message(data={"x": 1.0}, stream="s0", id=1),)
        yield beampipe.EndOfStream("s0", 1)
