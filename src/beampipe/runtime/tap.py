"""The tap: a side channel through which viewers look at a node's output ports.

Each node process binds one ZeroMQ XPUB socket next to its output ports and reports its endpoint
to the launcher (``bound`` message, key ``tap``). A viewer connects a SUB socket and subscribes to
the topic of a port (:func:`topic`). The node publishes on that topic only while somebody is
subscribed, so an unwatched pipeline pays one set lookup per message.

The tap never slows the data path:

* publishing is non-blocking; XPUB drops messages for a subscriber whose queue (:data:`HWM`
  messages) is full, so a slow browser loses frames, not the pipeline throughput;
* small messages (wire size up to :data:`SMALL`, e.g. scan points) are published as they go out;
* large messages (detector frames) are *conflated*: at most :data:`RATE` per second and port are
  published; a frame that arrives too soon replaces the one waiting, and the waiting frame is
  published when its time comes (:meth:`Tap.flush`), so the latest frame of a stream is always
  seen;
* stream markers (:class:`~beampipe.StreamStart`, :class:`~beampipe.EndOfStream`) are always
  published, after the stream's waiting frame.

Each published ZeroMQ message is ``[topic, *frames]``, where ``frames`` is the item's wire
encoding (:mod:`beampipe.message.wire`): the viewer decodes it with
:func:`beampipe.message.decode`.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from beampipe.message import Item, Message
from beampipe.transport import wire_size
from beampipe.transport.security import Gate

HWM = 1000
"""Messages queued per subscriber before the tap drops."""
SMALL = 65536
"""Messages of at most this many wire bytes are published one by one."""
RATE = 10.0
"""Large messages published per second and port, at most."""


def topic(port: str) -> bytes:
    """The subscription topic of output ``port`` (the NUL keeps ``out`` from matching ``out2``)."""
    return port.encode() + b"\0"


class Tap:
    """The XPUB side of one node process. See the module docstring."""

    def __init__(self, ctx: zmq.Context, address: str, gate: Gate | None = None) -> None:
        self.socket = ctx.socket(zmq.XPUB)
        if gate is not None:  # only viewers with the run's credentials subscribe
            gate.serve(self.socket, "tap")
        self.socket.setsockopt(zmq.SNDHWM, HWM)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(address)
        self.watched: set[str] = set()
        """Output ports somebody subscribes to."""
        self._pending: dict[str, list[Any]] = {}
        """Per port: the conflated frames waiting for their turn."""
        self._last: dict[str, float] = {}
        """Per port: monotonic time of the last large message published."""
        self.dropped = 0
        """Large messages replaced by a newer one before they were published."""

    @property
    def endpoint(self) -> str:
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def handle(self) -> None:
        """Read the subscriptions and unsubscriptions that arrived on the socket."""
        while self.socket.poll(0):
            frame = self.socket.recv()
            if not frame or frame[0] not in (0, 1) or not frame.endswith(b"\0"):
                continue
            port = frame[1:-1].decode(errors="replace")
            if frame[0] == 1:
                self.watched.add(port)
            else:
                self.watched.discard(port)
                self._pending.pop(port, None)

    def offer(self, port: str, item: Item, frames: list[Any]) -> None:
        """``item`` (encoded as ``frames``) leaves through ``port``: publish it if watched."""
        if port not in self.watched:
            return
        if not isinstance(item, Message):
            self._publish_pending(port)
            self._publish(port, frames)
        elif wire_size(frames) <= SMALL:
            self._publish(port, frames)
        else:
            if port in self._pending:
                self.dropped += 1
            self._pending[port] = frames
            self.flush()

    def flush(self) -> None:
        """Publish the waiting large messages whose time has come."""
        if not self._pending:
            return
        now = time.monotonic()
        for port in list(self._pending):
            if now - self._last.get(port, -1e9) >= 1.0 / RATE:
                self._publish_pending(port, now)

    @property
    def next_flush(self) -> float | None:
        """Monotonic time at which :meth:`flush` has something to publish, if anything waits."""
        if not self._pending:
            return None
        return min(self._last.get(p, 0.0) + 1.0 / RATE for p in self._pending)

    def _publish_pending(self, port: str, now: float | None = None) -> None:
        frames = self._pending.pop(port, None)
        if frames is not None:
            self._last[port] = time.monotonic() if now is None else now
            self._publish(port, frames)

    def _publish(self, port: str, frames: list[Any]) -> None:
        # XPUB drops (never blocks) when a subscriber's queue is full.
        self.socket.send_multipart([topic(port), *frames], flags=zmq.NOBLOCK, copy=False)
