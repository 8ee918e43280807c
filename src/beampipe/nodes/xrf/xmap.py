"""The mapping-mode buffers of XIA xMAP electronics in an HDF5 file (layout ``xmap``).

In mapping mode (full spectra, mapping mode 1) the EPICS dxp driver hands out the xMAP's raw
buffers, which the areaDetector file plugins store as they are: an array of (buffers, modules,
buffer words), 16-bit words (HDF5 plugin: ``/entry/data/data``, or
``/entry/instrument/detector/data``; the netCDF plugin: ``array_data``, as xraylarch reads it in
``larch.io.xrf_netcdf.read_xrf_netcdf``). A module has 4 channels (detector elements). Each
module's buffer is, in words (XIA's xMAP mapping-mode buffer format):

* a 256-word buffer header: tags ``0x55AA``, ``0xAA55``; word 3 the mapping mode; word 8 the
  number of pixels in the buffer; words 20-23 the number of MCA bins of each channel;
* then one block per pixel: a 256-word pixel header (tags ``0x33CC``, ``0xCC33``), whose words
  32-63 hold, for each of the 4 channels, 4 32-bit counters (low word first): real time, live
  time (in 320 ns ticks), triggers and output events; then the 4 spectra, one 16-bit word per
  bin.

Per point this gives the spectra of all modules' channels, (4 x modules, bins), the real and
live times (s) and the input and output count rates (counts/s: triggers / live time, events /
real time), so that ICR / OCR = (triggers x real time) / (events x live time): xraylarch's
dead-time factor (``larch.xrmmap``).
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

__all__ = ["XMAP_TAGS", "XmapFile", "is_xmap"]

XMAP_TAGS = (0x55AA, 0xAA55)
"""The first two words of every buffer."""
HEADER = 256
"""Words of a buffer header and of a pixel header."""
TICK = 320e-9
"""Seconds per tick of the xMAP's real and live time counters."""
CHANNELS = 4
"""Detector channels per xMAP module."""


def is_xmap(ds: object) -> bool:
    """Whether ``ds`` is a dataset of xMAP buffers: 16-bit integers, (buffers, modules, words)
    (or fewer axes), whose first words are the buffer tags."""
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iu" or ds.dtype.itemsize != 2:
        return False
    if ds.size < HEADER:
        return False
    first = np.asarray(ds[(0,) * (ds.ndim - 1)][:2]).astype(np.uint16)
    return tuple(int(v) for v in first) == XMAP_TAGS


@dataclass
class XmapFile:
    """The points of an xMAP buffer dataset, decoded one buffer at a time.

    Attributes:
        layout: ``xmap``.
        elements: ``["module0/channel0", ...]``.
        points, channels: the number of pixels, and MCA bins per spectrum.
        stat_names: the dead-time data of each point.
    """

    layout: str
    elements: list[str]
    points: int
    channels: int
    stat_names: list[str]
    _ds: h5py.Dataset
    _starts: np.ndarray
    _cache: tuple[int, list[tuple[np.ndarray, np.ndarray]]] | None = None

    @classmethod
    def open(cls, ds: h5py.Dataset, where: str) -> XmapFile:
        """Check the buffers of ``ds`` (buffer tags, mapping mode 1, bins) and count pixels.

        Raises:
            ValueError: not xMAP buffers, another mapping mode than full spectra, or buffers
                too short for their pixels.
        """
        shape = (1,) * (3 - ds.ndim) + ds.shape
        buffers, modules, words = shape
        heads = (
            np.asarray(ds[()] if ds.ndim < 3 else ds[:, :, :HEADER])
            .reshape(buffers, modules, -1)[:, :, :HEADER]
            .astype(np.uint16)
        )
        if not (heads[:, :, 0] == XMAP_TAGS[0]).all() or not (heads[:, :, 1] == XMAP_TAGS[1]).all():
            raise ValueError(f"{where}: {ds.name}: not xMAP buffers (tags 0x55AA 0xAA55)")
        if not (heads[:, :, 3] == 1).all():
            modes = sorted(set(heads[:, :, 3].ravel().tolist()))
            raise ValueError(
                f"{where}: {ds.name}: xMAP mapping mode {modes}: only full spectra (mode 1) "
                "are read"
            )
        bins = int(heads[0, 0, 20])
        pixels = heads[:, 0, 8].astype(np.int64)
        if HEADER + int(pixels.max()) * (HEADER + CHANNELS * bins) > words:
            raise ValueError(
                f"{where}: {ds.name}: buffers of {words} words cannot hold {pixels.max()} pixels "
                f"of {CHANNELS} x {bins} bins"
            )
        elements = [f"module{m}/channel{c}" for m in range(modules) for c in range(CHANNELS)]
        names = ["icr", "live_time", "ocr", "real_time"]
        starts = np.concatenate([[0], np.cumsum(pixels)])
        return cls("xmap", elements, int(starts[-1]), bins, names, ds, starts)

    def spectra(self, i: int) -> np.ndarray:
        """The spectra of point ``i``: (elements, channels), uint16."""
        return self._pixel(i)[0]

    def point_stats(self, i: int) -> dict[str, np.ndarray]:
        """The dead-time data of point ``i``: ``real_time``, ``live_time`` (s), ``icr``,
        ``ocr`` (counts/s), each float64 (elements,)."""
        counters = self._pixel(i)[1]
        real, live = counters[:, 0] * TICK, counters[:, 1] * TICK
        return {
            "real_time": real,
            "live_time": live,
            "icr": np.divide(counters[:, 2], live, out=np.zeros_like(live), where=live > 0),
            "ocr": np.divide(counters[:, 3], real, out=np.zeros_like(real), where=real > 0),
        }

    def _pixel(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        b = int(np.searchsorted(self._starts, i, side="right")) - 1
        if self._cache is None or self._cache[0] != b:
            self._cache = (b, self._decode(b))
        return self._cache[1][i - int(self._starts[b])]

    def _decode(self, b: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every pixel of buffer ``b``: (spectra (elements, bins), counters (elements, 4))."""
        ds = self._ds
        raw = np.asarray(ds[b] if ds.ndim == 3 else ds[()]).astype(np.uint16)
        raw = raw.reshape(-1, raw.shape[-1])
        block = HEADER + CHANNELS * self.channels
        out = []
        for p in range(int(self._starts[b + 1] - self._starts[b])):
            spectra, counters = [], []
            for module in raw:
                start = HEADER + p * block
                pixel = module[start : start + block]
                counters.append(pixel[32:64].view(np.uint32).reshape(CHANNELS, 4))
                spectra.append(pixel[HEADER:].reshape(CHANNELS, self.channels))
            out.append((np.concatenate(spectra), np.concatenate(counters).astype(np.float64)))
        return out
