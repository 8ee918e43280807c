"""Azimuthal integration of each frame with pyFAI: ``use: azint.integrate1d`` (I(q), or I(2θ),
I(r)) and ``use: azint.integrate2d`` (the cake I(χ, q)).

The integration is pyFAI's own (``AzimuthalIntegrator.integrate1d`` / ``integrate2d``,
https://pyfai.readthedocs.io), made once per replica from the geometry (:mod:`.geometry`) and
called on each frame with the node's options, so pyFAI builds its look-up table (CSR by
default) at the first frame and reuses it for every later one.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import numpy as np
from pydantic import PositiveInt

import beampipe
from beampipe.nodes.azint.geometry import (
    RADIAL,
    AzintParams,
    GeometryError,
    chosen_method,
    integrator,
)
from beampipe.nodes.azint.monitor import MonitorMissing, monitor_value
from beampipe.nodes.azint.provenance import process_metadata
from beampipe.nodes.frame.frames import FrameWorker
from beampipe.nodes.frame.pixels import PixelFileError, read_image
from beampipe.nodes.provenance import ProcessOnce

__all__ = ["Integrate1d", "Integrate2d", "Integrator"]


class Integrator(FrameWorker):
    """What ``azint.integrate1d`` and ``azint.integrate2d`` share: the integrator, the frame,
    its monitor, the shape checks.

    Ports: ``in`` (the frames) and ``monitor`` (optional: messages of the same stream and ids
    holding the monitor, e.g. a counter of the same trigger; the node forms events of the
    two). With ``monitor`` set, a frame whose monitor is missing (not in its message nor in
    its event's ``monitor`` part, or that part did not arrive before the event's timeout) or
    not a finite number > 0 is a dead letter: counted, listed, and the stream goes on.

    Raises:
        GeometryError: (a ``ValueError``) at a stream's first frame, a frame whose shape is not
            the detector's (naming node, stream, id and both shapes).
        PixelFileError: (a ``ValueError``) a mask, dark or flat file that cannot be read or
            does not fit the detector (at creation), or the frames (at a stream's first frame).
        ValueError: a message arrives on the ``monitor`` port without ``monitor`` set.
        MissingColumn, TypeError: see :class:`~beampipe.nodes.frame.frames.FrameWorker`.
    """

    inputs: ClassVar[tuple[str, ...]] = ("in", "monitor")
    events: ClassVar[bool] = True

    params: AzintParams

    def __init__(self, params: AzintParams, name: str = "") -> None:
        super().__init__(params, name)
        self.integrator = integrator(params)
        """pyFAI's ``AzimuthalIntegrator``, made once: it keeps pyFAI's look-up tables."""
        self.dark = read_image(params.dark, "dark") if params.dark else None
        self.flat = read_image(params.flat, "flat") if params.flat else None
        self.radial, self.radial_units = RADIAL[params.unit]
        self.method = chosen_method(params.method, params.dim)
        """The method pyFAI integrates with (``method: auto``: OpenCL or CSR on the CPU)."""
        where = f"on the OpenCL device {self.method.device}" if self.method.device else "on the CPU"
        print(
            f"{self.name}: pyFAI method {list(self.method.spec)} {where} "
            f"(method: {params.method if params.method == 'auto' else list(params.method)})",
            file=sys.stderr,
        )
        self.provenance = ProcessOnce(
            process_metadata(params, self.integrator, self.method.describe())
        )
        """How the patterns are made, for the NeXus writer's NXazint view (metadata ``process``)."""
        self._checked: set[str] = set()
        shape = self.integrator.detector.shape
        for what in ("mask", "dark", "flat"):
            image = getattr(self, what)
            if image is not None and shape is not None and image.shape != tuple(shape):
                raise PixelFileError(
                    f"{self.name}: the {what} {getattr(params, what)!r} has shape {image.shape}, "
                    f"the detector of {self._geometry()} {tuple(shape)}"
                )
        if self.mask is not None:  # pyFAI's mask argument, set once: its checksum is cached
            self.integrator.detector.mask = self.mask
        if shape is not None:
            # pyFAI builds its look-up table at its first call (seconds for 4 M pixels): here,
            # as the node starts, not in the first frame's process(), a hang past hang_timeout
            self.integrate(np.zeros(shape, np.float32), self.options(1.0))

    def on_stream_end(self, stream: str) -> None:
        super().on_stream_end(stream)
        self._checked.discard(stream)
        self.provenance.forget(stream)

    def process(self, event: beampipe.Event) -> beampipe.Message | None:
        where = f"{self.name}: stream {event.stream!r}, id {event.id}"
        msg = event.messages.get("in")
        if msg is None:
            self.dead_letter(event, f"{where}: a monitor without its frame (port 'in' missing)")
            return None
        found = self.frame(msg)
        if found is None:
            return None
        _, frame = found
        if frame.dtype == np.float32 and not frame.flags.writeable:
            frame = frame.copy()  # pyFAI's preprocessing takes float32 as is, writable only
        if event.stream not in self._checked:
            self._check(frame, where)
            self._checked.add(event.stream)
        factor = 1.0
        if self.params.monitor is not None:
            others = [m for port, m in event.messages.items() if port != "in"]
            try:
                factor = monitor_value(self.params.monitor, [msg, *others], event.missing)
            except MonitorMissing as exc:
                self.dead_letter(event, f"{where}: {exc}")
                return None
        elif "monitor" in event.messages:
            raise ValueError(
                f"{where}: a message came on the port 'monitor' but the param monitor names "
                "no data item or metadata key to divide by: set it"
            )
        data, axes, units = self.integrate(frame, self.options(factor))
        if self.params.monitor is not None:
            data["monitor"] = np.array(factor)
        metadata: dict[str, Any] = {
            **msg.metadata,
            "signal": "intensity",
            "axes": axes,
            "units": units,
            "unit": self.params.unit,
            "normalization_factor": factor,
            "method": self.method.describe(),
        }
        self.provenance.stamp(metadata, event.stream, event.id)
        return beampipe.Message(data=data, metadata=metadata)

    def options(self, factor: float) -> dict[str, Any]:
        """The keyword arguments of pyFAI's ``integrate1d``/``integrate2d`` for one frame
        whose monitor is ``factor`` (the mask is the detector's, set once)."""
        p = self.params
        return {
            "unit": p.unit,
            "method": self.method.method,
            "dark": self.dark,
            "flat": self.flat,
            "polarization_factor": p.polarization_factor,
            "correctSolidAngle": p.solid_angle,
            "error_model": p.error_model,
            "normalization_factor": factor,
            "radial_range": p.radial_range,
            "azimuth_range": p.azimuth_range,
        }

    def integrate(
        self, frame: np.ndarray, options: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
        """``(data, axes, units)`` of the integrated ``frame``."""
        raise NotImplementedError(f"{type(self).__name__}.integrate")

    def _geometry(self) -> str:
        return f"the PONI file {self.params.poni!r}" if self.params.poni else "the params"

    def _check(self, frame: np.ndarray, where: str) -> None:
        shape = self.integrator.detector.shape
        if shape is not None and tuple(shape) != frame.shape:
            raise GeometryError(
                f"{where}: the frame has shape {frame.shape}, the detector of {self._geometry()} "
                f"({self.integrator.detector.name}) {tuple(shape)}: a geometry of another "
                "detector, or binned or cropped frames"
            )
        for what in ("dark", "flat"):
            image = getattr(self, what)
            if image is not None and image.shape != frame.shape:
                raise PixelFileError(
                    f"{where}: the {what} {getattr(self.params, what)!r} has shape "
                    f"{image.shape}, the frames {frame.shape}"
                )


def _sigma(result: Any) -> dict[str, np.ndarray]:
    return {} if result.sigma is None else {"sigma": np.asarray(result.sigma, np.float64)}


class Integrate1d(Integrator):
    """I(q) of each frame (or I(2θ), I(r): ``unit``) with pyFAI's ``integrate1d``.

    Input: one 2-D frame per message (see :class:`~beampipe.nodes.frame.frames.FrameWorker`),
    the detector's shape. Output, per frame (stream and id kept): data ``intensity`` (float64,
    (npt,)), ``sigma`` (float64, (npt,); with ``error_model``), the radial axis named by the
    unit, ``q``/``2th``/``r`` (float64, (npt,), the bin centres, in ``unit``); metadata: the
    input's, with ``signal: intensity``, ``axes: [q]``, ``units`` (NeXus units of the axis),
    ``unit`` (pyFAI's), ``normalization_factor`` (the monitor, 1.0 without one), ``method``
    (``[split, algo, impl]`` that pyFAI ran, and the OpenCL device's name on one;
    :func:`~beampipe.nodes.azint.geometry.chosen_method`) and, only on the first result of
    each stream that a replica sends and on any with an id below all it sent before in that
    stream (so that an ``ordered:`` writer gets it first too), ``process`` (how the pattern was
    made: pyFAI's version, the geometry, the PONI file's text, the options, about 1 KB;
    :func:`~beampipe.nodes.azint.provenance.process_metadata`). With ``monitor``
    set, data ``monitor`` (float64, 0-d) holds the value divided by.

    Raises: see :class:`Integrator`.
    """

    Params = AzintParams

    def integrate(
        self, frame: np.ndarray, options: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
        result = self.integrator.integrate1d(frame, self.params.npt, **options)
        data = {
            "intensity": np.asarray(result.intensity, np.float64),
            **_sigma(result),
            self.radial: np.asarray(result.radial, np.float64),
        }
        return data, [self.radial], {self.radial: self.radial_units}


class Integrate2dParams(AzintParams):
    """As ``azint.integrate1d``'s, and ``npt_azim``: azimuthal (χ) bins over 360°."""

    dim: ClassVar[int] = 2

    npt_azim: PositiveInt = 360


class Integrate2d(Integrator):
    """The cake I(χ, q) of each frame with pyFAI's ``integrate2d``.

    Output, per frame: data ``intensity`` (float64, (npt_azim, npt)), ``sigma`` (the same
    shape; with ``error_model``), the radial axis (``q``/``2th``/``r``, float64, (npt,)) and
    ``chi`` (float64, (npt_azim,), degrees, pyFAI's azimuth); metadata as
    :class:`Integrate1d`'s with ``axes: [chi, q]``.

    Raises: see :class:`Integrator`.
    """

    Params = Integrate2dParams
    params: Integrate2dParams

    def integrate(
        self, frame: np.ndarray, options: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
        result = self.integrator.integrate2d(
            frame, self.params.npt, self.params.npt_azim, **options
        )
        data = {
            "intensity": np.asarray(result.intensity, np.float64),
            **_sigma(result),
            self.radial: np.asarray(result.radial, np.float64),
            "chi": np.asarray(result.azimuthal, np.float64),
        }
        units = {self.radial: self.radial_units, "chi": "degree"}
        return data, ["chi", self.radial], units
