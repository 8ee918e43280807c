"""Removal of glitches (single-point spikes) from XAS spectra: ``use: xas.deglitch``.

The algorithm is xraylarch's ``larch.math.deglitch.remove_spikes_medfilt1d`` with the silx
backend: a conditional median filter of ``kernel_size`` points (``silx.math.medianfilter.
medfilt1d``); a point whose relative difference from the filtered value,
``|(filtered - y) / filtered|``, exceeds ``threshold`` is a glitch.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat

import beampipe
from beampipe.nodes.columns import MissingColumn, column

__all__ = ["Deglitch", "MissingColumn"]

log = logging.getLogger(__name__)


class Deglitch(beampipe.Worker):
    """Finds and removes glitches in each stream's spectrum, listing them.

    Input: messages with ``energy`` (eV) and ``mu`` (names set by the params), one per point or
    per chunk. The points of a stream are collected; at its end one message is sent with all of
    them, sorted by energy (stable sort), non-finite points left out:

    * data, 1-D float64: ``energy``, ``mu`` (deglitched: with ``mode: replace`` a glitch is
      replaced by the median-filtered value, as larch does; with ``mode: remove`` it is left
      out), ``glitch_energy``, ``glitch_mu`` (the glitches as measured), ``glitch_index``
      (int64, their indices in the sorted input spectrum).
    * metadata: ``n_glitches``, ``n_points`` (of the input), ``kernel_size``, ``threshold``,
      ``mode``, ``signal: "mu"``, ``axes: ["energy"]``, ``units``.

    A stream with glitches logs a warning naming them (they reach the run's summary).

    Raises:
        MissingColumn: (a ``KeyError``) a column is not in a message.
        ValueError: energy and mu of a message differ in size.
    """

    class Params(beampipe.Params):
        """``energy``, ``mu``: input columns. ``kernel_size``: points of the median filter
        (odd, >= 3). ``threshold``: relative difference that makes a glitch. ``mode``:
        ``replace`` (larch's) or ``remove``."""

        energy: str = "energy"
        mu: str = "mu"
        kernel_size: int = Field(3, ge=3)
        threshold: PositiveFloat = 0.1
        mode: Literal["replace", "remove"] = "replace"

        def model_post_init(self, context: Any) -> None:
            if self.kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be odd, not {self.kernel_size}")

    params: Deglitch.Params

    def __init__(self, params: Deglitch.Params, name: str = "") -> None:
        super().__init__(params, name)
        from larch.math.deglitch import remove_spikes_medfilt1d

        self._remove = remove_spikes_medfilt1d
        self._points: dict[str, list[np.ndarray]] = {}
        self._last_id: dict[str, int] = {}

    def process(self, msg: beampipe.Message) -> None:
        p = self.params
        energy = column(msg, p.energy, self.name).ravel()
        mu = column(msg, p.mu, self.name).ravel()
        if energy.size != mu.size:
            raise ValueError(
                f"{self.name}: {p.energy!r} has {energy.size} values, {p.mu!r} {mu.size}"
            )
        self._points.setdefault(msg.stream, []).append(np.stack([energy, mu]))
        self._last_id[msg.stream] = max(self._last_id.get(msg.stream, 0), msg.id)
        return None

    def deglitch(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """larch's filtered spectrum of ``mu`` and the indices of the glitches."""
        p = self.params
        filtered = self._remove(
            mu, backend="silx", kernel_size=p.kernel_size, threshold=p.threshold
        )
        return filtered, np.flatnonzero(filtered != mu)

    def on_stream_end(self, stream: str) -> beampipe.Message | None:
        chunks = self._points.pop(stream, [])
        if not chunks:
            return None
        p = self.params
        energy, mu = np.concatenate(chunks, axis=1)
        good = np.isfinite(energy) & np.isfinite(mu)
        order = np.argsort(energy[good], kind="stable")
        energy, mu = energy[good][order], mu[good][order]
        filtered, glitches = self.deglitch(mu)
        if p.mode == "replace":
            out_energy, out_mu = energy, filtered
        else:
            keep = np.ones(energy.size, dtype=bool)
            keep[glitches] = False
            out_energy, out_mu = energy[keep], mu[keep]
        if glitches.size:
            log.warning(
                "%s: stream %r: %d glitch(es) %s at %s eV",
                self.name,
                stream,
                glitches.size,
                "replaced" if p.mode == "replace" else "removed",
                ", ".join(f"{e:g}" for e in energy[glitches][:10]),
            )
        data = {
            "energy": out_energy,
            "mu": out_mu,
            "glitch_energy": energy[glitches],
            "glitch_mu": mu[glitches],
            "glitch_index": glitches.astype(np.int64),
        }
        metadata = {
            "n_glitches": int(glitches.size),
            "n_points": int(energy.size),
            "kernel_size": p.kernel_size,
            "threshold": p.threshold,
            "mode": p.mode,
            "signal": "mu",
            "axes": ["energy"],
            "units": {"energy": "eV", "glitch_energy": "eV"},
        }
        return beampipe.Message(
            data=data, metadata=metadata, stream=stream, id=self._last_id.pop(stream)
        )

    def close(self) -> None:
        self._points.clear()
