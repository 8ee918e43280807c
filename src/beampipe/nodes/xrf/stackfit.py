"""PyMca's fast linear fit of a stack of XRF spectra, its linear model built once: ``xrf.fit``'s
``mode: fast``.

The fit is PyMca's ``PyMca5.PyMcaPhysics.xrf.FastXRFLinearFit`` (http://pymca.sourceforge.net),
the fit of PyMca's ROI imaging and of mapping beamlines: one linear least-squares solve of every
spectrum of a stack against the derivatives of the linear fit model (one column per free
parameter: the background's, then one per element line group), after each spectrum's SNIP
background is subtracted. Its public ``fitMultipleSpectra`` configures PyMca afresh on every call
(about 0.5 s: PyMca recomputes its fluorescence rates), so :class:`StackFit` runs the steps of
that method (``_fitConfigure``, ``_fitCreateModel``, ``_fitBkgAnchorList``, ``_fitMcaTrimInfo``,
``_fitLstSqAll``, ``_fitLstSqNegative``, ``_fitDeriveMassFractions`` of PyMca5 5.9) once for the
model and once per stack for the solve; tests/test_xrf_fastfit.py checks that the results equal
``fitMultipleSpectra`` called directly.

Two choices make a spectrum's result independent of the other spectra of its stack (so of how
the runtime cuts the spectra into batches):

* the weights are the configuration's (``[fit] fitweight``: 1, each spectrum's Poisson weights;
  0, none), never ``fitMultipleSpectra``'s ``weight=1`` (weights from the stack's sum spectrum);
* PyMca's refit of negative peak areas (a line with a negative area is dropped from the model
  and the spectrum fitted again) is run spectrum by spectrum: on a whole stack, PyMca chooses
  the line to drop by the number of spectra where it is negative and zeroes the areas of fewer
  than 0.25 % of the stack's spectra instead of refitting them, which makes a spectrum's result
  depend on its neighbours.

The model is built from the first spectrum fitted (as ``fitMultipleSpectra`` builds it from its
stack's first spectrum); with a fixed energy calibration and peak shapes, as the linear fit has
them, the derivatives do not depend on the counts (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["StackFit", "StackResult", "refusal"]


def refusal(config: Any, concentrations: bool = False) -> str | None:
    """Why the fast fit cannot take the PyMca configuration ``config`` (a ``ConfigDict``), or
    None: a fit strategy, a background other than SNIP, and with ``concentrations`` an automatic
    reference element or automatic time (both would depend on the stack)."""
    fit = config["fit"]
    if fit.get("strategyflag", 0):
        return "[fit] strategyflag is set: PyMca's fast fit has no fit strategies"
    if fit.get("stripflag", 0) and fit.get("stripalgorithm", 0) != 1:
        return (
            "the background is PyMca's strip ([fit] stripalgorithm = 0): PyMca's fast fit "
            "needs the SNIP background (stripalgorithm = 1; Background tab of PyMca's fit "
            "configuration)"
        )
    conc = config.get("concentrations", {}) if concentrations else {}
    if conc.get("usematrix", 0) and str(conc.get("reference", "")).upper() == "AUTO":
        return (
            "[concentrations] reference = Auto: PyMca's fast fit takes the reference element "
            "from the stack's first spectrum; name the element"
        )
    if not conc.get("usematrix", 0) and conc.get("useautotime", 0):
        return (
            "[concentrations] useautotime = 1: the fast fit has no live time per spectrum; "
            "give the time in the configuration"
        )
    return None


class StackResult:
    """The fit of a stack of ``n`` spectra: ``area``, ``area_sigma`` (float64, (n, n_lines),
    counts) and, with concentrations, ``mass_fraction`` (float64, (n, n_lines), NaN for lines
    without one, such as the scatter peaks), lines in the order of :attr:`StackFit.lines`."""

    def __init__(
        self, area: np.ndarray, area_sigma: np.ndarray, mass_fraction: np.ndarray | None
    ) -> None:
        self.area = area
        self.area_sigma = area_sigma
        self.mass_fraction = mass_fraction


class StackFit:
    """PyMca's ``FastXRFLinearFit`` with the configuration ``config`` (a PyMca ``ConfigDict``).

    Args:
        config: the fit configuration, as read by :func:`beampipe.nodes.xrf.fit.load_config`.
        refit: refit the spectra with negative peak areas (PyMca's ``refit=True``), spectrum by
            spectrum; False: the first solve's areas, negative ones kept.
        concentrations: also the mass fractions of the configuration's ``[concentrations]``.

    Raises:
        ValueError: PyMca refuses the configuration for the fast fit: a fit strategy
            (``[fit] strategyflag``), a background other than SNIP (``stripalgorithm`` 0 with
            ``stripflag`` 1), concentrations from an automatic reference element or automatic
            time (these depend on the stack); the text says which.
    """

    def __init__(self, config: Any, refit: bool = True, concentrations: bool = False) -> None:
        from PyMca5.PyMcaPhysics.xrf import FastXRFLinearFit

        problem = refusal(config, concentrations)
        if problem:
            raise ValueError(problem)
        self.refit = refit
        self.concentrations = concentrations
        self._fast = FastXRFLinearFit.FastXRFLinearFit()
        self._fast.setFitConfiguration(config)
        _, self._config, weight, policy, self._autotime, self._livetime_factor = (
            self._fast._fitConfigure(concentrations=concentrations, weight=None, nSpectra=1)
        )
        # policy 2: each spectrum's own weights (no SVD); 0: unweighted (one SVD for all)
        self._lstsq = {"svd": policy != 2, "sigma_b": None, "weight": weight}
        self.xmin = int(self._config["fit"]["xmin"])
        self.xmax = int(self._config["fit"]["xmax"])
        self._model: tuple[Any, ...] | None = None
        self.lines: list[str] = []
        """PyMca's element line groups (e.g. ``"Fe Ka"``), in the order of the results; set by
        the first :meth:`fit`."""

    def _build(self, y: np.ndarray) -> tuple[Any, ...]:
        """The linear model, from the reference spectrum ``y``."""
        fast = self._fast
        fast._mcaTheory.setData(x=None, y=y, xmin=self.xmin, xmax=self.xmax)
        derivatives, names, _, n_bkg = fast._fitCreateModel(dtype=np.float64)
        anchors = fast._fitBkgAnchorList(config=self._config)
        first, stop = fast._fitMcaTrimInfo(x=None)
        self.lines = list(names[n_bkg:])
        return derivatives, names, n_bkg, anchors, slice(first, stop)

    def fit(self, stack: np.ndarray) -> StackResult:
        """The fit of each row of ``stack`` (float64, (n, channels), counts; channels > xmax).

        Raises:
            ValueError: PyMca's fit fails (e.g. no free parameter in the fit range).
        """
        if self._model is None:
            self._model = self._build(stack[0])
        derivatives, names, n_bkg, anchors, channels = self._model
        n = stack.shape[0]
        results = np.empty((len(names), n))
        sigmas = np.empty((len(names), n))
        common = {
            "sliceChan": channels,
            "mcaIndex": -1,
            "derivatives": derivatives,
            "fitmodel": None,
            "config": self._config,
            "anchorslist": anchors,
        }
        self._fast._fitLstSqAll(
            data=stack,
            results=results,
            uncertainties=sigmas,
            lstsq_kwargs=dict(self._lstsq),
            **common,
        )
        if self.refit:
            for k in np.flatnonzero((results[n_bkg:] < 0).any(axis=0)):
                self._fast._fitLstSqNegative(
                    data=stack[k : k + 1],
                    results=results[:, k : k + 1],
                    uncertainties=sigmas[:, k : k + 1],
                    lstsq_kwargs=dict(self._lstsq),
                    freeNames=names,
                    nFreeBkg=n_bkg,
                    nFreeParameters=None,
                    **common,
                )
        fractions = self._mass_fractions(results, n_bkg) if self.concentrations else None
        return StackResult(results[n_bkg:].T.copy(), sigmas[n_bkg:].T.copy(), fractions)

    def _mass_fractions(self, results: np.ndarray, n_bkg: int) -> np.ndarray:
        """PyMca's mass fractions from the peak areas ``results`` (free parameters, n)."""
        labels, fractions = self._fast._fitDeriveMassFractions(
            config=self._config,
            nFreeBkg=n_bkg,
            results=results,
            autotime=self._autotime,
            liveTimeFactor=self._livetime_factor,
        )
        out = np.full((results.shape[1], len(self.lines)), np.nan)
        for row, label in zip(fractions, labels, strict=True):
            if label in self.lines:  # the first layer's, not the per-layer ones
                out[:, self.lines.index(label)] = row
        return out
