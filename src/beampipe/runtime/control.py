"""The control channel between a node process and its launcher.

One DEALER per node process (routing id ``node#replica``) connected to the launcher's ROUTER.
Every message is one msgpack-encoded dict with a ``"t"`` (type) key:

node -> launcher
    ``hello`` {node, replica, pid, host} · ``bound`` {endpoints: {port: endpoint}, tap} ·
    ``progress`` {streams: {stream: messages}} · ``stream_end`` {stream, messages, t_first, t_last}
    · ``error`` {node, replica, stream, id, error, traceback} · ``done`` {metrics}
launcher -> node
    ``setup`` {pipeline, bind, window} · ``connect`` {inputs: [{port, upstream, endpoint}]} ·
    ``stop`` {}
"""

from __future__ import annotations

from typing import Any

import msgpack
import zmq


def identity(node: str, replica: int) -> bytes:
    """The routing id of a node replica on the control channel."""
    return f"{node}#{replica}".encode()


def pack(kind: str, **fields: Any) -> bytes:
    return msgpack.packb({"t": kind, **fields})


def unpack(frame: bytes) -> dict[str, Any]:
    return msgpack.unpackb(frame, raw=False)


class ControlClient:
    """The node side of the control channel."""

    def __init__(self, ctx: zmq.Context, endpoint: str, node: str, replica: int) -> None:
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, identity(node, replica))
        self.socket.setsockopt(zmq.LINGER, 5000)
        self.socket.connect(endpoint)

    def send(self, kind: str, **fields: Any) -> None:
        self.socket.send(pack(kind, **fields))

    def recv(self, timeout_ms: int) -> dict[str, Any] | None:
        """The next message, or None after ``timeout_ms``."""
        if self.socket.poll(timeout_ms):
            return unpack(self.socket.recv())
        return None
