"""Replay of frames from HDF5/NeXus files: ``use: hdf5_replay``.

Each file becomes one stream (one acquisition series) and each frame, i.e. each index along the
first axis of the frame dataset (a 2-D dataset: the whole image), one
:class:`~beampipe.Message`, read from the file one frame at a time and sent as fast as the
pipeline takes them, at the acquisition's own frame rate (optionally sped up) or at a fixed rate.
This reproduces, offline, the frame stream a detector produces live.

The frame dataset is named by ``dataset`` or found through the NeXus default plot
(https://manual.nexusformat.org/datarules.html#find-the-plottable-data): ``NXroot@default`` ->
``NXentry@default`` -> ``NXdata@signal``, or, in files without these attributes (Lambda and
older NeXus writers), the one dataset with the attribute ``signal=1``. A group whose members
are ``data_000001``, ``data_000002``, ... (the DECTRIS EIGER master file: each member an HDF5
external link to the ``/entry/data/data`` dataset of a data file, https://www.dectris.com/) is
replayed as one stream, the members in order. Compressed datasets (bitshuffle-LZ4 as EIGER writes
them, LZ4, Blosc, ...) are read through the filters of ``hdf5plugin`` (``pip install
'beampipe[hdf5]'``), which are registered with HDF5 when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from pydantic import Field

import beampipe
from beampipe.message import Item
from beampipe.nodes.files.base import FileReplay, NoFilesMatched
from beampipe.nodes.files.hdf5_layout import (
    DataFileMissing,
    DatasetNotFound,
    FilterMissing,
    FrameReadError,
    Hdf5ReplayError,
    NotFrames,
    Part,
    Plan,
    detector_frame_time,
    entry_title,
    find_plan,
    frame_dataset,
    jsonable,
)
from beampipe.nodes.pacing import Rate

__all__ = [
    "DataFileMissing",
    "DatasetNotFound",
    "FilterMissing",
    "FrameReadError",
    "Hdf5Replay",
    "Hdf5ReplayError",
    "NoFilesMatched",
    "NotFrames",
]

_SECONDS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ns": 1e-9,
}


def stream_name(path: str | os.PathLike[str]) -> str:
    """The stream name of a file: its name without the last suffix (``a/scan_0001_master.h5`` ->
    ``scan_0001_master``)."""
    return Path(path).stem


class Hdf5Replay(FileReplay):
    """Replays the frames of HDF5/NeXus files: one stream per file, one message per frame.

    Streams, in the order of ``paths`` (the matches of each pattern sorted by path, a file matched
    twice replayed once):

    * :class:`~beampipe.StreamStart` named after the file without its suffix
      (:func:`stream_name`, ``scan_0001_master.h5`` -> ``scan_0001_master``), metadata:
      ``file`` (absolute path), ``dataset`` (the frame dataset's path in the file, or the EIGER
      data group), ``parts`` (``[{"file", "dataset", "frames"}]``: where the frames are stored,
      external link targets resolved), ``shape`` ([frames, *frame shape]), ``dtype`` (numpy
      name, e.g. ``"uint32"``), ``frames``, ``signal`` (= ``key``), ``units`` (the dataset's
      ``units`` attribute, or None), ``attributes`` (all attributes of the first part's dataset,
      JSON-able), ``filters`` (``[{"id", "name"}]``: its HDF5 filters, e.g. 32008 bitshuffle),
      ``title`` (the entry's ``title``, else the stream name) and ``frame_time`` (seconds per
      frame: a number, a list with one value per frame, or None when the file has none).
    * One :class:`~beampipe.Message` per frame, ids 1..n over all parts: ``data = {key: frame}``
      (the dataset's dtype; shape = the dataset's shape without the first axis: a 3-D image
      stack gives 2-D images; a 2-D dataset is one frame, whole, unless it is a table: its
      NeXus ``interpretation`` attribute is ``spectrum``, or ``rows: true``, when each row is a
      1-D frame; with ``rows: true`` a 1-D dataset, a counter of the scan, gives one 0-d value
      per message), ``metadata = {"frame": id - 1,
      "signal": key}`` plus ``"units": {key: units}`` when the dataset has a ``units``
      attribute.
    * :class:`~beampipe.EndOfStream` with ``last_id = n`` and ``next_stream`` = the next file's
      stream (None after the last file).

    Frames are read one at a time, when they are due (a file is never loaded whole); a file is
    opened when its stream begins and the data file of an external link when its first frame is
    due, so a file that disappears or is damaged during the replay stops it there: every frame
    sent before has gone downstream.

    Pacing (``pace``): ``"max"`` sends as fast as downstream takes frames; ``"realtime"`` waits a
    frame time divided by ``speedup`` before each frame after the first of a stream (the frame
    time is the dataset ``frame_time`` names, by default the ``frame_time`` of the entry's
    NXdetector, as EIGER writes it: one value, or one per frame; ``units`` s, ms, us or ns, s if
    absent); a number sends that many frames per second (``speedup`` is ignored). Waits follow
    a deadline schedule on a monotonic clock (``self.pacer``, a
    :class:`~beampipe.nodes.pacing.Pacer`), so time spent downstream is not added to them;
    after a backpressure stall the replay catches up.

    Raises (from the constructor):
        NoFilesMatched: a pattern matches no file (a ``FileNotFoundError`` and ``ValueError``).
        ValueError: two files would give the same stream name.

    Raises (from :meth:`generate`, when the stream of the file concerned begins or, for
    external links and frame reads, when the frame is due):
        DataFileMissing: the file, or the data file of an external link, does not exist.
        DatasetNotFound: ``dataset`` is not in the file; the default plot cannot be followed.
        NotFrames: the dataset is not numeric, has fewer than 2 dimensions, or its parts differ
            in frame shape or dtype; the frame time is missing (``pace: realtime``) or does not
            fit the frames.
        FilterMissing: the dataset needs an HDF5 filter that is not installed (hdf5plugin).
        FrameReadError: a frame cannot be read.
        OSError: the file is not an HDF5 file.
    """

    class Params(FileReplay.Params):
        """``paths``: glob patterns (``**`` recursive; ``~`` expanded), or one pattern as a
        string, relative ones taken relative to the pipeline file's folder. ``dataset``: the
        frame dataset's path in each file (or an EIGER data group), None to follow the NeXus
        default plot. ``key``: the data name of the frames in the messages. ``pace``:
        ``"max"``, ``"realtime"`` or frames per second (at least 0.001). ``speedup`` divides the
        realtime waits. ``frame_time``: the path of the frame-time dataset for ``realtime``
        (None: the ``frame_time`` of the entry's NXdetector). ``rows``: read a 2-D dataset as
        a table, one message per row (default: one frame; see the class doc), and a 1-D
        dataset value by value."""

        pace: Literal["max", "realtime"] | Rate = "max"
        dataset: str | None = None
        key: str = Field("image", min_length=1)
        frame_time: str | None = None
        rows: bool = False

    params: Hdf5Replay.Params

    stream_name = staticmethod(stream_name)

    # -- one file ------------------------------------------------------------------------------

    def replay(self, path: Path, stream: str) -> Generator[Item, None, int]:
        """The StreamStart and the frames of one file (see the class doc); returns n."""
        if not path.is_file():
            raise DataFileMissing(
                f"{self.name}: {path}: the file is gone (it existed when the node started); "
                "check that nothing moves or deletes the files during the replay"
            )
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise OSError(
                f"{self.name}: {path}: cannot open it as an HDF5 file ({exc}); check that it is "
                "a complete HDF5 file"
            ) from None
        with f:
            plan = self.plan(f)
            times = self._frame_times(f, plan)
            units = plan.attributes.get("units")
            meta = {
                "file": str(path),
                "dataset": plan.dataset,
                "parts": [
                    {"file": p.file, "dataset": p.dataset, "frames": p.frames} for p in plan.parts
                ],
                "shape": [plan.frames, *plan.frame_shape],
                "dtype": plan.dtype.name,
                "frames": plan.frames,
                "signal": self.params.key,
                "units": units if isinstance(units, str) else None,
                "attributes": plan.attributes,
                "filters": plan.filters,
                "title": entry_title(f, plan.dataset) or stream,
                "frame_time": times,
            }
            msg_meta: dict[str, Any] = {"signal": self.params.key}
            if isinstance(units, str):
                msg_meta["units"] = {self.params.key: units}
            yield beampipe.StreamStart(stream=stream, metadata=meta)

            msg_id = 0
            for part in plan.parts:
                ds = self._open_part(f, part, sent=msg_id)
                for i in range(part.frames):
                    frame = self._read(ds, part, i, msg_id)
                    self.wait(times if times is None or isinstance(times, float) else times[msg_id])
                    msg_id += 1
                    yield beampipe.Message(
                        data={self.params.key: frame},
                        metadata={"frame": msg_id - 1, **msg_meta},
                        stream=stream,
                        id=msg_id,
                    )
                del ds  # closes the data file of an external link
        return msg_id

    def plan(self, f: h5py.File) -> Plan:
        """The parts and frame layout that ``f`` replays, checked (see the class doc and
        :func:`~beampipe.nodes.files.hdf5_layout.find_plan`).

        Raises:
            DatasetNotFound, DataFileMissing, NotFrames, FilterMissing: as :meth:`generate`.
        """
        return find_plan(self.name, f, self.params.dataset, self.params.rows)

    def _open_part(self, f: h5py.File, part: Part, sent: int) -> h5py.Dataset:
        try:
            return frame_dataset(self.name, f, part.link, self.params.rows)
        except DataFileMissing as exc:
            raise DataFileMissing(f"{exc} ({sent} frames of the stream were sent)") from None

    def _read(self, ds: h5py.Dataset, part: Part, i: int, sent: int) -> np.ndarray:
        try:
            return part.read(ds, i)
        except (OSError, ValueError, RuntimeError) as exc:
            raise FrameReadError(
                f"{self.name}: {part.file}: dataset {part.dataset}: cannot read frame {i} "
                f"({exc}); {sent} frames of the stream were sent; check that the file is "
                "complete and was not changed or removed during the replay"
            ) from None

    # -- pacing --------------------------------------------------------------------------------

    def _frame_times(self, f: h5py.File, plan: Plan) -> float | list[float] | None:
        """Seconds per frame from the file: ``frame_time``, or the entry's NXdetector
        ``frame_time``; None if there is none (an error for ``pace: realtime``)."""
        path = self.params.frame_time
        if path is None:
            path = detector_frame_time(f, plan.dataset)
            if path is None:
                if self.params.pace == "realtime":
                    raise NotFrames(
                        f"{self.name}: {f.filename}: pace 'realtime' needs the frame time, but "
                        "the entry has no NXdetector with a frame_time; set 'frame_time' to the "
                        "dataset holding it, or give 'pace' as frames per second"
                    )
                return None
        ds = f.get(path)
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iuf":
            raise NotFrames(
                f"{self.name}: {f.filename}: frame_time {path!r} is not a numeric dataset in the "
                "file; check 'frame_time'"
            )
        unit = jsonable(ds.attrs.get("units", "s"))
        scale = _SECONDS.get(str(unit).strip())
        if scale is None:
            raise NotFrames(
                f"{self.name}: {f.filename}: frame_time {ds.name} has units {unit!r}; "
                f"expected one of {', '.join(u for u in _SECONDS if u)}"
            )
        values = np.asarray(ds[()], dtype=np.float64) * scale
        if values.ndim == 0 or values.size == 1:
            return float(values.reshape(()))
        if values.shape != (plan.frames,):
            raise NotFrames(
                f"{self.name}: {f.filename}: frame_time {ds.name} has shape {values.shape}, but "
                f"there are {plan.frames} frames; it must be one value or one per frame"
            )
        return values.tolist()
