"""Stand-ins for the diffraction nodes of issue 18 (azimuthal integration, peak finding, hit
rate), sending messages of the shapes those nodes send, for the viewer tests (copied next to the
test's pipeline file). The values are made up but deterministic (:func:`pattern`,
:func:`n_peaks`), so a test can compute what the page must show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import beampipe

NPT = 300
"""Points of a pattern."""


def pattern(stream: int, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q, intensity, sigma)`` of frame ``frame`` (1, 2, ...) of stream number ``stream``:
    q in nm^-1, a decaying background with two Bragg rings that move with the frame number,
    Poisson sigma."""
    q = np.linspace(0.5, 40.0, NPT)
    peaks = sum(
        1000.0 * np.exp(-0.5 * ((q - centre - 0.05 * frame) / 0.3) ** 2) for centre in (12, 27)
    )
    intensity = 50.0 + 2000.0 / q**2 + (1 + stream) * peaks
    return q, intensity, np.sqrt(intensity)


def n_peaks(frame: int) -> int:
    """The peaks found in frame ``frame``: 0 to 24, a hit at 10 or more (40 % of frames)."""
    return (frame * 7) % 25


class Patterns(beampipe.Source):
    """``streams`` runs of ``frames`` frames each, ``rate`` frames per second: per frame
    ``intensity``, ``sigma`` and ``q`` (float64, (NPT,)) with metadata ``signal: intensity``,
    ``axes: [q]``, ``units: {q: nm^-1}``, as ``azint.integrate1d`` sends them."""

    class Params(beampipe.Params):
        streams: int = 2
        frames: int = 40
        rate: float = 20.0

    def generate(self):
        p = self.params
        metadata = {"signal": "intensity", "axes": ["q"], "units": {"q": "nm^-1"}}
        for s in range(p.streams):
            name = f"run_{s + 1:05d}"
            yield beampipe.StreamStart(name, metadata)
            for i in range(1, p.frames + 1):
                q, intensity, sigma = pattern(s, i)
                data = {"intensity": intensity, "sigma": sigma, "q": q}
                yield beampipe.Message(data=data, metadata=metadata, stream=name, id=i)
                time.sleep(1 / p.rate)
            yield beampipe.EndOfStream(name, p.frames)


class Peaks(beampipe.Worker):
    """Per frame ``n_peaks`` (int64, 0-d) and ``hit`` (bool, 0-d: ``n_peaks >= min_peaks``), as
    ``peaks.find`` sends them."""

    class Params(beampipe.Params):
        min_peaks: int = 10

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        n = n_peaks(msg.id)
        return beampipe.Message(
            data={"n_peaks": np.int64(n), "hit": np.bool_(n >= self.params.min_peaks)}
        )


@dataclass
class _Count:
    frames: int = 0
    hits: int = 0


class HitRate(beampipe.Reducer):
    """Per stream ``frames``, ``hits`` (int64) and ``hit_rate`` (float64, hits / frames), every
    ``every`` frames and at the end, as the hit-rate reducer sends them."""

    def start(self, group: str, metadata: dict[str, Any]) -> _Count:
        return _Count()

    def reduce(self, state: _Count, msg: beampipe.Message) -> _Count:
        state.frames += 1
        state.hits += bool(msg.data["hit"])
        return state

    def result(self, group: str, state: _Count, final: bool) -> beampipe.Message:
        data = {
            "frames": np.int64(state.frames),
            "hits": np.int64(state.hits),
            "hit_rate": np.float64(state.hits / state.frames),
        }
        return beampipe.Message(data=data, metadata={"signal": "hit_rate"})


class Discard(beampipe.Worker):
    """A sink that drops what it receives (so the hit rate has somewhere to go, and a tap)."""

    outputs = ()

    def process(self, msg: beampipe.Message) -> None:
        return None
