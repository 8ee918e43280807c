"""The NXfluo view of fitted XRF spectra in a stream's NXentry.

NXfluo (https://manual.nexusformat.org/classes/applications/NXfluo.html) is the application
definition of raw X-ray fluorescence data: the spectra (``instrument/fluorescence/data``) against
their energy, with the excitation wavelength, source, sample and monitor. ``nexus_writer`` adds
it, when asked, for the append-mode port that receives ``xrf.fit``'s results with the spectra
(``keep_spectrum: true``); the fit itself is the entry's NXprocess ``xrf_fit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

import beampipe
from beampipe.nodes.nexus.files import GroupFile
from beampipe.nodes.nexus.meta import (
    new_group,
    new_subentry,
    number_with_unit,
    put,
    write_monitor,
)

__all__ = ["HC_KEV_ANGSTROM", "FluoParams", "add_fluo", "write_fluo"]

HC_KEV_ANGSTROM = 12.398419843320026
"""h c in keV Å (CODATA 2018): wavelength (Å) = h c / photon energy (keV)."""


class FluoParams(beampipe.Params):
    """The NXfluo view (an NXsubentry ``fluo``): the append-mode ``port`` whose messages carry
    the spectra as ``data`` (``xrf.fit`` with ``keep_spectrum: true``: ``spectrum``) and the
    metadata ``process`` of ``xrf.fit`` (calibration and excitation energy); ``monitor``: the
    data name of the incident-flux counts, if the messages carry them."""

    port: str = "fit"
    data: str = "spectrum"
    monitor: str | None = None


def add_fluo(
    entry: h5py.Group,
    params: FluoParams | None,
    msg: beampipe.Message,
    group: GroupFile,
    link: str,
    meta: Mapping[str, Any],
) -> None:
    """The NXfluo view (:func:`write_fluo`) if ``params`` asks for it and ``msg``, the first
    message of the port whose group file ``group`` (``link``, relative to the master) was just
    made, is on ``params.port`` in append mode with 1-D ``params.data``."""
    if params is None or msg.port != params.port or group.mode != "append":
        return
    if params.data not in group.names or msg.data[params.data].ndim != 1:
        return
    names = {"data": group.columns[params.data], "monitor": None}
    if params.monitor is not None and params.monitor in group.names:
        names["monitor"] = group.columns[params.monitor]
    process = msg.metadata.get("process")
    process = process if isinstance(process, dict) else {}
    channels = msg.data[params.data].shape[0]
    write_fluo(entry, link, f"/entry/{group.name}", names, channels, process, meta)


def write_fluo(
    entry: h5py.Group,
    file_name: str,
    group_path: str,
    names: Mapping[str, str | None],
    channels: int,
    process: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> None:
    """Add the NXfluo view to ``entry``: in its NXinstrument, ``source/probe = "x-ray"`` unless
    given, ``monochromator/wavelength`` (Å, from the fit's excitation energy ``parameters.energy``
    in keV) and the NXdetector ``fluorescence`` with ``data`` (an external link to the spectra,
    (n spectra, n channels)) and ``energy`` (keV, float64 (n channels,): ``zero + gain *
    channel``, the fit configuration's calibration); the NXmonitor ``monitor`` (``data`` linked
    when ``names["monitor"]`` is given; ``mode``, ``preset`` from the stream metadata); then the
    NXsubentry ``fluo`` with ``definition = "NXfluo"``, ``title``, ``start_time``, hard links to
    ``instrument``, ``sample`` and ``monitor``, and the NXdata ``data`` linking ``energy`` and
    ``data``. Items the inputs do not give are not written (nothing is invented).

    Args:
        entry: the stream's NXentry in the master file.
        file_name: the group file of the port, relative to the master's directory.
        group_path: the port's NXdata group in that file (``/entry/fit``).
        names: ``data``: the spectra's dataset name; ``monitor``: the monitor counts' dataset
            name, or None.
        channels: the spectra's length.
        process: the metadata ``process`` of ``xrf.fit`` (``{}`` if none).
        meta: the stream's metadata.
    """
    instrument = new_group(entry, "instrument", "NXinstrument")
    source = new_group(instrument, "source", "NXsource")
    if "probe" not in source:
        put(source, "probe", "x-ray")
    parameters = process.get("parameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    energy = number_with_unit(parameters.get("energy"))
    if energy is not None and energy[0] > 0:
        monochromator = new_group(instrument, "monochromator", "NXmonochromator")
        put(monochromator, "wavelength", HC_KEV_ANGSTROM / energy[0], "angstrom")
    detector = new_group(instrument, "fluorescence", "NXdetector")
    detector["data"] = h5py.ExternalLink(file_name, f"{group_path}/{names['data']}")
    zero, gain = number_with_unit(parameters.get("zero")), number_with_unit(parameters.get("gain"))
    if zero is not None and gain is not None:
        channel = np.arange(channels, dtype=np.float64)
        put(detector, "energy", zero[0] + gain[0] * channel, "keV")
    counts = names.get("monitor")
    link = h5py.ExternalLink(file_name, f"{group_path}/{counts}") if counts else None
    write_monitor(new_group(entry, "monitor", "NXmonitor"), link, meta)
    sub = new_subentry(entry, "fluo", "NXfluo")
    data = new_group(sub, "data", "NXdata")
    data["data"] = h5py.ExternalLink(file_name, f"{group_path}/{names['data']}")
    data.attrs["signal"] = "data"
    if "energy" in detector:
        detector["energy"].attrs["target"] = detector["energy"].name
        data["energy"] = detector["energy"]
        axes = np.array([".", "energy"], dtype=h5py.string_dtype())
        data.attrs.update({"axes": axes, "energy_indices": np.int64(1)})
    sub.attrs["default"] = "data"
