"""Nodes that return (or yield) what the runtime cannot send, for tests/test_worker_results.py
(copied next to the test's pipeline file)."""

from __future__ import annotations

import numpy as np

import beampipe

BAD = {
    10: "tuple",
    20: "port",
    30: "negative",
    40: "duplicate",
    50: "object",
    60: "metadata",
    70: "set",
}
"""The id whose result is bad, and how (see :func:`bad_result`)."""


def bad_result(kind: str, msg: beampipe.Message):
    """A wrong return value of ``process`` for ``msg``, of the given kind."""
    good = beampipe.Message(data=dict(msg.data))
    if kind == "tuple":  # meant as (message, port), or two results
        return good, beampipe.Message(data=dict(msg.data))
    if kind == "port":
        return {"outt": good}
    if kind == "negative":
        return beampipe.Message(data=dict(msg.data), id=-5)
    if kind == "duplicate":
        return [good, beampipe.Message(data={"y": 1.0})]
    if kind == "object":
        return beampipe.Message(data={"x": np.array([{"a": 1}, None], dtype=object)})
    if kind == "metadata":
        return beampipe.Message(data=dict(msg.data), metadata={"gain": {"value": np.int64(3)}})
    if kind == "set":
        return {good.stream or "x"}
    raise ValueError(kind)


class Bad(beampipe.Worker):
    """Passes messages on, except that the result for an id in ``ids`` (default: every id in
    :data:`BAD`) is bad in the way :data:`BAD` names; ``only`` restricts it to one kind."""

    class Params(beampipe.Params):
        only: str | None = None

    def process(self, msg: beampipe.Message):
        kind = BAD.get(msg.id)
        if kind is None or (self.params.only is not None and kind != self.params.only):
            return beampipe.Message(data=dict(msg.data))
        return bad_result(kind, msg)


SOURCE_BAD = {10: "negative", 20: "port", 30: "metadata", 40: "object", 50: "stream"}
"""The id the source yields wrongly, and how (see :class:`BadSource`)."""


class BadSource(beampipe.Source):
    """One stream ``s0`` of ``n`` messages ``x = id``; the message of an id in
    :data:`SOURCE_BAD` is wrong in the way it names (``only``: just that kind)."""

    class Params(beampipe.Params):
        n: int = 100
        only: str | None = None

    def generate(self):
        p = self.params
        yield beampipe.StreamStart("s0", {})
        for i in range(1, p.n + 1):
            kind = SOURCE_BAD.get(i)
            if p.only is not None and kind != p.only:
                kind = None
            msg = beampipe.Message(data={"x": float(i)}, stream="s0", id=i)
            if kind == "negative":
                msg.id = -i
            elif kind == "port":
                msg.port = "outt"
            elif kind == "metadata":
                msg.metadata = {"when": {1, 2}}
            elif kind == "object":
                msg.data["x"] = np.array([None, 1], dtype=object)
            elif kind == "stream":
                msg.stream = ""
            yield msg
        yield beampipe.EndOfStream("s0", p.n)
