"""The hit rate of each stream, the number serial crystallographers watch: ``use: hit_rate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import beampipe
from beampipe.nodes.columns import numeric

__all__ = ["HitRate"]


@dataclass
class _Count:
    frames: int = 0
    hits: int = 0
    peaks: int = 0


class HitRate(beampipe.Reducer):
    """Counts the frames and the hits of each stream (``peaks.find``'s ``hit`` and
    ``n_peaks``), whichever upstream replica found them.

    Output, per stream (id = the highest id counted so far), every ``every`` frames and/or
    ``interval`` seconds and at the end of the stream, data, all 0-d: ``frames`` (int64),
    ``hits`` (int64), ``hit_rate`` (float64, ``hits / frames``), ``peaks`` (int64, the peaks of
    every frame counted); metadata: the same numbers, ``final`` and ``signal: hit_rate``.

    Raises:
        MissingColumn: (a ``KeyError``) a message has no ``hit`` (or ``n_peaks``) entry.
        ValueError: ``hit`` or ``n_peaks`` is not a single value.
    """

    class Params(beampipe.ReducerParams):
        """``hit``, ``n_peaks``: the data names of the hit flag and of the number of peaks."""

        hit: str = "hit"
        n_peaks: str = "n_peaks"

    params: HitRate.Params

    def start(self, group: str, metadata: dict[str, Any]) -> _Count:
        return _Count()

    def reduce(self, state: _Count, msg: beampipe.Message) -> _Count:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        hit, n_peaks = (numeric(msg, k, where) for k in (self.params.hit, self.params.n_peaks))
        for key, value in ((self.params.hit, hit), (self.params.n_peaks, n_peaks)):
            if value.size != 1:
                raise ValueError(f"{where}: {key!r} has {value.size} values, not one")
        state.frames += 1
        state.hits += bool(hit.reshape(()))
        state.peaks += int(n_peaks.reshape(()))
        return state

    def result(self, group: str, state: _Count, final: bool) -> beampipe.Message:
        rate = state.hits / state.frames if state.frames else float("nan")
        data = {
            "frames": np.asarray(state.frames, dtype=np.int64),
            "hits": np.asarray(state.hits, dtype=np.int64),
            "hit_rate": np.asarray(rate, dtype=np.float64),
            "peaks": np.asarray(state.peaks, dtype=np.int64),
        }
        metadata = {
            "frames": state.frames,
            "hits": state.hits,
            "hit_rate": rate,
            "peaks": state.peaks,
            "final": final,
            "signal": "hit_rate",
        }
        return beampipe.Message(data=data, metadata=metadata)
