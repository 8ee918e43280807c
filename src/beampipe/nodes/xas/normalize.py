"""Normalisation of a growing XAS spectrum: ``use: xas.normalize``.

``xas.normalize`` collects a scan's points into a spectrum and normalises it with xraylarch's
``pre_edge`` (https://xraypy.github.io/xraylarch/xafs_preedge.html) every ``every`` points and at
the end of the scan (stateful: one replica, or route ``by_key`` on stream). Its input is usually
the output of ``xas.transmission`` (:mod:`beampipe.nodes.xas.transmission`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveFloat, model_validator

import beampipe
from beampipe.nodes.columns import MissingColumn
from beampipe.nodes.xas.scanfile import KEV_BELOW
from beampipe.nodes.xas.spectrum import GrowingSpectrum, Spectrum

__all__ = ["MissingColumn", "NormalizationError", "Normalize"]

log = logging.getLogger(__name__)


class NormalizationError(RuntimeError):
    """``pre_edge`` failed on the complete spectrum of a stream (the final emission), or its
    result is degenerate (:func:`degenerate`, or keV energies); the message names the stream and
    the cause."""


def degenerate(energy: np.ndarray, group: Any, asked: dict[str, Any] | None = None) -> str | None:
    """Why ``pre_edge``'s result in ``group`` (on the sorted ``energy``) is no normalised
    spectrum, or None: a non-finite e0 or edge step, an edge step <= 0, fewer than 2 points in
    the pre-edge or the post-edge window, NaN in ``norm``."""
    e0, step = float(group.e0), float(group.edge_step)
    if not (math.isfinite(e0) and math.isfinite(step)):
        return f"non-finite result: e0={e0}, edge_step={step}"
    d = {k: getattr(group.pre_edge_details, k) for k in ("pre1", "pre2", "norm1", "norm2")}
    d.update({k: v for k, v in (asked or {}).items() if k in d})
    for name, lo, hi, side, placed in (
        ("pre-edge", d["pre1"], d["pre2"], f"starts at {energy[0]:g} eV", d["pre1"] < 0),
        ("post-edge", d["norm1"], d["norm2"], f"ends at {energy[-1]:g} eV", d["norm2"] > 0),
    ):
        inside = np.count_nonzero((energy >= e0 + lo) & (energy <= e0 + hi))
        if inside < 2 or not placed or hi <= lo:
            return (
                f"{inside} point(s) in the {name} window e0{lo:+g} to e0{hi:+g} eV "
                f"(e0 = {e0:g} eV; the spectrum {side}): the scan does not cover it"
            )
    if step <= 0:
        return f"edge step {step:g} <= 0: no absorption edge (or I0 and It swapped)"
    if np.any(np.isnan(group.norm)):
        return "NaN in the normalised spectrum"
    return None


class Normalize(GrowingSpectrum):
    """Pre-edge subtraction and normalisation of each stream's spectrum, as it grows.

    Input: one message per scan point (or per chunk of points) with ``energy`` (eV) and ``mu``
    (names set by the params; 0-d or any shape, flattened; equal sizes). Points are used in
    arrival order, which must be id order within a stream; the spectrum is sorted by energy
    before normalising, as larch does. Points whose energy or mu is nan/inf are left out.
    Streams may interleave: each has its own state, dropped at its end.

    Emits, every ``every`` points (when the count reaches a multiple of ``every``; stream/id of
    the message that completed it) and at end of stream (id = the highest id received), the
    spectrum so far, run through ``larch.xafs.pre_edge`` with the params given:

    * data, 1-D float64 of n points, sorted by energy: ``energy`` (eV), ``mu``, ``norm``
      (normalised mu), ``pre_edge``, ``post_edge`` (the fitted lines, in units of mu),
      ``flat`` (flattened ``norm``; equal to ``norm`` if ``make_flat`` is false).
    * metadata: ``e0`` (eV) and ``edge_step`` (float), ``n_points`` (n), ``n_dropped``
      (non-finite points left out), ``final`` (bool), ``signal: "norm"``,
      ``axes: ["energy"]``, ``units: {"energy": "eV", "e0": "eV"}``, ``process``
      (``program``, ``version``, ``parameters``: for the NeXus writer's NXxasproc view).

    An intermediate emission is skipped when ``pre_edge`` raises or warns or its result is
    degenerate (:func:`degenerate`; typical while the scan has not crossed the edge yet): counted
    in :attr:`skipped`, logged at debug level. The final emission is not skipped: a failure or a
    degenerate result there raises :class:`NormalizationError` (the node's ``on_error``
    applies in a pipeline). A stream without points emits nothing at its end. Whatever larch
    prints is logged at debug level instead.

    Attributes:
        skipped: number of intermediate emissions skipped, over all streams.

    Raises:
        MissingColumn: (a ``KeyError``) the energy or mu column is not in a message.
        ValueError: energy and mu of a message differ in size.
        NormalizationError: ``pre_edge`` fails on the final spectrum of a stream.
        ImportError: xraylarch is not installed (when the node is created).
    """

    class Params(beampipe.Params):
        """``energy``, ``mu``: input column names. ``every``: emit after every so many points
        (>= 1). The rest are ``larch.xafs.pre_edge``'s arguments (energies relative to e0, in eV);
        None leaves larch's default. ``pre_edge: [pre1, pre2]`` and ``post_edge: [norm1, norm2]``
        are shorthands for the ranges."""

        energy: str = "energy"
        mu: str = "mu"
        every: int = Field(100, ge=1)
        e0: float | None = None
        step: PositiveFloat | None = None
        pre1: float | None = None
        pre2: float | None = None
        norm1: float | None = None
        norm2: float | None = None
        nnorm: int | None = Field(None, ge=0, le=5)
        npre: Literal[0, 1] | None = None
        nvict: int | None = None
        make_flat: bool | None = None
        pre_edge: tuple[float, float] | None = None
        post_edge: tuple[float, float] | None = None

        @model_validator(mode="after")
        def _one_spelling(self) -> Normalize.Params:
            for short, (a, b) in (
                ("pre_edge", ("pre1", "pre2")),
                ("post_edge", ("norm1", "norm2")),
            ):
                if getattr(self, short) is not None and (
                    getattr(self, a) is not None or getattr(self, b) is not None
                ):
                    raise ValueError(f"give either {short} or {a}/{b}, not both")
            return self

        def larch_kwargs(self) -> dict[str, Any]:
            """The keyword arguments for ``pre_edge`` (only those set)."""
            names = ("e0", "step", "pre1", "pre2", "norm1", "norm2", "nnorm", "npre", "nvict")
            kwargs = {k: getattr(self, k) for k in (*names, "make_flat")}
            if self.pre_edge is not None:
                kwargs["pre1"], kwargs["pre2"] = self.pre_edge
            if self.post_edge is not None:
                kwargs["norm1"], kwargs["norm2"] = self.post_edge
            return {k: v for k, v in kwargs.items() if v is not None}

    params: Normalize.Params
    outcome = "intermediate spectrum"

    def __init__(self, params: Normalize.Params, name: str = "") -> None:
        super().__init__(params, name)
        try:
            from larch import Group
            from larch.xafs import pre_edge
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{self.name}: xas.normalize needs xraylarch (pip install 'beampipe[xas]'): {exc}"
            ) from exc
        self._group = Group
        self._pre_edge = pre_edge
        self._kwargs = self.params.larch_kwargs()
        import larch

        self._process = {
            "program": "xraylarch (larch.xafs.pre_edge), via beampipe xas.normalize",
            "version": str(larch.__version__),
            "parameters": dict(self._kwargs),
        }

    def failure(self, stream: str, spectrum: Spectrum, exc: Exception) -> Exception:
        where = f"stream {stream!r} ({spectrum.n} points)"
        if isinstance(exc, NormalizationError):  # ours, which says what is wrong
            return NormalizationError(f"{self.name}: {where}: {exc}")
        return NormalizationError(f"{self.name}: pre_edge failed on {where}: {exc}")

    def result(self, spectrum: Spectrum, final: bool) -> beampipe.Message:
        energy, mu = spectrum.points()
        if energy.size and float(np.max(np.abs(energy))) < KEV_BELOW:
            raise NormalizationError(
                f"degenerate normalisation: energies {energy.min():g} to {energy.max():g} look "
                "like keV, not eV (set the source's energy_units: keV or auto)"
            )

        group = self._group()
        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            self._pre_edge(energy, mu, group=group, **self._kwargs)
        if printed.getvalue().strip():
            log.debug("%s: pre_edge printed: %s", self.name, printed.getvalue().strip())
        e0, step = float(group.e0), float(group.edge_step)
        if not final and caught:
            raise RuntimeError(f"pre_edge warned: {caught[0].message}")
        cause = degenerate(energy, group, self._kwargs)
        if cause:
            raise NormalizationError(f"degenerate normalisation: {cause}")
        if final:
            for w in {str(w.message) for w in caught}:
                log.warning("%s: pre_edge: %s", self.name, w)

        def f64(a: Any) -> np.ndarray:
            return np.asarray(a, dtype=np.float64)

        data = {
            "energy": energy,
            "mu": mu,
            "norm": f64(group.norm),
            "pre_edge": f64(group.pre_edge),
            "post_edge": f64(group.post_edge),
            "flat": f64(getattr(group, "flat", group.norm)),
        }
        metadata = {
            "e0": e0,
            "edge_step": step,
            "n_points": int(energy.size),
            "n_dropped": int(spectrum.n - energy.size),
            "final": final,
            "signal": "norm",
            "axes": ["energy"],
            "units": {"energy": "eV", "e0": "eV"},
            "process": self._process,
        }
        return beampipe.Message(data=data, metadata=metadata)
