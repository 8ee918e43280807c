"""Replay of MCA spectrum files, one spectrum (or one point's spectra) per message:
``use: mca_files``.

Reads what PyMca's own reader reads (``PyMca5.PyMcaIO.specfilewrapper``): SPEC files with MCA
lines (``@A``; a mapping scan with one spectrum per point), PyMca's ``.mca`` files (a single
column of counts, comments ``#``) and ``.spe`` files (``$DATA:``); and HDF5/NeXus files of
multi-element detectors (Xspress3, XIA, Falcon: :mod:`.detectors`), one point's spectra of all
elements per message, with their dead-time data.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import beampipe
from beampipe.message import Item
from beampipe.nodes.files.base import FileReplay, NoFilesMatched
from beampipe.nodes.xrf.detectors import DetectorFileError, Layout, open_detector_file

__all__ = ["DetectorFileError", "McaFiles", "McaFormatError", "NoFilesMatched", "stream_name"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5")


def stream_name(path: str | os.PathLike[str]) -> str:
    """The stream of a file: an HDF5 file's name without its suffix (as ``hdf5_replay`` names
    it, so that positions replayed from a file of the same name join its spectra), any other
    file's name (``Steel.spe``)."""
    path = Path(path)
    return path.stem if path.suffix.lower() in HDF5_SUFFIXES else path.name


class McaFormatError(ValueError):
    """PyMca cannot read a file, or it holds no MCA spectrum; the message names node and file."""


class McaFiles(FileReplay):
    """Replays MCA spectrum files: one stream per file (named after the file), one message per
    spectrum, scan after scan in file order, ids 1..n.

    * :class:`~beampipe.StreamStart`: metadata ``file``, ``reader``
      (``"PyMca5 specfilewrapper"``), ``n_spectra``, and from the first scan's ``#D`` line
      ``start_time`` (ISO 8601, local time as SPEC writes it: the NeXus writer's NXentry
      ``start_time``) or, when it is not SPEC's date format, ``date`` (the text as it is).
    * :class:`~beampipe.Message`: data ``spectrum`` (name set by ``key``; float64, 1-D, counts
      per channel, as PyMca reads them); metadata ``file``, ``scan`` (the scan number, 1-based),
      ``mca`` (the spectrum's number in its scan, 1-based), ``index`` (0-based number in the
      stream), and ``positions`` (``{column label: value}`` of the scan's data row of the same
      number, when a SPEC scan has as many data rows as spectra: its motor positions).
    * :class:`~beampipe.EndOfStream` with ``next_stream`` the next file's stream.

    HDF5/NeXus files (suffix ``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``, ``.nx5``; stream: the file
    name without its suffix) of a multi-element detector (``layout``, see
    :mod:`.detectors`) give one message per scan point: data ``spectrum`` (the file's dtype,
    (elements, channels): every element's spectrum of the point) and its dead-time data, each
    float64 (elements,): ``dt_factor`` (Xspress3), ``icr``, ``ocr`` (counts/s), ``live_time``,
    ``real_time`` (s), those the file has; metadata ``file``, ``index`` (0-based point),
    ``elements`` (names). The StreamStart has ``file``, ``reader`` (``"h5py, layout
    xspress3"``), ``n_spectra`` (points), ``layout``, ``elements``, ``channels``, ``stats`` (the
    dead-time data names).

    Params ``paths``, ``pace`` (``max`` or a rate in Hz; ``realtime`` is refused: the files
    hold no times) as for ``xdi_replay``; ``key``: the data name; ``layout`` and ``detectors``
    for HDF5 files.

    Raises:
        NoFilesMatched: (when created) a ``paths`` pattern matches no file.
        ValueError: (when created) ``pace: realtime``.
        McaFormatError: (from :meth:`generate`) PyMca cannot read a file or it has no spectrum.
        DetectorFileError: (from :meth:`generate`) an HDF5 file has no spectra of the layout.
        ImportError: PyMca5 is not installed.
    """

    class Params(FileReplay.Params):
        """``key``: the data name of the spectra. ``layout`` of HDF5 files: ``auto``,
        ``xspress3``, ``nxdetector`` or ``xmap`` (:mod:`.detectors`). ``detectors``:
        ``nxdetector``: an ``fnmatch`` pattern of the element groups' paths
        (``"1.1/instrument/falconx_det*"``); None: every NXdetector whose ``data`` is 2-D."""

        key: str = "spectrum"
        layout: Layout = "auto"
        detectors: str | None = None

    params: McaFiles.Params
    stream_name = staticmethod(stream_name)

    def __init__(self, params: McaFiles.Params, name: str = "") -> None:
        super().__init__(params, name)
        if self.params.pace == "realtime":
            raise ValueError(f"{self.name}: pace realtime: MCA files hold no times (give a rate)")

    def replay(self, path: Path, stream: str) -> Generator[Item, None, int]:
        if path.suffix.lower() in HDF5_SUFFIXES:
            return (yield from self._replay_hdf5(path, stream))
        spectra = read_mca(path, self.name)
        meta = {"file": str(path), "reader": "PyMca5 specfilewrapper", "n_spectra": len(spectra)}
        meta.update(scan_date(path))
        yield beampipe.StreamStart(stream=stream, metadata=meta)
        for k, (counts, metadata) in enumerate(spectra):
            self.wait(None)
            yield beampipe.Message(
                data={self.params.key: counts},
                metadata={"file": str(path), **metadata, "index": k},
                stream=stream,
                id=k + 1,
            )
        return len(spectra)

    def _replay_hdf5(self, path: Path, stream: str) -> Generator[Item, None, int]:
        p = self.params
        with open_detector_file(path, p.layout, p.detectors, self.name) as det:
            meta: dict[str, Any] = {
                "file": str(path),
                "reader": f"h5py, layout {det.layout}",
                "n_spectra": det.points,
                "layout": det.layout,
                "elements": det.elements,
                "channels": det.channels,
                "stats": det.stat_names,
            }
            yield beampipe.StreamStart(stream=stream, metadata=meta)
            for i in range(det.points):
                self.wait(None)
                yield beampipe.Message(
                    data={p.key: det.spectra(i), **det.point_stats(i)},
                    metadata={"file": str(path), "index": i, "elements": det.elements},
                    stream=stream,
                    id=i + 1,
                )
        return det.points


def read_mca(path: str | os.PathLike[str], node: str = "") -> list[tuple[np.ndarray, dict]]:
    """The spectra of ``path`` in file order, each with its metadata ``scan``, ``mca`` and
    (when the scan has one data row per spectrum) ``positions``; read with PyMca's reader.

    Raises:
        McaFormatError: PyMca cannot read the file, or it holds no spectrum.
    """
    from PyMca5.PyMcaIO import specfilewrapper

    where = f"{node + ': ' if node else ''}{str(path)!r}"
    try:
        scans = list(specfilewrapper.Specfile(str(path)))
    except Exception as exc:
        raise McaFormatError(
            f"{where}: PyMca cannot read it as an MCA file (.mca, .spe or SPEC with @A "
            f"lines): {type(exc).__name__}: {exc}"
        ) from None
    spectra = []
    for number, scan in enumerate(scans, start=1):
        n = scan.nbmca()
        labels = list(scan.alllabels()) if n else []
        table = np.asarray(scan.data()) if labels else np.zeros((0, 0))
        rows = table.shape[1] if table.ndim == 2 and table.shape[0] == len(labels) else 0
        for j in range(1, n + 1):
            metadata: dict = {"scan": number, "mca": j}
            if rows == n:
                metadata["positions"] = {
                    k: float(v) for k, v in zip(labels, table[:, j - 1], strict=True)
                }
            spectra.append((np.asarray(scan.mca(j), dtype=np.float64), metadata))
    if not spectra:
        raise McaFormatError(f"{where}: no MCA spectrum in it ({len(scans)} scan(s) read)")
    return spectra


def scan_date(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"start_time": ISO 8601}`` from the first scan's ``#D`` line of a SPEC file (SPEC
    writes C's ``ctime()`` format, ``Sat Dec  5 14:03:12 2026``); ``{"date": text}`` for a
    ``#D`` of another format; ``{}`` without one (``.mca``/``.spe`` files have none)."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.startswith(b"#D "):
                text = raw[3:].decode(errors="replace").strip()
                try:
                    when = datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
                except ValueError:
                    return {"date": text}
                return {"start_time": when.isoformat()}
            if raw.startswith(b"@A"):
                return {}
    return {}
