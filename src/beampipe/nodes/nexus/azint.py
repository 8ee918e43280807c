"""The NXazint1d / NXazint2d view of azimuthally integrated patterns in a stream's NXentry.

NXazint1d: https://manual.nexusformat.org/classes/applications/NXazint1d.html
NXazint2d: https://manual.nexusformat.org/classes/applications/NXazint2d.html
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import h5py
import numpy as np

import beampipe
from beampipe.nodes.nexus.meta import meta_value, new_group, put, unique_name, write_collection

__all__ = ["AzintLayout", "AzintParams", "azint_layout", "write_azint"]

HC_KEV_ANGSTROM = 12.398419843320026
"""h c in keV Angstrom (CODATA 2018), for the X-ray energy from the wavelength."""
RADIAL_NAMES = {"q": "q", "2th": "2theta"}
"""Radial axis data name -> NXazint ``long_name``: NXazint takes q and 2theta; patterns on
another radial axis (``r``) get their axes stored once, but no view."""
APPLIED = ("solid_angle", "polarization", "normalization", "monitor")
"""Keys of ``process["applied"]`` -> the NXazint ``<key>_applied`` booleans."""


class AzintParams(beampipe.Params):
    """Azimuthally integrated patterns: the append-mode ports whose first message carries
    ``intensity`` (one pattern (npt,) or one cake (npt_azim, npt)), optionally ``sigma`` (same
    shape) and ``monitor`` (0-d, the I0 divided out), with the metadata ``axes`` naming the
    radial axis last (a 1-D data array of npt values) and, for a cake, the azimuthal axis
    before it (``chi``). Their axes are stored once per stream; on a ``q`` or ``2th`` axis
    they get the NXazint1d / NXazint2d view (an NXsubentry ``<port>_azint`` per port)."""

    intensity: str = "intensity"
    sigma: str = "sigma"
    monitor: str = "monitor"


@dataclass(frozen=True)
class AzintLayout:
    """Which data names of a port's messages make the NXazint view (``sigma``, ``azimuthal``
    and ``monitor`` may be None)."""

    definition: str
    intensity: str
    sigma: str | None
    radial: str
    azimuthal: str | None
    monitor: str | None

    @property
    def long_name(self) -> str | None:
        """NXazint's name of the radial axis, None if NXazint does not take it."""
        return RADIAL_NAMES.get(self.radial)

    @property
    def axes(self) -> frozenset[str]:
        """The axes: the same in every message of a stream, stored once."""
        return frozenset(a for a in (self.radial, self.azimuthal) if a is not None)

    def attributes(self) -> dict[str, dict[str, str]]:
        """``long_name`` (and ``units`` of the intensities) of the datasets, as NXazint names
        them."""
        attrs = {self.intensity: {"long_name": "intensity", "units": "arbitrary units"}}
        if self.long_name is not None:
            attrs[self.radial] = {"long_name": self.long_name}
        if self.sigma is not None:
            attrs[self.sigma] = {"long_name": "estimated intensity error"}
            attrs[self.sigma]["units"] = "arbitrary units"
        if self.azimuthal is not None:
            attrs[self.azimuthal] = {"long_name": "azimuthal bin center"}
        return attrs


def azint_layout(msg: beampipe.Message, params: AzintParams | None) -> AzintLayout | None:
    """The layout of a port whose first message is ``msg``, or None if its data is not an
    azimuthally integrated pattern or cake (see :class:`AzintParams`)."""
    axes = msg.metadata.get("axes")
    if params is None or not isinstance(axes, list) or not axes:
        return None
    data = msg.data
    intensity = data.get(params.intensity)
    if not isinstance(intensity, np.ndarray) or intensity.ndim not in (1, 2):
        return None
    names = [str(a) for a in axes[-intensity.ndim :]]
    if len(names) != intensity.ndim:
        return None
    for name, n in zip(names, intensity.shape, strict=True):
        axis = data.get(name)
        if not isinstance(axis, np.ndarray) or axis.shape != (n,):
            return None
    sigma = data.get(params.sigma)
    monitor = data.get(params.monitor)
    return AzintLayout(
        definition=f"NXazint{intensity.ndim}d",
        intensity=params.intensity,
        sigma=params.sigma if getattr(sigma, "shape", None) == intensity.shape else None,
        radial=names[-1],
        azimuthal=names[0] if intensity.ndim == 2 else None,
        monitor=params.monitor if getattr(monitor, "ndim", None) == 0 else None,
    )


def write_azint(
    entry: h5py.Group,
    port: str,
    link: Any,
    layout: AzintLayout,
    process: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> None:
    """Add the NXsubentry ``<port>_azint`` (``definition = "NXazint1d"`` or ``"NXazint2d"``) to
    ``entry``.

    It holds ``title``, the ``<key>_applied`` booleans of ``process["applied"]``, a hard link
    to the entry's NXinstrument (``name`` = beamline, NXsource ``name``/``type``/``probe``
    (``x-ray`` unless given), NXmonochromator ``wavelength`` (Angstrom) and ``energy`` (keV) from
    ``process["geometry"]["wavelength"]`` (metres, as pyFAI gives it)), the NXprocess
    ``reduction`` (``program``, ``version``, ``reference``, ``note`` from ``process``; ``date``:
    now, UTC; NXparameters ``input``: every item of ``process["parameters"]``, of
    ``process["geometry"]`` (with units) and ``poni``, the PONI file's content), an NXmonitor
    with the monitor's values if the messages carry it, and the NXdata ``data``: ``I``,
    ``I_errors``, ``radial_axis``, ``azimuthal_axis`` (2-D) as external links into the port's
    group file. Items ``process`` does not give are left out (nothing is invented).

    Args:
        entry: the stream's NXentry in the master file.
        port: the input port (its NXdata group's name).
        link: ``link(data name)`` -> the :class:`h5py.ExternalLink` to that dataset.
        layout: which data names hold what (:func:`azint_layout`).
        process: the first message's metadata ``process``.
        meta: the stream's metadata.
    """
    sub = new_group(entry, unique_name(f"{port}_azint", entry), "NXsubentry")
    put(sub, "definition", layout.definition)
    if "title" in entry:
        put(sub, "title", entry["title"].asstr()[()])
    applied = process.get("applied")
    for key in APPLIED:
        if isinstance(applied, Mapping) and isinstance(applied.get(key), bool):
            put(sub, f"{key}_applied", np.bool_(applied[key]))
    geometry = process.get("geometry") if isinstance(process.get("geometry"), Mapping) else {}
    _write_instrument(entry, geometry, meta)
    entry["instrument"].attrs["target"] = entry["instrument"].name
    sub["instrument"] = entry["instrument"]
    _write_reduction(new_group(sub, "reduction", "NXprocess"), process, geometry)
    if layout.monitor is not None:
        new_group(sub, "monitor", "NXmonitor")["data"] = link(layout.monitor)
    _write_data(new_group(sub, "data", "NXdata"), link, layout)
    sub.attrs["default"] = "data"


def _write_instrument(
    entry: h5py.Group, geometry: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    instrument = new_group(entry, "instrument", "NXinstrument")
    if (beamline := meta_value(meta, "beamline")) is not None and "name" not in instrument:
        put(instrument, "name", str(beamline))
    source = new_group(instrument, "source", "NXsource")
    if "probe" not in source:
        put(source, "probe", "x-ray")
    wavelength = geometry.get("wavelength")
    if isinstance(wavelength, int | float) and wavelength > 0:
        mono = new_group(instrument, "monochromator", "NXmonochromator")
        angstrom = wavelength * 1e10
        put(mono, "wavelength", angstrom, "angstrom")
        put(mono, "energy", HC_KEV_ANGSTROM / angstrom, "keV")


def _write_reduction(
    reduction: h5py.Group, process: Mapping[str, Any], geometry: Mapping[str, Any]
) -> None:
    for key in ("program", "version", "reference", "note"):
        if isinstance(process.get(key), str):
            put(reduction, key, process[key])
    put(reduction, "date", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    parameters = new_group(reduction, "input", "NXparameters")
    given = process.get("parameters")
    write_collection(parameters, given if isinstance(given, Mapping) else {})
    units = {"dist": "m", "poni1": "m", "poni2": "m", "wavelength": "m"}
    units |= {"rot1": "rad", "rot2": "rad", "rot3": "rad"}
    for key, value in geometry.items():
        if key in parameters:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            put(parameters, key, value, units.get(key))
        elif value is not None:
            write_collection(parameters, {key: value})
    if isinstance(process.get("poni"), str):
        put(parameters, "poni", process["poni"])


def _write_data(data: h5py.Group, link: Any, layout: AzintLayout) -> None:
    data["I"] = link(layout.intensity)
    if layout.sigma is not None:
        data["I_errors"] = link(layout.sigma)
    data["radial_axis"] = link(layout.radial)
    if layout.azimuthal is None:
        axes, interpretation = [".", "radial_axis"], "spectrum"
    else:
        data["azimuthal_axis"] = link(layout.azimuthal)
        axes, interpretation = [".", "azimuthal_axis", "radial_axis"], "image"
        data.attrs["azimuthal_axis_indices"] = np.int64(1)
    data.attrs["signal"] = "I"
    data.attrs["axes"] = np.array(axes, dtype=h5py.string_dtype())
    data.attrs["interpretation"] = interpretation
    data.attrs["radial_axis_indices"] = np.int64(len(axes) - 1)
