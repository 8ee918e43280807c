"""The geometry and options of an azimuthal integration, and the pyFAI integrator made from them.

The geometry is pyFAI's (https://pyfai.readthedocs.io/en/stable/geometry.html): either a PONI
file as pyFAI-calib2 saves it, or the same numbers as params: ``distance`` (sample to the point
of normal incidence, m), ``poni1``/``poni2`` (that point on the detector, m, along the slow and
the fast axis), ``rot1``..``rot3`` (rad), ``wavelength`` (m), and the detector by pyFAI name
(``Pilatus1M``, ``Eiger4M``, ``Perkin``) or by its pixel sizes ``pixel1``/``pixel2`` (m) and,
optionally, its ``shape`` (rows, columns; else the first frame's).

What can be known before a frame arrives is checked when the params are validated (``beampipe
validate``): the PONI file exists and parses, the detector name is known to pyFAI, the unit and
the method exist, a q unit has a wavelength.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

import beampipe
from beampipe.nodes.frame.frames import FrameParams

__all__ = [
    "CPU_METHOD",
    "RADIAL",
    "AzintParams",
    "ChosenMethod",
    "GeometryError",
    "chosen_method",
    "detector",
    "integrator",
    "load_pyfai",
    "method",
    "read_poni",
]

RADIAL: dict[str, tuple[str, str]] = {
    "q_nm^-1": ("q", "1/nm"),
    "q_A^-1": ("q", "1/angstrom"),
    "2th_deg": ("2th", "degree"),
    "2th_rad": ("2th", "rad"),
    "r_mm": ("r", "mm"),
}
"""pyFAI radial unit -> (data name of the radial axis, its NeXus unit)."""

Split = Literal["no", "bbox", "pseudo", "full"]
Algo = Literal["histogram", "lut", "csr", "csc"]
Impl = Literal["python", "cython", "opencl"]


class GeometryError(ValueError):
    """The geometry cannot be made (a PONI file that does not parse, an unknown detector), or
    does not fit the frames (detector shape); the message names node, parameter or stream."""


class AzintParams(FrameParams):
    """The geometry (a PONI file or the numbers, see the module), the integration's options
    and the I0 monitor. Shared by ``azint.integrate1d`` and ``azint.integrate2d``.

    ``unit``: pyFAI's radial unit. ``npt``: radial bins. ``method``: pyFAI's ``[split, algo,
    impl]``, or ``auto`` (:func:`chosen_method`). ``dark``, ``flat``: images as ``mask``
    (counts; gain). ``polarization_factor``: -1..1 (null: no correction). ``solid_angle``:
    correct for the pixels' solid angle.
    ``radial_range``: ``[low, high]`` in ``unit`` (pyFAI's; null: the frame's whole range).
    ``azimuth_range``: ``[low, high]``, χ in degrees (pyFAI's; null: all azimuths).
    ``error_model``: how pyFAI gives sigma (null: no sigma). ``monitor``: the I0 of each frame,
    a 0-d data item or a numeric metadata key of the frame's message or of the event's
    ``monitor`` part; the pattern is divided by it (pyFAI's ``normalization_factor``).
    """

    dim: ClassVar[int] = 1

    poni: beampipe.InputPath | None = None
    distance: float | None = Field(None, gt=0)
    poni1: float | None = None
    poni2: float | None = None
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    wavelength: float | None = Field(None, gt=0)
    detector: str | None = None
    pixel1: float | None = Field(None, gt=0)
    pixel2: float | None = Field(None, gt=0)
    shape: tuple[PositiveInt, PositiveInt] | None = None
    unit: Literal["q_nm^-1", "q_A^-1", "2th_deg", "2th_rad", "r_mm"] = "q_nm^-1"
    npt: PositiveInt = 1000
    method: Literal["auto"] | tuple[Split, Algo, Impl] = "auto"
    dark: beampipe.InputPath | None = None
    flat: beampipe.InputPath | None = None
    polarization_factor: float | None = Field(None, ge=-1, le=1)
    solid_angle: bool = True
    error_model: Literal["poisson", "azimuthal"] | None = "poisson"
    monitor: str | None = None
    radial_range: tuple[float, float] | None = None
    azimuth_range: tuple[float, float] | None = None

    @field_validator("radial_range", "azimuth_range")
    @classmethod
    def _low_below_high(
        cls, span: tuple[float, float] | None, info: ValidationInfo
    ) -> tuple[float, float] | None:
        if span is not None and not (math.isfinite(span[0]) and span[0] < span[1] < math.inf):
            raise ValueError(
                f"{info.field_name} [{span[0]}, {span[1]}] is not [low, high] with low < high"
            )
        return span

    @field_validator("poni")
    @classmethod
    def _poni_parses(cls, path: str | None) -> str | None:
        if path is not None:
            read_poni(path)
        return path

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, name: str | None) -> str | None:
        if name is not None:
            detector(name)
        return name

    @field_validator("method")
    @classmethod
    def _method_exists(cls, spec: str | tuple[str, str, str]) -> str | tuple[str, str, str]:
        if spec != "auto":
            method(spec, cls.dim)
        return spec

    @model_validator(mode="after")
    def _geometry(self) -> AzintParams:
        given = [k for k in ("distance", "poni1", "poni2") if getattr(self, k) is not None]
        numbers = [
            k
            for k in ("wavelength", "detector", "pixel1", "pixel2", "shape")
            if getattr(self, k) is not None
        ]
        if self.poni is not None:
            if given or numbers or (self.rot1, self.rot2, self.rot3) != (0.0, 0.0, 0.0):
                raise ValueError(
                    f"give the geometry either as a PONI file or as params, not both (poni and "
                    f"{', '.join(given + numbers) or 'rot1/rot2/rot3'})"
                )
            wavelength = read_poni(self.poni).wavelength
        else:
            if len(given) < 3:
                raise ValueError(
                    "no geometry: give poni (a PONI file) or distance, poni1 and poni2 (m)"
                )
            if self.detector is None and (self.pixel1 is None or self.pixel2 is None):
                raise ValueError("give the detector (a pyFAI name) or both pixel1 and pixel2 (m)")
            if self.detector is not None and self.pixel1 is not None:
                raise ValueError("give the detector or pixel1/pixel2, not both")
            if self.detector is not None and self.shape is not None:
                raise ValueError("a named detector has its own shape: leave shape out")
            wavelength = self.wavelength
        if self.unit.startswith("q") and not wavelength:
            where = f"the PONI file {self.poni!r}" if self.poni else "the params"
            raise ValueError(f"unit {self.unit!r} needs a wavelength; {where} give none")
        self._ranges_fit()
        return self

    def _ranges_fit(self) -> None:
        """``radial_range`` lies in what ``unit`` can take (>= 0; 2θ up to 180° or π rad),
        ``azimuth_range`` in pyFAI's χ, degrees, -180..360 (a span of at most 360°)."""
        if self.radial_range is not None:
            low, high = self.radial_range
            top = {"2th_deg": 180.0, "2th_rad": math.pi}.get(self.unit, math.inf)
            if low < 0 or high > top:
                most = f" and at most {top:g}" if top < math.inf else ""
                raise ValueError(
                    f"radial_range [{low:g}, {high:g}] is in the units of unit {self.unit!r}: "
                    f"low must be >= 0{most}"
                )
        if self.azimuth_range is not None:
            low, high = self.azimuth_range
            if low < -180 or high > 360 or high - low > 360:
                raise ValueError(
                    f"azimuth_range [{low:g}, {high:g}] is pyFAI's chi in degrees: within "
                    "-180..360, spanning at most 360 (e.g. [-90, 90])"
                )


def load_pyfai() -> None:
    """Import pyFAI's integrator and its engines. Without pyopencl, silx warns at its first
    import that it cannot import pyopencl; OpenCL methods are then refused with an error of
    their own (:func:`method`), so that warning, which every run would show, is silenced."""
    quiet = logging.getLogger("silx.opencl.common")
    with contextlib.ExitStack() as stack:
        if importlib.util.find_spec("pyopencl") is None and quiet.level < logging.ERROR:
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            stack.callback(quiet.setLevel, level)
        import pyFAI.integrator.azimuthal  # noqa: F401  (registers the integration engines)


def read_poni(path: str) -> Any:
    """pyFAI's ``PoniFile`` of ``path``.

    Raises:
        GeometryError: the file does not exist or does not parse as a PONI file.
    """
    if not Path(path).is_file():
        raise GeometryError(f"the PONI file {path!r} does not exist")
    load_pyfai()
    from pyFAI.io.ponifile import PoniFile

    try:
        return PoniFile(path)
    except Exception as exc:
        raise GeometryError(
            f"the PONI file {path!r} does not parse (pyFAI's PONI format, as pyFAI-calib2 "
            f"saves it): {type(exc).__name__}: {exc}"
        ) from None


def detector(name: str) -> Any:
    """pyFAI's detector named ``name`` (``detector_factory``, case and ``_`` ignored).

    Raises:
        GeometryError: pyFAI knows no such detector (the message suggests close names).
    """
    load_pyfai()
    from pyFAI.detectors import ALL_DETECTORS, detector_factory

    key = name.lower().replace(" ", "_")
    if key not in ALL_DETECTORS:
        hint = difflib.get_close_matches(key, list(ALL_DETECTORS), n=3)
        also = f"; close names: {', '.join(hint)}" if hint else ""
        raise GeometryError(
            f"pyFAI knows no detector {name!r}{also} (pyFAI's names: pyFAI.detectors.ALL_DETECTORS)"
        )
    return detector_factory(key)


def method(spec: tuple[str, str, str], dim: int) -> Any:
    """pyFAI's ``IntegrationMethod`` for ``[split, algo, impl]`` in ``dim`` dimensions.

    Raises:
        ValueError: pyFAI has no such method here (e.g. ``opencl`` without pyopencl and a
            device, or ``csc`` in 2-D).
    """
    load_pyfai()
    from pyFAI.method_registry import IntegrationMethod

    found = IntegrationMethod.select_method(dim, *spec, degradable=False)
    if not found:
        why = " (OpenCL needs pyopencl and a device)" if spec[2] == "opencl" else ""
        raise ValueError(
            f"pyFAI has no {dim}-D integration method {list(spec)} on this machine{why}"
        )
    return found[0]


CPU_METHOD = ("bbox", "csr", "cython")
"""What ``method: auto`` runs without an OpenCL device: pyFAI's own default, CSR on the CPU."""


@dataclass(frozen=True)
class ChosenMethod:
    """The method a node integrates with: ``spec`` ``[split, algo, impl]``, the ``device``
    (pyFAI's OpenCL ``platform / device`` name; ``None`` on the CPU), ``method`` (what is
    given to pyFAI: the spec, or pyFAI's ``IntegrationMethod`` of the OpenCL device)."""

    spec: tuple[str, str, str]
    device: str | None
    method: Any

    def describe(self) -> list[str]:
        """The metadata ``method``: ``[split, algo, impl]``, and the OpenCL device's name."""
        return [*self.spec, *([self.device] if self.device else [])]


def chosen_method(spec: str | tuple[str, str, str], dim: int) -> ChosenMethod:
    """The method to integrate with in ``dim`` dimensions. ``auto``: pyFAI's ``[bbox, csr,
    opencl]`` on the first OpenCL device pyFAI lists (fastest first) that is not a CPU (a GPU
    or an accelerator), where pyFAI has one (it needs pyopencl and a device driver); else
    :data:`CPU_METHOD`. An OpenCL CPU device (e.g. pocl) is not chosen: pyFAI's Cython CSR
    runs on the same cores. Any other spec is taken as given."""
    if spec != "auto":
        return ChosenMethod(tuple(spec), None, tuple(spec))
    load_pyfai()
    from pyFAI.method_registry import IntegrationMethod

    for found in IntegrationMethod.select_method(dim, "bbox", "csr", "opencl", degradable=False):
        if str(found.target_type or "").lower() != "cpu":
            return ChosenMethod(("bbox", "csr", "opencl"), str(found.target_name), found)
    return ChosenMethod(CPU_METHOD, None, CPU_METHOD)


def integrator(params: AzintParams) -> Any:
    """pyFAI's ``AzimuthalIntegrator`` for the geometry of ``params`` (made once per replica:
    pyFAI keeps its look-up tables in it)."""
    load_pyfai()
    import pyFAI
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    if params.poni is not None:
        return pyFAI.load(params.poni)
    if params.detector is not None:
        det = detector(params.detector)
    else:
        det = Detector(pixel1=params.pixel1, pixel2=params.pixel2, max_shape=params.shape)
    return AzimuthalIntegrator(
        dist=params.distance,
        poni1=params.poni1,
        poni2=params.poni2,
        rot1=params.rot1,
        rot2=params.rot2,
        rot3=params.rot3,
        detector=det,
        wavelength=params.wavelength,
    )
