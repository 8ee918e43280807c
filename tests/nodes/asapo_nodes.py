"""Node classes for the ASAP::O tests (copied next to the test's pipeline file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import beampipe


class Scale(beampipe.Worker):
    """``image = 2 * data + 1`` as float32; metadata: the ``frame`` of the input."""

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        image = msg.data["data"].astype(np.float32) * 2 + 1
        return beampipe.Message(data={"image": image}, metadata={"frame": msg.metadata["frame"]})


class Pass(beampipe.Worker):
    """Passes every message on unchanged (data and metadata)."""

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        return beampipe.Message(data=dict(msg.data), metadata=msg.metadata)


class Keep(beampipe.Worker):
    """Sink: one JSON line per message in ``path`` (written at close): stream, id, metadata
    and every data entry as ``{"dtype", "shape", "values"}`` (arrays) or ``{"bytes"}`` (hex)."""

    outputs = ()

    class Params(beampipe.Params):
        path: str

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.rows: list[dict[str, Any]] = []

    def process(self, msg: beampipe.Message) -> None:
        data = {
            k: {"bytes": v.hex()}
            if isinstance(v, bytes)
            else {"dtype": v.dtype.str, "shape": list(v.shape), "values": v.ravel().tolist()}
            for k, v in msg.data.items()
        }
        self.rows.append({"stream": msg.stream, "id": msg.id, "meta": msg.metadata, "data": data})

    def close(self) -> None:
        Path(self.params.path).write_text("".join(json.dumps(r) + "\n" for r in self.rows))
