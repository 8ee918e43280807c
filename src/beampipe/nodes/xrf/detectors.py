"""Spectra of (multi-element) XRF detectors in HDF5/NeXus files, one scan point at a time.

Three layouts are read (``mca_files`` picks one with its ``layout`` param):

* ``xspress3``: the file the areaDetector HDF5 plugin (NDFileHDF5) writes for the Quantum
  Detectors Xspress3 (EPICS xspress3 driver, as at NSLS-II, APS and Diamond; read this way by
  xraylarch's ``larch.io.xsp3_hdf5.read_xsp3_hdf5``): the spectra in
  ``/entry/instrument/detector/data``, shape (points, elements, channels) (or (points,
  channels) for one element), and the per-frame NDAttributes of each element ``k`` (1-based) in
  ``/entry/instrument/NDAttributes`` (older files: ``/entry/instrument/detector/NDAttributes``):
  ``CHAN{k}DTFactor`` (the driver's dead-time correction factor; without it, computed from the
  SCA counters as xraylarch does: :func:`_sca_factor`) and ``CHAN{k}SCA0`` (clock ticks of the
  80 MHz clock: the real time is ``SCA0 * 12.5 ns``), each of shape (points,).
* ``nxdetector``: one NeXus NXdetector group per element, each with ``data`` of shape (points,
  channels) and, of shape (points,), the input and output count rates or the live and real
  times under the names PyMca's HDF5 reader (``PyMca5.PyMcaCore.NexusTools.getMcaObjectPaths``:
  ``live_time``, ``elapsed_time``) and ESRF BLISS's writer of XIA (FalconX, xMAP) and other MCA
  detectors use (``icr``, ``ocr``, ``trigger_livetime``, ``realtime``); see :data:`STATS`.
* ``xmap``: the raw mapping-mode buffers of XIA xMAP electronics as the areaDetector HDF5 plugin
  stores them (:mod:`.xmap`).

A point's dead-time data are float64 arrays of shape (elements,), under the names ``dt_factor``
(Xspress3), ``icr``, ``ocr`` (counts/s), ``live_time``, ``real_time`` (s): whichever the file
has.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import h5py
import numpy as np

from beampipe.nodes.xrf.xmap import XmapFile, is_xmap

__all__ = ["STATS", "DetectorFile", "DetectorFileError", "Layout", "open_detector_file"]

Layout = Literal["auto", "xspress3", "nxdetector", "xmap"]

XSPRESS3_DATA = "entry/instrument/detector/data"
XMAP_DATA = ("entry/data/data", "entry/instrument/detector/data")
XSPRESS3_ATTRIBUTES = ("entry/instrument/NDAttributes", "entry/instrument/detector/NDAttributes")
XSPRESS3_CLOCK = 12.5e-9
"""Seconds per tick of the Xspress3 80 MHz clock (``CHAN{k}SCA0``)."""

STATS: dict[str, tuple[str, ...]] = {
    "icr": ("icr", "input_rate", "input_count_rate"),
    "ocr": ("ocr", "output_rate", "output_count_rate"),
    "live_time": ("live_time", "trigger_livetime", "livetime"),
    "real_time": ("elapsed_time", "realtime", "real_time"),
}
"""Dead-time datasets of the ``nxdetector`` layout: the name sent -> the dataset names read
(the first found in an element's group), PyMca's and ESRF BLISS's."""


class DetectorFileError(ValueError):
    """An HDF5 file holds no spectra of the layout asked for, or its datasets do not agree in
    shape; the message names node, file, dataset and the cause."""


@dataclass
class DetectorFile:
    """An open detector file: where its spectra are and the dead-time data of every point.

    Attributes:
        layout: ``xspress3`` or ``nxdetector``.
        elements: the element names (``CHAN1``, ... or the NXdetector group names), in order.
        datasets: the spectra datasets: one of (points, elements, channels) or (points,
            channels) (``xspress3``), or one of (points, channels) per element.
        points, channels: the shape of the spectra.
        stats: name -> float64 (points, elements).
    """

    layout: str
    elements: list[str]
    datasets: list[h5py.Dataset]
    points: int
    channels: int
    stats: dict[str, np.ndarray] = field(default_factory=dict)

    def spectra(self, i: int) -> np.ndarray:
        """The spectra of point ``i``: (elements, channels), the file's dtype."""
        if len(self.datasets) == 1:
            return np.asarray(self.datasets[0][i]).reshape(len(self.elements), self.channels)
        return np.stack([np.asarray(ds[i]) for ds in self.datasets])

    def point_stats(self, i: int) -> dict[str, np.ndarray]:
        """The dead-time data of point ``i``: name -> float64 (elements,)."""
        return {name: values[i] for name, values in self.stats.items()}

    @property
    def stat_names(self) -> list[str]:
        """The names of the dead-time data, sorted."""
        return sorted(self.stats)


@contextmanager
def open_detector_file(
    path: str | os.PathLike[str], layout: Layout, detectors: str | None, node: str = ""
) -> Iterator[DetectorFile]:
    """``path`` opened read-only as a :class:`DetectorFile` (or, ``xmap``, an
    :class:`~beampipe.nodes.xrf.xmap.XmapFile`) of ``layout`` (``auto``: ``xmap`` if
    ``/entry/data/data`` or ``/entry/instrument/detector/data`` holds xMAP buffers, else
    ``xspress3`` if the file has ``/entry/instrument/detector/data``, else ``nxdetector``);
    ``detectors``: an ``fnmatch`` pattern of the NXdetector group paths to read
    (``nxdetector``; None: every NXdetector whose ``data`` is 2-D).

    Raises:
        DetectorFileError: no spectra of the layout, or datasets that disagree in shape.
        OSError: not an HDF5 file.
    """
    where = f"{node + ': ' if node else ''}{str(path)!r}"
    with h5py.File(path, "r") as f:
        buffers = next((f[p] for p in XMAP_DATA if is_xmap(f.get(p))), None)
        if layout == "auto":
            xspress3 = isinstance(f.get(XSPRESS3_DATA), h5py.Dataset)
            layout = "xmap" if buffers else "xspress3" if xspress3 else "nxdetector"
        if layout == "xmap":
            if buffers is None:
                raise DetectorFileError(
                    f"{where}: no xMAP mapping buffers in {' or '.join(XMAP_DATA)} (16-bit "
                    "words starting with the tags 0x55AA 0xAA55)"
                )
            try:
                xmap = XmapFile.open(buffers, where)
            except ValueError as exc:
                raise DetectorFileError(str(exc)) from None
            yield xmap
        elif layout == "xspress3":
            yield _xspress3(f, where)
        else:
            yield _nxdetector(f, detectors, where)


def _xspress3(f: h5py.File, where: str) -> DetectorFile:
    ds = f.get(XSPRESS3_DATA)
    if not isinstance(ds, h5py.Dataset) or ds.ndim not in (2, 3) or ds.dtype.kind not in "iuf":
        raise DetectorFileError(
            f"{where}: no Xspress3 spectra: /{XSPRESS3_DATA} must be a numeric dataset of "
            "(points, elements, channels) or (points, channels) (layout 'xspress3', as the "
            "areaDetector HDF5 plugin writes it)"
        )
    points, channels = ds.shape[0], ds.shape[-1]
    n = ds.shape[1] if ds.ndim == 3 else 1
    elements = [f"CHAN{k}" for k in range(1, n + 1)]
    group = next((f[p] for p in XSPRESS3_ATTRIBUTES if isinstance(f.get(p), h5py.Group)), None)
    stats: dict[str, np.ndarray] = {}
    if group is not None:
        for name, attribute, scale in (
            ("dt_factor", "DTFactor", 1.0),
            ("real_time", "SCA0", XSPRESS3_CLOCK),
        ):
            columns = [group.get(f"{e}{attribute}") for e in elements]
            if all(isinstance(c, h5py.Dataset) for c in columns):
                stats[name] = (
                    np.stack([_per_point(c, points, where) for c in columns], axis=1) * scale
                )
        if "dt_factor" not in stats:
            factor = _sca_factor(group, elements, points, where)
            if factor is not None:
                stats["dt_factor"] = factor
    return DetectorFile("xspress3", elements, [ds], points, channels, stats)


def _sca_factor(
    group: h5py.Group, elements: list[str], points: int, where: str
) -> np.ndarray | None:
    """The Xspress3 dead-time factor of each point and element from its SCA counters, for files
    without ``CHAN{k}DTFactor``, as xraylarch computes it (``larch.io.read_xsp3_hdf5``):
    ticks / (ticks - (all events x event width + reset ticks)), with ticks = ``SCA0`` (at
    least 10), reset ticks = ``SCA1``, all events = ``SCA3``, event width = 1 +
    ``EventWidth`` (6 without it), and a denominator under 2 taken as 1. None without
    ``SCA0``, ``SCA1`` and ``SCA3``."""
    factors = []
    for e in elements:
        sca = [group.get(f"{e}SCA{n}") for n in (0, 1, 3)]
        if not all(isinstance(c, h5py.Dataset) for c in sca):
            return None
        ticks, reset, events = (_per_point(c, points, where) for c in sca)
        ticks = np.maximum(ticks, 10.0)
        width = group.get(f"{e}EventWidth")
        width = 1.0 + _per_point(width, points, where) if isinstance(width, h5py.Dataset) else 6.0
        denominator = ticks - (events * width + reset)
        factors.append(ticks / np.where(denominator < 2.0, 1.0, denominator))
    return np.stack(factors, axis=1)


def _nxdetector(f: h5py.File, pattern: str | None, where: str) -> DetectorFile:
    groups: list[h5py.Group] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if not isinstance(obj, h5py.Group) or _nx_class(obj) != "NXdetector":
            return
        data = obj.get("data")
        wanted = (
            fnmatch.fnmatchcase(name, pattern)
            if pattern
            else (isinstance(data, h5py.Dataset) and data.ndim == 2)
        )
        if wanted:
            groups.append(obj)

    f.visititems(visit)
    if not groups:
        asked = f"matching {pattern!r}" if pattern else "with 2-D 'data' (points, channels)"
        raise DetectorFileError(
            f"{where}: no NXdetector group {asked} (layout 'nxdetector': one NXdetector per "
            "element; set 'detectors' to the pattern of their paths, or 'layout')"
        )
    groups.sort(key=lambda g: g.name)
    datasets = []
    for g in groups:
        data = g.get("data")
        if not isinstance(data, h5py.Dataset) or data.ndim != 2 or data.dtype.kind not in "iuf":
            raise DetectorFileError(
                f"{where}: {g.name}/data must be a numeric dataset of (points, channels)"
            )
        if datasets and data.shape != datasets[0].shape:
            raise DetectorFileError(
                f"{where}: {g.name}/data has shape {data.shape}, {datasets[0].name} "
                f"{datasets[0].shape}: the elements must have the same points and channels"
            )
        datasets.append(data)
    points, channels = datasets[0].shape
    stats: dict[str, np.ndarray] = {}
    for name, candidates in STATS.items():
        columns = [
            next((g[c] for c in candidates if isinstance(g.get(c), h5py.Dataset)), None)
            for g in groups
        ]
        if all(c is not None for c in columns):
            stats[name] = np.stack([_per_point(c, points, where) for c in columns], axis=1)
    elements = [g.name.rsplit("/", 1)[-1] for g in groups]
    return DetectorFile("nxdetector", elements, datasets, points, channels, stats)


def _per_point(ds: h5py.Dataset, points: int, where: str) -> np.ndarray:
    values = np.asarray(ds[()], dtype=np.float64).reshape(-1)
    if values.shape != (points,):
        raise DetectorFileError(
            f"{where}: {ds.name} has {values.size} values for {points} spectra (one per point "
            "is needed)"
        )
    return values


def _nx_class(obj: h5py.HLObject) -> str:
    value = obj.attrs.get("NX_class", "")
    return value.decode() if isinstance(value, bytes) else str(value)
