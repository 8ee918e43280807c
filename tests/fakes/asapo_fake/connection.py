"""The fake clients' side of the wire to :mod:`asapo_fake.broker` (one DEALER socket)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgpack
import zmq


class NoReply(Exception):
    """The broker did not answer in time (it is not running, or not at that endpoint)."""


class BrokerError(Exception):
    """The broker answered with an error: ``kind`` names the client exception to raise."""

    def __init__(self, kind: str, message: str, args: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.fields = args


class Connection:
    """Requests to the broker at ``endpoint`` (``host:port``), for one thread."""

    _rids = itertools.count(1)

    def __init__(self, endpoint: str, credentials: dict[str, str]) -> None:
        self.credentials = credentials
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://{endpoint}")

    def call(self, op: str, timeout_ms: int, wait_ms: int = 0, **args: Any) -> Any:
        """Send request ``op`` and return its answer; the broker may hold it up to ``wait_ms``
        for data. Raises :class:`NoReply` after ``wait_ms + timeout_ms`` without an answer,
        :class:`BrokerError` for an error answer."""
        rid = next(self._rids)
        request = {"op": op, "rid": rid, "wait_ms": wait_ms, **self.credentials, **args}
        self.socket.send(msgpack.packb(request))
        deadline = time.monotonic() + (wait_ms + timeout_ms) / 1000
        while (left := deadline - time.monotonic()) > 0:
            if not self.socket.poll(max(1, int(left * 1000))):
                continue
            reply = msgpack.unpackb(self.socket.recv())
            if reply["rid"] != rid:  # the late answer to a request that timed out
                continue
            if "error" in reply:
                raise BrokerError(reply["error"], reply["message"], reply["args"])
            return reply["ok"]
        raise NoReply(f"no answer from the broker in {(wait_ms + timeout_ms) / 1000:g} s")

    def close(self) -> None:
        self.socket.close(0)
