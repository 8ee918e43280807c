"""A sink that keeps everything it receives, arrays included, for tests that compare frames
and messages exactly (copied next to the test's pipeline file)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

import beampipe


class Capture(beampipe.Worker):
    """Sink: every stream start ``("start", stream, metadata)``, message ``("msg", stream, id,
    port, metadata, data, timestamps)`` and stream end ``("end", stream)``, in arrival order,
    pickled to ``path`` at close; :func:`load` reads them back with every array's dtype (byte
    order included), shape and bytes as received, and bytes as bytes."""

    outputs = ()
    inputs = None

    class Params(beampipe.Params):
        path: str

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.items: list[tuple[Any, ...]] = []

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        self.items.append(("start", stream, metadata))

    def process(self, msg: beampipe.Message) -> None:
        # (dtype, shape, bytes), as pickle turns big-endian arrays into native ones
        data = {
            k: v if isinstance(v, bytes) else (v.dtype.str, v.shape, v.tobytes())
            for k, v in msg.data.items()
        }
        self.items.append(("msg", msg.stream, msg.id, msg.port, msg.metadata, data, msg.timestamps))

    def on_stream_end(self, stream: str) -> None:
        self.items.append(("end", stream))

    def close(self) -> None:
        Path(self.params.path).write_bytes(pickle.dumps(self.items))


def load(path: str | Path) -> list[tuple[Any, ...]]:
    """What a :class:`Capture` node wrote, arrays rebuilt with their dtype and shape."""
    items = pickle.loads(Path(path).read_bytes())
    for item in items:
        if item[0] == "msg":
            for name, value in item[5].items():
                if isinstance(value, tuple):
                    dtype, shape, raw = value
                    item[5][name] = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
    return items
