"""The points of one scan as they arrive, for the workers that process a growing spectrum
(``xas.normalize``, ``xas.exafs``), and their shared stream handling (:class:`GrowingSpectrum`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import beampipe
from beampipe.nodes.columns import column

__all__ = ["GrowingSpectrum", "Spectrum", "collect"]

log = logging.getLogger(__name__)


@dataclass
class Spectrum:
    """The points of one stream so far, in arrival order, in buffers grown by doubling.

    Attributes:
        n: number of points appended.
        last_id: the highest message id seen.
        next_emit: the point count at which the next intermediate result is due.
    """

    energy: np.ndarray = field(default_factory=lambda: np.empty(256))
    mu: np.ndarray = field(default_factory=lambda: np.empty(256))
    n: int = 0
    last_id: int = 0
    next_emit: int = 0

    def append(self, energy: np.ndarray, mu: np.ndarray) -> None:
        """Add points (1-D float arrays of equal size)."""
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

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the finite points (energy and mu both finite), sorted by energy when they
        are not in order (larch's own test and sort: ``np.argsort``, not stable)."""
        energy = self.energy[: self.n]
        mu = self.mu[: self.n]
        good = np.isfinite(energy) & np.isfinite(mu)
        energy, mu = energy[good], mu[good]
        if np.any(np.diff(np.argsort(energy)) != 1):
            order = np.argsort(energy)
            energy, mu = energy[order], mu[order]
        return energy, mu


def collect(
    spectra: dict[str, Spectrum], msg: beampipe.Message, energy: str, mu: str, every: int, node: str
) -> Spectrum | None:
    """Append the points of ``msg`` (its columns ``energy`` and ``mu``, any shape, raveled) to
    its stream's spectrum in ``spectra`` (started here if no StreamStart was seen). Returns the
    spectrum when an intermediate result is due (every ``every`` points), else None.

    Raises:
        MissingColumn: a column is not in the message.
        ValueError: the two columns hold different numbers of values.
    """
    spectrum = spectra.get(msg.stream)
    if spectrum is None:
        spectrum = spectra[msg.stream] = Spectrum(next_emit=every)
    e = column(msg, energy, node).ravel()
    m = column(msg, mu, node).ravel()
    if e.size != m.size:
        raise ValueError(f"{node}: {energy!r} has {e.size} values, {mu!r} {m.size}")
    spectrum.append(e, m)
    spectrum.last_id = max(spectrum.last_id, msg.id)
    if spectrum.n < spectrum.next_emit:
        return None
    spectrum.next_emit = (spectrum.n // every + 1) * every
    return spectrum


class GrowingSpectrum(beampipe.Worker):
    """A worker that collects each stream's points (params ``energy``, ``mu``: column names)
    and computes a result from the points so far every ``every`` points (:meth:`result` with
    ``final=False``) and at the stream's end (``final=True``: a result that raises is the
    subclass's :meth:`failure`; None is warned about with :attr:`no_final`).

    An intermediate result that raises is skipped, counted in :attr:`skipped` and logged at
    debug level (the final one is not skipped: the subclass raises its own error).

    Attributes:
        skipped: intermediate results skipped, over all streams.
    """

    outcome = "result"
    """What :meth:`result` computes, for the debug log of a skipped one (``"no chi at ..."``)."""
    no_final = "has no result"
    """The warning when the final :meth:`result` is None."""

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._spectra: dict[str, Spectrum] = {}
        self.skipped = 0

    def result(self, spectrum: Spectrum, final: bool) -> beampipe.Message | None:
        """The result message of ``spectrum`` (no stream or id: the caller sets them)."""
        raise NotImplementedError

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        self._spectra[stream] = Spectrum(next_emit=self.params.every)

    def process(self, msg: beampipe.Message) -> beampipe.Message | None:
        p = self.params
        spectrum = collect(self._spectra, msg, p.energy, p.mu, p.every, self.name)
        if spectrum is None:
            return None
        try:
            return self.result(spectrum, final=False)
        except Exception as exc:
            self.skipped += 1
            log.debug(
                "%s: stream %r: no %s at %d points: %s",
                self.name,
                msg.stream,
                self.outcome,
                spectrum.n,
                exc,
            )
            return None

    def failure(self, stream: str, spectrum: Spectrum, exc: Exception) -> Exception:
        """The error to raise when the final :meth:`result` of ``stream`` raised ``exc``."""
        return RuntimeError(f"{self.name}: stream {stream!r} ({spectrum.n} points): {exc}")

    def on_stream_end(self, stream: str) -> beampipe.Message | None:
        spectrum = self._spectra.pop(stream, None)
        if spectrum is None or spectrum.n == 0:
            return None
        try:
            out = self.result(spectrum, final=True)
        except Exception as exc:
            raise self.failure(stream, spectrum, exc) from exc
        if out is None:
            log.warning("%s: stream %r %s", self.name, stream, self.no_final)
            return None
        out.stream = stream
        out.id = spectrum.last_id
        return out

    def close(self) -> None:
        self._spectra.clear()
