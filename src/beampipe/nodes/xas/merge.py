"""Average of repeated XAS scans: ``use: xas.merge``.

``xas.merge`` folds the final normalised spectra of ``xas.normalize``
(:mod:`beampipe.nodes.xas.normalize`) into their mean on a common energy grid (a reducer: one
replica, all streams into one output stream).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat, model_validator

import beampipe
from beampipe.nodes.columns import MissingColumn, column

__all__ = ["Merge", "MergeGrid", "MissingColumn"]


class MergeGrid(beampipe.Params):
    """An explicit energy grid: ``start``, ``start + step``, ... up to ``stop`` (included when it
    falls on the grid), in eV."""

    start: float
    stop: float
    step: PositiveFloat

    @model_validator(mode="after")
    def _increasing(self) -> MergeGrid:
        if not self.stop > self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        return self

    def points(self) -> np.ndarray:
        n = math.floor((self.stop - self.start) / self.step * (1 + 1e-12)) + 1
        return self.start + self.step * np.arange(n)


@dataclass
class _Scan:
    """The final normalised spectrum of one stream, sorted by energy."""

    energy: np.ndarray
    norm: np.ndarray
    flat: np.ndarray | None
    e0: float | None


@dataclass
class _Merged:
    """The merge so far: the final spectrum of every stream folded, by stream name."""

    header: dict[str, Any]
    scans: dict[str, _Scan] = field(default_factory=dict)
    emitted: int = 0


class Merge(beampipe.Reducer):
    """Average of the normalised spectra of repeated scans, on a common energy grid.

    Input: the output of ``xas.normalize``. Only *final* spectra (metadata ``final: true``, the
    one per scan emitted at its end) are merged; intermediate ones are ignored (not counted by
    ``every``). All streams fold into one group, the output stream ``stream`` (``"merged"``); a
    second final spectrum of the same input stream replaces the first.

    The merge, computed over the scans folded so far, sorted by stream name (so the result does
    not depend on the order in which scans arrive, e.g. from several ``xas.normalize``
    replicas routed ``by_key``):

    * grid: ``grid: first`` (default): the energies of the scan whose stream name sorts first;
      or ``{start, stop, step}`` (eV). The grid is cut to the energy range that *every* merged
      scan covers, so nothing is extrapolated (an error if the scans do not overlap).
    * each scan's ``norm`` (and ``flat``) is linearly interpolated onto the grid
      (``numpy.interp``), then averaged; ``norm_std`` is the standard deviation over the scans
      at each grid point, ``ddof=0`` (0 for a single scan; the standard error of the mean is
      ``norm_std / sqrt(n_scans - 1)``).

    Emits, on the output stream, after every ``every`` final spectra (default 1: each time a
    scan ends) and/or ``interval`` seconds, and once more when every input has finished
    (``final: true``), the merge so far; ids 1, 2, 3, ... The stream opens with a
    :class:`~beampipe.StreamStart` whose header has a ``title`` and the ``beamline``,
    ``facility``, ``mono_crystal`` and ``scan_mode`` of the first scan folded (where known).
    Write it in ``replace`` mode so the file holds the latest merge.

    * data, float64: ``energy`` (the grid, eV), ``norm`` (mean), ``norm_std``, ``flat`` (mean;
      only with ``flat`` set), ``n_scans`` (int64, 0-d).
    * metadata: ``signal: "norm"``, ``axes: ["energy"]``, ``units: {"energy": "eV", "e0":
      "eV"}``, ``scans`` (the stream names merged, sorted), ``e0`` (mean of the scans' ``e0``;
      left out if a scan has none), ``final``.

    Raises:
        MissingColumn: (a ``KeyError``) a named column is not in a final spectrum.
        ValueError: energy and norm (or flat) differ in size; an input stream has the name of
            the output stream; the scans have no energy range in common.
    """

    class Params(beampipe.ReducerParams):
        """``every``: emit after so many final spectra (default 1; 0: only at the end).
        ``stream``: the output stream. ``grid``: ``first`` or ``{start, stop, step}`` (eV).
        ``energy``, ``norm``, ``flat``: input data names (``flat: null``: do not merge it)."""

        every: int = Field(default=1, ge=0)
        stream: str = Field("merged", min_length=1)
        grid: Literal["first"] | MergeGrid = "first"
        energy: str = "energy"
        norm: str = "norm"
        flat: str | None = "flat"

    params: Merge.Params

    HEADER_KEYS = ("beamline", "facility", "mono_crystal", "scan_mode")
    """Items of the first folded scan's header copied to the output stream's header."""

    def group(self, msg: beampipe.Message) -> str:
        return self.params.stream

    def process(self, msg: beampipe.Message) -> Any:
        if not msg.metadata.get("final"):
            return None
        if msg.stream == self.params.stream:
            raise ValueError(
                f"{self.name}: input stream {msg.stream!r} has the name of the output stream; "
                "set the node's params.stream to another name"
            )
        return super().process(msg)

    def start(self, group: str, metadata: dict[str, Any]) -> _Merged:
        header = {"title": f"{group}: mean of normalised spectra"}
        header.update({k: metadata[k] for k in self.HEADER_KEYS if metadata.get(k) is not None})
        return _Merged(header=header)

    def reduce(self, state: _Merged, msg: beampipe.Message) -> _Merged:
        p = self.params
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        energy = column(msg, p.energy, where).ravel()
        norm = column(msg, p.norm, where).ravel()
        flat = column(msg, p.flat, where).ravel() if p.flat is not None else None
        for name, values in ((p.norm, norm), (p.flat, flat)):
            if values is not None and values.size != energy.size:
                raise ValueError(
                    f"{where}: {p.energy!r} has {energy.size} values, {name!r} {values.size}"
                )
        if np.any(np.diff(energy) < 0):  # np.interp needs increasing energies
            order = np.argsort(energy, kind="stable")
            energy, norm = energy[order], norm[order]
            flat = flat[order] if flat is not None else None
        e0 = msg.metadata.get("e0")
        e0 = float(e0) if isinstance(e0, int | float) and not isinstance(e0, bool) else None
        state.scans[msg.stream] = _Scan(energy, norm, flat, e0)
        return state

    def result(
        self, group: str, state: _Merged, final: bool
    ) -> beampipe.Message | list[beampipe.Message | beampipe.StreamStart]:
        names = sorted(state.scans)
        scans = [state.scans[n] for n in names]
        grid = scans[0].energy if self.params.grid == "first" else self.params.grid.points()
        lo = max(s.energy[0] for s in scans)
        hi = min(s.energy[-1] for s in scans)
        grid = grid[(grid >= lo) & (grid <= hi)]
        if grid.size == 0:
            raise ValueError(
                f"{self.name}: no grid point in the energy range common to the scans "
                f"{', '.join(names)} ({lo:g} to {hi:g} eV)"
            )
        norm = np.stack([np.interp(grid, s.energy, s.norm) for s in scans])
        data: dict[str, Any] = {
            "energy": np.array(grid, dtype=np.float64),
            "norm": norm.mean(axis=0),
            "norm_std": norm.std(axis=0, ddof=0),
        }
        if self.params.flat is not None:
            flat = np.stack([np.interp(grid, s.energy, s.flat) for s in scans])
            data["flat"] = flat.mean(axis=0)
        data["n_scans"] = np.array(len(scans), dtype=np.int64)
        metadata: dict[str, Any] = {
            "signal": "norm",
            "axes": ["energy"],
            "units": {"energy": "eV", "e0": "eV"},
            "scans": names,
        }
        e0s = [s.e0 for s in scans]
        if all(e0 is not None for e0 in e0s):
            metadata["e0"] = float(np.mean(e0s))
        metadata["final"] = final
        state.emitted += 1
        out = beampipe.Message(data=data, metadata=metadata, stream=group, id=state.emitted)
        if state.emitted == 1:
            return [beampipe.StreamStart(group, dict(state.header)), out]
        return out
