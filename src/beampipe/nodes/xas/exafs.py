"""EXAFS of a growing XAS spectrum: ``use: xas.exafs``.

``xas.exafs`` collects a scan's points (the output of ``xas.transmission``) and, every ``every``
points and at the end of the scan, runs xraylarch's ``pre_edge``, ``autobk`` (background removal,
https://xraypy.github.io/xraylarch/xafs_autobk.html) and ``xftf`` (Fourier transform,
https://xraypy.github.io/xraylarch/xafs_fourier.html) on the spectrum so far (stateful: one
replica, or route ``by_key`` on stream).
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
from beampipe.nodes.xas.spectrum import GrowingSpectrum, Spectrum

__all__ = ["Exafs", "ExafsError", "MissingColumn"]

log = logging.getLogger(__name__)


class ExafsError(RuntimeError):
    """``autobk`` or ``xftf`` failed on the complete spectrum of a stream."""


class Exafs(GrowingSpectrum):
    """chi(k) and |chi(R)| of each stream's spectrum, as it grows.

    Input: one message per scan point (or chunk of points) with ``energy`` (eV) and ``mu`` (names
    set by the params; equal sizes). Points whose energy or mu is nan/inf are left out; the
    spectrum is sorted by energy as larch does. Streams may interleave.

    Each computation (every ``every`` points, and at the end of the stream) runs, on one
    ``larch.Group``: ``pre_edge(energy, mu, e0=e0)``; ``autobk(energy, mu, rbkg, kweight, kmin,
    kmax, nknots)`` (larch's defaults where None); ``xftf(k, chi, kmin=ft_kmin, kmax=ft_kmax,
    kweight=ft_kweight, dk, window, rmax_out)``, with ``ft_kmax`` cut to the data's k range.

    A spectrum whose k range above e0 (``sqrt((E_max - e0) / 3.81)``) is shorter than
    ``min_k_range`` beyond ``kmin`` has no EXAFS region yet: no output, counted in
    :attr:`not_exafs` (at the end of a stream too, with a warning: a XANES-only scan is not an
    error). An intermediate computation that raises or gives non-finite values is skipped
    (:attr:`skipped`); at the end of the stream it raises :class:`ExafsError`.

    Emits (stream/id of the message that completed the count, or the stream's highest id at the
    end):

    * data, 1-D float64: ``energy`` (eV), ``mu``, ``bkg`` (the background, units of mu), ``k``
      (1/Angstrom), ``chi``, ``r`` (Angstrom), ``chir_mag``, ``chir_re``, ``chir_im`` (|chi(R)|
      and its parts, Angstrom^-(kweight+1)).
    * metadata: ``e0`` (eV), ``edge_step``, ``n_points``, ``final``, ``signal: "chir_mag"``,
      ``axes: ["r", "k", "energy"]`` (the viewer plots each array against the first axis of
      its length: |chi(R)| against r, chi(k) against k, mu and bkg against energy; the NeXus
      writer keeps ``r``), ``units``, ``kweight`` (of the transform), ``rbkg``.

    Attributes:
        skipped: intermediate computations skipped because larch failed.
        not_exafs: computations with no EXAFS region yet.

    Raises:
        MissingColumn: (a ``KeyError``) the energy or mu column is not in a message.
        ValueError: energy and mu of a message differ in size.
        ExafsError: larch fails on the final spectrum of a stream.
    """

    class Params(beampipe.Params):
        """``energy``, ``mu``: input columns. ``every``: compute after every so many points.
        ``e0`` (eV; None: larch finds it), ``rbkg`` (Angstrom), ``kweight``, ``kmin``, ``kmax``
        (1/Angstrom), ``nknots``: autobk's. ``ft_kmin``, ``ft_kmax``, ``ft_kweight``, ``dk``,
        ``window``, ``rmax_out``: xftf's. ``min_k_range``: k range (1/Angstrom) beyond
        ``kmin`` needed before chi is computed."""

        energy: str = "energy"
        mu: str = "mu"
        every: int = Field(200, ge=1)
        e0: float | None = None
        rbkg: PositiveFloat = 1.0
        kweight: float = 1.0
        kmin: float = Field(0.0, ge=0)
        kmax: PositiveFloat | None = None
        nknots: int | None = Field(None, ge=4)
        ft_kmin: float = Field(2.0, ge=0)
        ft_kmax: PositiveFloat = 12.0
        ft_kweight: float = 2.0
        dk: float = Field(1.0, ge=0)
        window: Literal["hanning", "kaiser", "gaussian", "sine", "welch", "parzen"] = "kaiser"
        rmax_out: PositiveFloat = 10.0
        min_k_range: PositiveFloat = 3.0

        @model_validator(mode="after")
        def _ranges(self) -> Exafs.Params:
            if self.ft_kmax <= self.ft_kmin:
                raise ValueError(f"ft_kmax ({self.ft_kmax}) must exceed ft_kmin ({self.ft_kmin})")
            if self.kmax is not None and self.kmax <= self.kmin:
                raise ValueError(f"kmax ({self.kmax}) must exceed kmin ({self.kmin})")
            return self

    params: Exafs.Params
    outcome = "chi"
    no_final = "has no EXAFS region: no chi(k)"

    def __init__(self, params: Exafs.Params, name: str = "") -> None:
        super().__init__(params, name)
        try:
            from larch import Group
            from larch.xafs import autobk, etok, pre_edge, xftf
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{self.name}: xas.exafs needs xraylarch (pip install 'beampipe[xas]'): {exc}"
            ) from exc
        self._larch = (Group, pre_edge, autobk, xftf, etok)
        self.not_exafs = 0

    def failure(self, stream: str, spectrum: Spectrum, exc: Exception) -> Exception:
        return ExafsError(
            f"{self.name}: EXAFS failed on stream {stream!r} ({spectrum.n} points): {exc}"
        )

    def compute(self, energy: np.ndarray, mu: np.ndarray) -> Any | None:
        """pre_edge, autobk and xftf on sorted finite points (see the class doc): the larch
        Group, or None when the spectrum has no EXAFS region yet."""
        p = self.params
        group_cls, pre_edge, autobk, xftf, etok = self._larch
        group = group_cls()
        pre_edge(energy, mu, group=group, **({"e0": p.e0} if p.e0 is not None else {}))
        e0 = float(group.e0)
        if not math.isfinite(e0) or energy[-1] <= e0:
            return None
        if float(etok(energy[-1] - e0)) - p.kmin < p.min_k_range:
            return None
        kws: dict[str, Any] = {"rbkg": p.rbkg, "kweight": p.kweight, "kmin": p.kmin}
        kws.update({k: getattr(p, k) for k in ("kmax", "nknots") if getattr(p, k) is not None})
        autobk(energy, mu, group=group, **kws)
        kmax = min(p.ft_kmax, float(group.k[-1]))
        xftf(
            group.k,
            group.chi,
            group=group,
            kmin=p.ft_kmin,
            kmax=kmax,
            kweight=p.ft_kweight,
            dk=p.dk,
            window=p.window,
            rmax_out=p.rmax_out,
        )
        return group

    def result(self, spectrum: Spectrum, final: bool) -> beampipe.Message | None:
        energy, mu = spectrum.points()
        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            group = self.compute(energy, mu)
        if group is None:
            self.not_exafs += 1
            return None
        if caught and not final:
            raise RuntimeError(f"larch warned: {caught[0].message}")
        for w in {str(w.message) for w in caught}:
            log.warning("%s: larch: %s", self.name, w)

        def f64(a: Any) -> np.ndarray:
            return np.asarray(a, dtype=np.float64)

        names = ("bkg", "k", "chi", "r", "chir_mag", "chir_re", "chir_im")
        data = {"energy": energy, "mu": mu} | {n: f64(getattr(group, n)) for n in names}
        if not all(np.all(np.isfinite(data[n])) for n in ("chi", "chir_mag")):
            raise RuntimeError("non-finite chi(k) or chi(R)")
        metadata = {
            "e0": float(group.e0),
            "edge_step": float(group.edge_step),
            "n_points": int(energy.size),
            "final": final,
            "signal": "chir_mag",
            "axes": ["r", "k", "energy"],
            "units": {"energy": "eV", "e0": "eV", "k": "1/angstrom", "r": "angstrom"},
            "kweight": self.params.ft_kweight,
            "rbkg": self.params.rbkg,
        }
        return beampipe.Message(data=data, metadata=metadata)
