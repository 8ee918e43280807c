"""The points of one scan as they arrive, for the workers that process a growing spectrum
(``xas.normalize``, ``xas.exafs``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Spectrum"]


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
