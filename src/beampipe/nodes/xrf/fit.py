"""Fitting XRF spectra with PyMca: ``use: xrf.fit``.

The fit is PyMca's own (``PyMca5.PyMcaPhysics.xrf.ClassMcaTheory``, http://pymca.sourceforge.net),
configured by the ``.cfg`` file a beamline scientist saved from PyMca's fit window; the fit
object is configured once per replica, then each spectrum is fitted with ``setData``,
``estimate`` and ``startfit(digest=1)``, as PyMca's own tests and batch fit do. ``mode: fast``
fits the spectra of a batch as one stack with PyMca's ``FastXRFLinearFit``
(:mod:`beampipe.nodes.xrf.stackfit`).
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator, model_validator
from pydantic_core import PydanticCustomError

import beampipe
from beampipe.nodes.columns import numeric
from beampipe.nodes.provenance import ProcessOnce
from beampipe.nodes.xrf.stackfit import StackFit, refusal

__all__ = ["OUTPUTS", "SpectrumMismatch", "XrfConfigError", "XrfFit", "load_config"]

OUTPUTS = ("area", "area_sigma", "chisq", "mass_fraction")
"""The data names of ``xrf.fit``'s results."""


class XrfConfigError(ValueError):
    """The fit configuration file is missing, does not parse, defines no element lines, or
    PyMca refuses it; the message names the node, the file and the cause."""


class SpectrumMismatch(ValueError):
    """A spectrum is neither 1-D nor 2-D or has too few channels for the configuration's fit range
    (``[fit] xmin``/``xmax``); the message names node, stream, id, file and channel counts."""


def load_config(path: str | Path, node: str = "") -> Any:
    """The PyMca ``ConfigDict`` read from the ``.cfg`` file ``path``.

    Raises:
        XrfConfigError: missing file, a parse error (with PyMca's line), no ``[fit]`` section
            or no element in ``[peaks]``.
        ImportError: PyMca5 is not installed (``pip install 'beampipe[xrf]'``).
    """
    where = f"{node + ': ' if node else ''}fit configuration {str(path)!r}"
    try:
        from PyMca5.PyMcaIO import ConfigDict
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{where}: xrf.fit needs PyMca5 (pip install 'beampipe[xrf]')") from exc
    if not Path(path).is_file():
        raise XrfConfigError(f"{where}: no such file")
    config = ConfigDict.ConfigDict()
    try:
        config.read(str(path))
    except (configparser.Error, ValueError, SyntaxError) as exc:
        cause = " ".join(str(exc).split())
        raise XrfConfigError(f"{where} does not parse as a PyMca .cfg file: {cause}") from None
    if "fit" not in config:
        raise XrfConfigError(f"{where}: no [fit] section (is it a PyMca fit configuration?)")
    if not config.get("peaks"):
        raise XrfConfigError(
            f"{where}: [peaks] names no element lines to fit (add them in PyMca's fit "
            "configuration, Elements tab)"
        )
    return config


class XrfFit(beampipe.Worker):
    """Fit of each XRF spectrum with PyMca, with the fit configuration of a ``.cfg`` file.

    Input: one spectrum per message, data ``spectrum`` (name set by the param): 1-D, counts per
    channel (any real numeric dtype), channel 0 first, at least ``xmax + 1`` channels of the
    configuration's fit range; or 2-D, (elements, channels): each element's spectrum is fitted
    (``xrf.deadtime`` with ``elements: each``), and the outputs get a first axis of elements.

    Output, per spectrum (stream and id kept):

    * data: ``area`` (float64, shape (n_lines,), counts: the fitted peak area of each element
      line group), ``area_sigma`` (float64, (n_lines,), counts: its one-sigma uncertainty),
      ``chisq`` (float64, 0-d: PyMca's reduced chi-square; not in ``mode: fast``, whose
      ``FastXRFLinearFit`` gives none); with ``concentrations``,
      ``mass_fraction`` (float64, (n_lines,), dimensionless; NaN for lines without one, such as
      the scatter peaks); for 2-D input, (elements, n_lines) and ``chisq`` (elements,); with
      ``keep_spectrum``, ``spectrum`` (the input spectrum or spectra, as received, counts);
    * data, with ``positions``: each of those input data items (0-d numbers, e.g. the motor
      positions ``epics_source`` sends as data) as float64, 0-d, unchanged in value, so that
      ``map`` can place the fit;
    * metadata: the input message's metadata (scan positions pass through), plus ``lines``
      (list of str, PyMca's group names, e.g. ``"Fe K"``, in the order of ``area``), ``mode``,
      ``units: {"area": "counts", "area_sigma": "counts"}``, ``axes: ["lines"]`` (``[".",
      "lines"]`` for 2-D input: the NeXus writer's plot axes of ``area`` after the scan
      point), and ``process`` (on a replica's first result of a stream only, see
      :mod:`beampipe.nodes.provenance`: ``name`` ``"xrf_fit"``,
      ``program`` ``"PyMca"``, ``version``,
      ``parameters`` (``config`` path, ``mode``, ``concentrations``, ``spectrum``, ``xmin``,
      ``xmax`` (channels), ``zero`` and ``gain`` (keV: channel -> energy calibration),
      ``energy`` (keV: the excitation energy, if set)), ``units``, ``notes.config`` (the
      ``.cfg`` file's whole text, about 11 kB, and its ``type``, ``text/plain; charset=utf-8``),
      and with ``concentrations`` the ``[concentrations]`` settings used), which the NeXus
      writer stores as an NXprocess.

    Raises:
        XrfConfigError: (when the node is created) see :func:`load_config`; or PyMca refuses
            the configuration; or the file is not UTF-8 text; in ``mode: fast`` also a fit
            strategy, a background other than SNIP, or concentrations from an automatic
            reference element or time (:class:`~beampipe.nodes.xrf.stackfit.StackFit`).
        SpectrumMismatch: a spectrum is neither 1-D nor 2-D or is shorter than the fit range.
        MissingColumn: (a ``KeyError``) no ``spectrum`` entry, or no entry of ``positions``, in
            a message.
        ValueError: an entry of ``positions`` holds more than one value.
        RuntimeError: PyMca's fit fails on a spectrum (e.g. a singular matrix); names stream,
            id (and element) and file (in ``mode: fast``, the batch's ids; the runtime then
            fits its spectra one by one, so the error names the spectrum).
        ImportError: PyMca5 is not installed.
    """

    class Params(beampipe.Params):
        """``config``: path of the PyMca ``.cfg`` file. ``mode``: ``linear`` (PyMca's linear
        fit: peak areas only, energy calibration and peak shapes as configured; fast, for
        mapping) or ``full`` (the non-linear least-squares fit of calibration and shapes too);
        it overrides the file's ``[fit] linearfitflag``; or ``fast`` (PyMca's
        ``FastXRFLinearFit``: the linear fit of a whole batch of spectra at once, for mapping;
        SNIP background only). ``spectrum``: input data name.
        ``concentrations``: also compute mass fractions with PyMca's ``ConcentrationsTool`` and
        the file's ``[concentrations]`` section (flux, time, solid angle or internal standard).
        ``positions``: input data items passed on with the results (0-d numbers: motor
        positions that a source such as ``epics_source`` sends as data, not metadata).
        ``keep_spectrum``: also send the input spectrum on (for the NeXus writer's NXfluo view).
        ``fast`` only: ``refit`` (refit a spectrum with negative peak areas without those lines,
        as PyMca does), ``max_batch`` (spectra per stack fit) and ``max_wait`` (s: how long the
        first spectrum of a batch waits for the others)."""

        config: beampipe.InputPath
        mode: Literal["linear", "full", "fast"] = "linear"
        spectrum: str = "spectrum"
        concentrations: bool = False
        keep_spectrum: bool = False
        positions: list[str] = Field(default_factory=list)
        refit: bool = True
        max_batch: PositiveInt = 32
        max_wait: NonNegativeFloat = 0.05

        @field_validator("positions")
        @classmethod
        def _not_outputs(cls, value: list[str]) -> list[str]:
            if clash := sorted(set(value) & set(OUTPUTS)):
                raise ValueError(f"positions {clash}: names the output uses itself")
            if len(set(value)) != len(value):
                raise ValueError(f"positions {value}: a name is listed twice")
            return value

        @model_validator(mode="after")
        def _fast_fit_takes_config(self) -> XrfFit.Params:
            """``mode: fast``: the configuration's problems at ``beampipe validate``."""
            if self.mode != "fast":
                return self
            try:
                problem = refusal(load_config(self.config), self.concentrations)
            except ImportError:  # pragma: no cover - the node says so when it starts
                return self
            except XrfConfigError as exc:
                problem = str(exc)
            if problem:
                text = f"param 'config': {str(self.config)!r}: {problem}"
                raise PydanticCustomError("value_error", "{text}", {"text": text})
            return self

    params: XrfFit.Params

    def __init__(self, params: XrfFit.Params, name: str = "") -> None:
        super().__init__(params, name)
        path = self.params.config
        config = load_config(path, self.name)
        if self.params.mode == "fast":
            self._init_fast(config)
            self._config = config
            self._process = ProcessOnce(self._describe(Path(path)))
            return
        from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory

        config["fit"]["linearfitflag"] = 1 if self.params.mode == "linear" else 0
        self._fit = ClassMcaTheory.ClassMcaTheory()
        try:
            self._config = self._fit.configure(config)
        except Exception as exc:
            raise XrfConfigError(
                f"{self.name}: fit configuration {str(path)!r}: PyMca refuses it: {exc}"
            ) from exc
        self._xmin = int(self._config["fit"]["xmin"])
        self._concentrations = None
        if self.params.concentrations:
            if not config.get("concentrations"):  # as read: PyMca fills in defaults
                raise XrfConfigError(
                    f"{self.name}: fit configuration {str(path)!r}: no [concentrations] section "
                    "(set it in PyMca's fit configuration, or concentrations: false)"
                )
            from PyMca5.PyMcaPhysics.xrf import ConcentrationsTool

            self._concentrations = ConcentrationsTool.ConcentrationsTool()
            self._ctool_config = self._concentrations.configure()
            self._ctool_config.update(self._config["concentrations"])
        self._xmax = int(self._config["fit"]["xmax"])
        self._process = ProcessOnce(self._describe(Path(path)))

    def _describe(self, path: Path) -> dict[str, Any]:
        """The metadata ``process``: PyMca and its version, the fit's parameters, the
        ``[concentrations]`` settings when used, and the ``.cfg`` file's text."""
        import PyMca5

        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:  # PyMca read it in another locale's encoding
            raise XrfConfigError(
                f"{self.name}: fit configuration {str(path)!r} is not UTF-8 text ({exc}); "
                "save it as UTF-8"
            ) from None
        fit, detector = self._config["fit"], self._config["detector"]
        energies = fit.get("energy") or [None]
        energy = energies[0] if isinstance(energies, list) else energies
        parameters: dict[str, Any] = {
            "config": str(path),
            "mode": self.params.mode,
            "concentrations": self.params.concentrations,
            "spectrum": self.params.spectrum,
            "xmin": self._xmin,
            "xmax": self._xmax,
            "zero": float(detector["zero"]),
            "gain": float(detector["gain"]),
        }
        if isinstance(energy, int | float):
            parameters["energy"] = float(energy)
        process: dict[str, Any] = {
            "name": "xrf_fit",
            "program": "PyMca",
            "version": PyMca5.version(),
            "parameters": parameters,
            "units": {"zero": "keV", "gain": "keV", "energy": "keV"},
            "notes": {
                "config": {
                    "type": "text/plain; charset=utf-8",
                    "file_name": str(path),
                    "description": "the PyMca fit configuration (.cfg) used for the fit",
                    "data": text,
                }
            },
        }
        if self.params.concentrations:
            settings = self._config["concentrations"].items()
            process["concentrations"] = {
                k: v for k, v in settings if isinstance(v, bool | int | float | str)
            }
        return process

    def _init_fast(self, config: Any) -> None:
        """``mode: fast``: PyMca's stack fit, batches of ``max_batch`` spectra."""
        if self.params.concentrations and not config.get("concentrations"):
            raise XrfConfigError(
                f"{self.name}: fit configuration {str(self.params.config)!r}: no "
                "[concentrations] section (set it in PyMca's fit configuration, or "
                "concentrations: false)"
            )
        try:
            self._stack = StackFit(config, self.params.refit, self.params.concentrations)
        except Exception as exc:
            raise XrfConfigError(
                f"{self.name}: fit configuration {str(self.params.config)!r}: PyMca's fast fit "
                f"refuses it: {exc}"
            ) from exc
        self._xmin, self._xmax = self._stack.xmin, self._stack.xmax
        self.max_batch, self.max_wait = self.params.max_batch, self.params.max_wait

    def on_stream_end(self, stream: str) -> None:
        self._process.forget(stream)

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        if self.params.mode == "fast":
            return self.process_batch([msg])[0]
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        y = self._spectrum(msg, where)
        if y.ndim == 1:
            lines, data = self._fit_one(y, where)
        else:
            fits = [self._fit_one(row, f"{where}, element {k}") for k, row in enumerate(y)]
            lines = fits[0][0]
            data = {name: np.stack([d[name] for _, d in fits]) for name in fits[0][1]}
        return self._message(msg, y, lines, data, where)

    def process_batch(self, msgs: list[beampipe.Message]) -> list[beampipe.Message]:
        """``mode: fast``: the spectra of ``msgs`` (each 1-D, or 2-D: one row per element)
        fitted as one stack; one message per input. Other modes: :meth:`process` on each."""
        if self.params.mode != "fast":
            return [self.process(msg) for msg in msgs]
        spectra = [self._spectrum(m, f"{self.name}: stream {m.stream!r}, id {m.id}") for m in msgs]
        rows = [np.atleast_2d(y)[:, : self._xmax + 1] for y in spectra]
        stack = np.concatenate(rows).astype(np.float64)
        try:
            result = self._stack.fit(stack)
        except Exception as exc:
            first = msgs[0]
            raise RuntimeError(
                f"{self.name}: stream {first.stream!r}, ids {first.id} to {msgs[-1].id}: PyMca's "
                f"fast fit failed with the configuration {str(self.params.config)!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        out, start = [], 0
        for msg, y in zip(msgs, spectra, strict=True):
            pick: Any = start if y.ndim == 1 else slice(start, start + y.shape[0])
            start += 1 if y.ndim == 1 else y.shape[0]
            data = {"area": result.area[pick], "area_sigma": result.area_sigma[pick]}
            if result.mass_fraction is not None:
                data["mass_fraction"] = result.mass_fraction[pick]
            where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
            out.append(self._message(msg, y, self._stack.lines, data, where))
        return out

    def _message(
        self,
        msg: beampipe.Message,
        y: np.ndarray,
        lines: list[str],
        data: dict[str, np.ndarray],
        where: str,
    ) -> beampipe.Message:
        """The result message of the spectrum (or spectra) ``y`` of ``msg``: ``data`` with the
        ``positions`` items and, with ``keep_spectrum``, ``y``; the metadata of the class doc."""
        data.update(self._positions(msg, where))
        units = {"area": "counts", "area_sigma": "counts"}
        if self.params.keep_spectrum:
            data["spectrum"], units["spectrum"] = y, "counts"
        metadata = {
            **msg.metadata,
            "lines": lines,
            "mode": self.params.mode,
            "units": units,
            "axes": ["lines"] if y.ndim == 1 else [".", "lines"],
        }
        self._process.stamp(metadata, msg.stream, msg.id)
        return beampipe.Message(data=data, metadata=metadata)

    def _spectrum(self, msg: beampipe.Message, where: str) -> np.ndarray:
        """The message's spectrum, checked against the fit range."""
        y = numeric(msg, self.params.spectrum, where, kinds="biuf")
        if y.ndim not in (1, 2) or y.shape[-1] <= self._xmax:
            raise SpectrumMismatch(
                f"{where}: spectrum of shape {y.shape}; the fit configuration "
                f"{str(self.params.config)!r} fits channels {self._xmin} to {self._xmax}, so it "
                f"needs a 1-D spectrum (or one per element: (elements, channels)) of at least "
                f"{self._xmax + 1} channels (wrong detector, or the configuration of another "
                "setup?)"
            )
        return y

    def _positions(self, msg: beampipe.Message, where: str) -> dict[str, np.ndarray]:
        """The ``positions`` data items of ``msg``, 0-d float64."""
        out = {}
        for name in self.params.positions:
            value = numeric(msg, name, where, kinds="iuf")
            if value.size != 1:
                raise ValueError(
                    f"{where}: position {name!r} has shape {value.shape}: not one value (the "
                    "param positions names 0-d data items such as motor positions)"
                )
            out[name] = np.asarray(value, dtype=np.float64).reshape(())
        return out

    def _fit_one(self, y: np.ndarray, where: str) -> tuple[list[str], dict[str, np.ndarray]]:
        """PyMca's fit of one 1-D spectrum: its line groups and the output arrays."""
        x = np.arange(y.size, dtype=np.float64)
        try:
            self._fit.setData(x, y, xmin=self._xmin, xmax=self._xmax)
            self._fit.estimate()
            _, result = self._fit.startfit(digest=1)
        except Exception as exc:
            raise RuntimeError(
                f"{where}: PyMca's {self.params.mode} fit failed with the configuration "
                f"{str(self.params.config)!r}: {type(exc).__name__}: {exc}"
            ) from exc
        lines = list(result["groups"])
        data = {
            "area": np.array([result[g]["fitarea"] for g in lines], dtype=np.float64),
            "area_sigma": np.array([result[g]["sigmaarea"] for g in lines], dtype=np.float64),
            "chisq": np.asarray(result["chisq"], dtype=np.float64),
        }
        if self._concentrations is not None:
            fractions = self._concentrations.processFitResult(
                config=self._ctool_config,
                fitresult={"result": result},
                elementsfrommatrix=False,
                fluorates=self._fit._fluoRates,
                addinfo=False,
            )["mass fraction"]
            data["mass_fraction"] = np.array(
                [fractions.get(g, np.nan) for g in lines], dtype=np.float64
            )
        return lines, data
