"""A source of messages with every kind of content the wire carries, for record-and-replay
tests (copied next to the test's pipeline file)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

import beampipe


def payload(stream: int, i: int) -> dict[str, np.ndarray | bytes]:
    """The data of message ``i`` (1-based) of stream ``stream`` (0 or 1)."""
    rng = np.random.default_rng(100 * stream + i)
    # NaNs with different payloads, signed zeros and infinities must come back bit for bit
    nans = np.frombuffer(struct.pack("<2Q", 0x7FF8000000000001, 0xFFF0000000000042), "<f8")
    data: dict[str, np.ndarray | bytes] = {
        "image": rng.integers(0, 2**16, size=(16, 12), dtype=np.uint16),
        "big": rng.random((130, 130), dtype=np.float32),  # > 64 KiB: travels in its own frame
        "be": np.array([i, -i, 2**30], dtype=">i4"),
        "half": np.array(i / 3, dtype=np.float16),
        "scalar": np.array(float(i)),
        "complex": np.array([i + 1j, -1j], dtype=np.complex64),
        "flags": np.array([[True, False], [i % 2 == 0, True]]),
        "text": np.array(["ab", "µ" * (i % 3 + 1)], dtype="<U5"),
        "raw": bytes(range(i % 4 + 1)),
        "when": np.array(["2024-03-01T12:00", "2024-03-02"], dtype="datetime64[ms]") + i,
        "grow": np.arange(float(i)),
        "special": np.concatenate([nans, [-0.0, np.inf, -np.inf]]),
        "empty": np.zeros((0, 3)),
    }
    if i % 2:
        data["sometimes"] = np.array([i], dtype=np.uint64)
    return data


class Variety(beampipe.Source):
    """Two interleaved streams, ``scan/1`` and ``plain``, of ``n`` messages each with the
    data of :func:`payload`; ``scan/1`` ends before the last message of ``plain``."""

    class Params(beampipe.Params):
        n: int = 6

    def generate(self) -> Iterator[beampipe.message.Item]:
        names = ["scan/1", "plain"]
        yield beampipe.StreamStart(names[0], {"title": "Fe K-edge, 20 K", "n": self.params.n})
        yield beampipe.StreamStart(
            names[1], {"nested": {"list": [1, 2.5, None, True], "unit": "µm"}, "empty": {}}
        )
        for i in range(1, self.params.n + 1):
            for s, name in enumerate(names):
                meta = {"i": i, "odd": bool(i % 2), "x": i / 7, "tags": ["a", str(s)]}
                yield beampipe.Message(data=payload(s, i), metadata=meta, stream=name, id=i)
                if s == 0 and i == self.params.n:
                    yield beampipe.EndOfStream(names[0], self.params.n)
        yield beampipe.EndOfStream(names[1], self.params.n)
