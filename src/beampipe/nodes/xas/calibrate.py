"""Energy calibration from the reference channel: ``use: xas.calibrate``.

The E0 of the reference foil's absorption ``mu_ref`` is found with xraylarch's ``find_e0`` and
aligned to the foil's tabulated edge energy (xraydb's ``xray_edge``); repeated scans can instead
(or also) be aligned to the first one with larch's ``energy_align``
(https://xraypy.github.io/xraylarch/xafs_preedge.html).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
from pydantic import Field, model_validator

import beampipe
from beampipe.nodes.columns import MissingColumn, column

__all__ = ["Calibrate", "CalibrationError", "MissingColumn"]

log = logging.getLogger(__name__)


class CalibrationError(RuntimeError):
    """The reference channel of a stream gives no edge to calibrate on."""


def _ref_group(group_cls: Any, energy: np.ndarray, mu: np.ndarray, e0: float) -> Any:
    """A larch Group for ``energy_align``, with ``dmude`` = np.gradient(mu) / np.gradient(energy)
    given: larch 2026.3's ``energy_align`` computes it with a ``gradient`` it does not import."""
    return group_cls(energy=energy, mu=mu, e0=e0, dmude=np.gradient(mu) / np.gradient(energy))


class Calibrate(beampipe.Worker):
    """Shifts each scan's energy so that its reference foil's edge is where it should be.

    Input: the output of ``xas.transmission`` (``energy`` in eV, ``mu``, ``mu_ref``; names set
    by the params), one message per point or per chunk. The points of a stream are collected;
    at its end (the shift needs the whole reference edge) one message is sent with all of them,
    sorted by energy, non-finite points left out:

    * data, 1-D float64: ``energy`` (calibrated: the measured energy plus the shift, eV),
      ``energy_measured`` (eV), ``mu``, ``mu_ref``.
    * metadata: ``energy_shift`` (eV, added to the measured energy), ``e0_ref`` (E0 of mu_ref
      after the shift, eV), ``edge_energy`` (the tabulated edge, with ``element``), ``element``,
      ``edge``, ``aligned_to`` (the stream aligned to, with ``align``), ``signal: "mu"``,
      ``axes: ["energy"]``, ``units``.

    The shift:

    * ``element`` (and ``edge``, default ``K``): ``xraydb.xray_edge(element, edge).energy -
      find_e0(energy, mu_ref)``.
    * ``align: true``: the first stream is calibrated as above (or not shifted, without
      ``element``); every later stream gets the shift larch's ``energy_align`` finds between its
      ``mu_ref`` (energy + shift of its own) and the first stream's calibrated ``mu_ref``
      (derivatives compared from ``e0 + align_emin`` to ``e0 + align_emax``). Run one replica:
      the first stream is kept in the node.

    Raises:
        MissingColumn: (a ``KeyError``) a column is not in a message.
        ValueError: the columns of a message differ in size.
        CalibrationError: a stream's mu_ref has fewer than 10 finite points or no finite E0.
    """

    class Params(beampipe.Params):
        """``energy``, ``mu``, ``mu_ref``: input columns. ``element``, ``edge``: the reference
        foil and its edge (``Fe``, ``K``). ``align``: align later scans to the first.
        ``align_emin``, ``align_emax``: range of the alignment around the first scan's E0
        (eV)."""

        energy: str = "energy"
        mu: str = "mu"
        mu_ref: str = "mu_ref"
        element: str | None = Field(None, min_length=1, max_length=3)
        edge: str = Field("K", min_length=1, max_length=3)
        align: bool = False
        align_emin: float = -15.0
        align_emax: float = 35.0

        @model_validator(mode="after")
        def _something_to_do(self) -> Calibrate.Params:
            if self.element is None and not self.align:
                raise ValueError("give element (calibrate to its edge) or align: true (or both)")
            return self

    params: Calibrate.Params

    def __init__(self, params: Calibrate.Params, name: str = "") -> None:
        super().__init__(params, name)
        import xraydb

        p = self.params
        self.edge_energy: float | None = None
        if p.element is not None:
            try:
                edge = xraydb.xray_edge(p.element, p.edge)
            except ValueError as exc:
                raise ValueError(f"{self.name}: params.element: {exc}") from None
            if edge is None:
                raise ValueError(f"{self.name}: xraydb has no {p.edge} edge for {p.element}")
            self.edge_energy = float(edge.energy)
        self._points: dict[str, list[np.ndarray]] = {}
        self._last_id: dict[str, int] = {}
        self.reference: tuple[str, Any] | None = None
        """The first stream's name and its calibrated reference (a larch Group), with align."""

    def process(self, msg: beampipe.Message) -> None:
        p = self.params
        cols = [column(msg, c, self.name).ravel() for c in (p.energy, p.mu, p.mu_ref)]
        if len({c.size for c in cols}) != 1:
            raise ValueError(f"{self.name}: {p.energy!r}, {p.mu!r}, {p.mu_ref!r} differ in size")
        self._points.setdefault(msg.stream, []).append(np.stack(cols))
        self._last_id[msg.stream] = max(self._last_id.get(msg.stream, 0), msg.id)
        return None

    def shift(self, stream: str, energy: np.ndarray, mu_ref: np.ndarray) -> tuple[float, Any]:
        """The shift (eV) of one stream's sorted finite points, and a larch Group of its
        calibrated reference (``energy``, ``mu``, ``e0``). Sets :attr:`reference` on the first
        stream with ``align``."""
        from larch import Group
        from larch.xafs import energy_align, find_e0

        p = self.params
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            e0 = float(find_e0(energy, mu_ref))
            if not np.isfinite(e0):
                raise CalibrationError(f"{self.name}: stream {stream!r}: mu_ref has no edge")
            if self.reference is None or not p.align:
                shift = self.edge_energy - e0 if self.edge_energy is not None else 0.0
            else:
                group = _ref_group(Group, energy, mu_ref, e0)
                shift = float(
                    energy_align(group, self.reference[1], emin=p.align_emin, emax=p.align_emax)
                )
        ref = _ref_group(Group, energy + shift, mu_ref, e0 + shift)
        if p.align and self.reference is None:
            self.reference = (stream, ref)
        return shift, ref

    def on_stream_end(self, stream: str) -> beampipe.Message | None:
        chunks = self._points.pop(stream, [])
        if not chunks:
            return None
        energy, mu, mu_ref = np.concatenate(chunks, axis=1)
        good = np.isfinite(energy) & np.isfinite(mu) & np.isfinite(mu_ref)
        order = np.argsort(energy[good], kind="stable")
        energy, mu, mu_ref = energy[good][order], mu[good][order], mu_ref[good][order]
        if energy.size < 10:
            raise CalibrationError(
                f"{self.name}: stream {stream!r}: {energy.size} finite points, too few to find "
                "the reference edge"
            )
        shift, ref = self.shift(stream, energy, mu_ref)
        p = self.params
        metadata: dict[str, Any] = {
            "energy_shift": shift,
            "e0_ref": float(ref.e0),
            "edge_energy": self.edge_energy,
            "element": p.element,
            "edge": p.edge,
            "aligned_to": self.reference[0] if p.align and self.reference else None,
            "signal": "mu",
            "axes": ["energy"],
            "units": {"energy": "eV", "energy_measured": "eV", "energy_shift": "eV"},
        }
        data = {"energy": energy + shift, "energy_measured": energy, "mu": mu, "mu_ref": mu_ref}
        log.info("%s: stream %r: energy shift %.3f eV", self.name, stream, shift)
        return beampipe.Message(
            data=data, metadata=metadata, stream=stream, id=self._last_id.pop(stream)
        )

    def close(self) -> None:
        self._points.clear()
