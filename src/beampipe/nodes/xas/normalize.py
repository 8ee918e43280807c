"""X-ray absorption spectroscopy: ``use: xas.transmission`` and ``use: xas.normalize``.

``xas.transmission`` turns the ion-chamber readings of each scan point into mu(E) (stateless: may
run as several replicas). ``xas.normalize`` collects a scan's points into a spectrum and normalises
it with xraylarch's ``pre_edge`` (https://xraypy.github.io/xraylarch/xafs_preedge.html) every
``every`` points and at the end of the scan (stateful: one replica, or route ``by_key`` on stream).

Column defaults follow PETRA III P65 (see ``examples/xas-p65/data/README.md``): ``enc_energy``
(eV), ``VFC01`` = I0, ``VFC02`` = It (after the sample), ``VFC03`` = Iref (after the reference
foil), ``VFC04`` = If (fluorescence).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, PositiveFloat, model_validator

import beampipe
from beampipe.nodes.columns import MissingColumn, column

__all__ = ["MissingColumn", "NormalizationError", "Normalize", "Transmission"]

log = logging.getLogger(__name__)


class Transmission(beampipe.Worker):
    """Transmission, reference and fluorescence signals of one scan point.

    Input data (names set by the params; any equal shapes, usually 0-d; converted to float64):
    energy (eV) and the readings I0, It, Iref, If.

    Output data, all float64 of the input shape:

    * ``energy``: the energy, eV.
    * ``mu = ln(I0 / It)``: sample absorption (transmission).
    * ``mu_ref = ln(It / Iref)``: reference-foil absorption, for energy calibration.
    * ``fluorescence = If / I0``.
    * ``i0``, ``it``, ``iref``, ``if``: the raw readings, passed on.

    metadata ``{"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}``; stream and id
    are the input message's. Computed with numpy (``np.log(i0 / it)``); readings <= 0 give
    nan / +-inf without warnings, so one bad point does not stop a scan.

    Raises:
        MissingColumn: (a ``KeyError``) a column is not in the message; names it and those
            present.
        TypeError: a column holds bytes or a non-numeric array.
    """

    class Params(beampipe.Params):
        """Names of the input columns. ``if`` (fluorescence) is spelt ``if_`` in Python."""

        model_config = ConfigDict(populate_by_name=True)

        energy: str = "enc_energy"
        i0: str = "VFC01"
        it: str = "VFC02"
        iref: str = "VFC03"
        if_: str = Field("VFC04", alias="if")

    params: Transmission.Params

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        p = self.params
        energy, i0, it, iref, if_ = (
            column(msg, name, self.name) for name in (p.energy, p.i0, p.it, p.iref, p.if_)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.log(i0 / it)
            mu_ref = np.log(it / iref)
            fluorescence = if_ / i0
        data = {
            "energy": energy,
            "mu": np.asarray(mu),
            "mu_ref": np.asarray(mu_ref),
            "fluorescence": np.asarray(fluorescence),
            "i0": i0,
            "it": it,
            "iref": iref,
            "if": if_,
        }
        metadata = {"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}
        return beampipe.Message(data=data, metadata=metadata)


class NormalizationError(RuntimeError):
    """``pre_edge`` failed on the complete spectrum of a stream (the final emission)."""


@dataclass
class _Spectrum:
    """The points of one stream so far, in arrival order, in buffers grown by doubling."""

    energy: np.ndarray = field(default_factory=lambda: np.empty(256))
    mu: np.ndarray = field(default_factory=lambda: np.empty(256))
    n: int = 0
    last_id: int = 0
    next_emit: int = 0

    def append(self, energy: np.ndarray, mu: np.ndarray) -> None:
        k = energy.size
        if self.n + k > self.energy.size:
            size = max(2 * self.energy.size, self.n + k)
            for name in ("energy", "mu"):
                grown = np.empty(size)
                grown[: self.n] = getattr(self, name)[: self.n]
                setattr(self, name, grown)
        self.energy[self.n : self.n + k] = energy
        self.mu[self.n : self.n + k] = mu
        self.n += k


class Normalize(beampipe.Worker):
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
      ``axes: ["energy"]``, ``units: {"energy": "eV", "e0": "eV"}``.

    An intermediate emission is skipped when ``pre_edge`` raises or warns or gives a non-finite
    e0 or edge step (typical while the scan has not crossed the edge yet): counted in
    :attr:`skipped`, logged at debug level. The final emission is not skipped: a failure there
    raises. A stream without points emits nothing at its end. Whatever larch prints is logged at
    debug level instead.

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
        self._spectra: dict[str, _Spectrum] = {}
        self.skipped = 0

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        self._spectra[stream] = _Spectrum(next_emit=self.params.every)

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        spectrum = self._spectra.get(msg.stream)
        if spectrum is None:  # no StreamStart seen: start the stream here
            spectrum = self._spectra[msg.stream] = _Spectrum(next_emit=self.params.every)
        energy = column(msg, self.params.energy, self.name).ravel()
        mu = column(msg, self.params.mu, self.name).ravel()
        if energy.size != mu.size:
            raise ValueError(
                f"{self.name}: {self.params.energy!r} has {energy.size} values, "
                f"{self.params.mu!r} {mu.size}"
            )
        spectrum.append(energy, mu)
        spectrum.last_id = max(spectrum.last_id, msg.id)
        if spectrum.n < spectrum.next_emit:
            return None
        every = self.params.every
        spectrum.next_emit = (spectrum.n // every + 1) * every
        try:
            return self._normalize(spectrum, final=False)
        except Exception as exc:
            self.skipped += 1
            log.debug(
                "%s: stream %r: no intermediate spectrum at %d points: %s",
                self.name,
                msg.stream,
                spectrum.n,
                exc,
            )
            return None

    def on_stream_end(self, stream: str) -> beampipe.Message | None:
        spectrum = self._spectra.pop(stream, None)
        if spectrum is None or spectrum.n == 0:
            return None
        try:
            out = self._normalize(spectrum, final=True)
        except Exception as exc:
            raise NormalizationError(
                f"{self.name}: pre_edge failed on stream {stream!r} ({spectrum.n} points): {exc}"
            ) from exc
        out.stream = stream
        out.id = spectrum.last_id
        return out

    def close(self) -> None:
        self._spectra.clear()

    def _normalize(self, spectrum: _Spectrum, final: bool) -> beampipe.Message:
        energy = spectrum.energy[: spectrum.n]
        mu = spectrum.mu[: spectrum.n]
        good = np.isfinite(energy) & np.isfinite(mu)
        energy, mu = energy[good], mu[good]  # copies: the buffers keep growing
        if np.any(np.diff(np.argsort(energy)) != 1):  # larch's own test and sort
            order = np.argsort(energy)
            energy, mu = energy[order], mu[order]

        group = self._group()
        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            self._pre_edge(energy, mu, group=group, **self._kwargs)
        if printed.getvalue().strip():
            log.debug("%s: pre_edge printed: %s", self.name, printed.getvalue().strip())
        e0, step = float(group.e0), float(group.edge_step)
        if not final:
            if caught:
                raise RuntimeError(f"pre_edge warned: {caught[0].message}")
            if not (math.isfinite(e0) and math.isfinite(step)):
                raise RuntimeError(f"non-finite result: e0={e0}, edge_step={step}")
        else:
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
        }
        return beampipe.Message(data=data, metadata=metadata)


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
