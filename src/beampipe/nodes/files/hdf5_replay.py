"""Replay of frames from HDF5/NeXus files: ``use: hdf5_replay``.

Each file becomes one stream (one acquisition series) and each frame, i.e. each index along the
first axis of the frame dataset, one :class:`~beampipe.Message`, read from the file one frame at a
time and sent as fast as the pipeline takes them, at the acquisition's own frame rate (optionally
sped up) or at a fixed rate. This reproduces, offline, the frame stream a detector produces live.

The frame dataset is named by ``dataset`` or found through the NeXus default plot
(https://manual.nexusformat.org/datarules.html#find-the-plottable-data): ``NXroot@default`` ->
``NXentry@default`` -> ``NXdata@signal``. A group whose members are ``data_000001``,
``data_000002``, ... (the DECTRIS EIGER master file: each member an HDF5 external link to the
``/entry/data/data`` dataset of a data file, https://www.dectris.com/) is replayed as one stream,
the members in order. Compressed datasets (bitshuffle-LZ4 as EIGER writes them, LZ4, Blosc, ...)
are read through the filters of ``hdf5plugin`` (``pip install 'beampipe[hdf5]'``), which are
registered with HDF5 when this module is imported.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import h5py
import numpy as np
from pydantic import Field, PositiveFloat, field_validator

import beampipe
from beampipe.message import Item
from beampipe.nodes.files.base import NoFilesMatched, match_files

try:  # registers bitshuffle, LZ4, Blosc, Zstd, ... with HDF5 as a side effect of the import
    import hdf5plugin
except ImportError:  # without it, datasets that need such a filter are reported clearly
    hdf5plugin = None

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

EIGER_PART = re.compile(r"^data_\d{6}$")
"""Member names of an EIGER master file's ``/entry/data`` group (external links to data files)."""

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

FiniteRate = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Hdf5ReplayError(Exception):
    """Base of the errors of :class:`Hdf5Replay`; the message names the node, the file and the
    dataset, and what to check."""


class DatasetNotFound(Hdf5ReplayError, LookupError):
    """The frame dataset is not in the file, or cannot be found through the NeXus default plot."""


class NotFrames(Hdf5ReplayError, ValueError):
    """The frame dataset is not a numeric dataset of at least 2 dimensions, or the parts of an
    EIGER master file differ in frame shape or dtype, or the frame times do not fit."""


class DataFileMissing(Hdf5ReplayError, FileNotFoundError):
    """A file to be replayed, or the data file behind an external link, does not exist (any
    more)."""


class FilterMissing(Hdf5ReplayError, OSError):
    """The dataset is compressed with an HDF5 filter that is not available."""


class FrameReadError(Hdf5ReplayError, OSError):
    """A frame could not be read (file truncated, changed or removed during the replay)."""


@dataclass(frozen=True)
class Part:
    """One dataset of a stream's frames.

    Attributes:
        link: its path in the replayed file (e.g. ``/entry/data/data_000002``).
        file: the file that holds the data: the replayed file, or the target of an external link.
        dataset: the dataset's path inside ``file``.
        frames: its length along the first axis.
    """

    link: str
    file: str
    dataset: str
    frames: int


@dataclass(frozen=True)
class Plan:
    """What one file replays: its parts, in order, and the frames' common shape and dtype."""

    dataset: str
    parts: tuple[Part, ...]
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    attributes: dict[str, Any]
    filters: list[dict[str, Any]]

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.parts)


def stream_name(path: str | os.PathLike[str]) -> str:
    """The stream name of a file: its name without the last suffix (``a/scan_0001_master.h5`` ->
    ``scan_0001_master``)."""
    return Path(path).stem


def jsonable(value: Any) -> Any:
    """An HDF5 attribute value as JSON-able Python: bytes decoded as UTF-8, numpy scalars and
    arrays as numbers and (nested) lists; None for what has no JSON form (references)."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufSUO":
            return None
        return [jsonable(v) for v in value.tolist()] if value.ndim else jsonable(value[()])
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return None


class Hdf5Replay(beampipe.Source):
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
      stack gives 2-D images, a 2-D dataset 1-D spectra), ``metadata = {"frame": id - 1,
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
    a deadline schedule on a monotonic clock, so time spent downstream is not added to them;
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

    class Params(beampipe.Params):
        """``paths``: glob patterns (``**`` recursive; ``~`` expanded), or one pattern as a
        string, relative ones taken relative to the pipeline file's folder. ``dataset``: the
        frame dataset's path in each file (or an EIGER data group), None to follow the NeXus
        default plot. ``key``: the data name of the frames in the messages. ``pace``:
        ``"max"``, ``"realtime"`` or frames per second (> 0). ``speedup`` (> 0) divides the
        realtime waits. ``frame_time``: the path of the frame-time dataset for ``realtime``
        (None: the ``frame_time`` of the entry's NXdetector)."""

        paths: list[beampipe.InputPath]
        dataset: str | None = None
        key: str = Field("image", min_length=1)
        pace: Literal["max", "realtime"] | FiniteRate = "max"
        speedup: PositiveFloat = 1.0
        frame_time: str | None = None

        @field_validator("paths", mode="before")
        @classmethod
        def _one_pattern(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

    params: Hdf5Replay.Params

    # Injection points for tests: the clock and sleep used for pacing.
    clock: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self, params: Hdf5Replay.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.files = self._match()

    def _match(self) -> list[Path]:
        return match_files(self.name, self.params.paths, stream_name)

    def generate(self) -> Iterator[Item]:
        """StreamStart, Messages and EndOfStream for each file in turn (see the class doc)."""
        for k, path in enumerate(self.files):
            following = stream_name(self.files[k + 1]) if k + 1 < len(self.files) else None
            yield from self._replay(path, following)

    # -- one file ------------------------------------------------------------------------------

    def _replay(self, path: Path, following: str | None) -> Iterator[Item]:
        if not path.is_file():
            raise DataFileMissing(
                f"{self.name}: {path}: the file is gone (it existed when the node started); "
                "check that nothing moves or deletes the files during the replay"
            )
        stream = stream_name(path)
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
                "title": self._title(f, plan.dataset) or stream,
                "frame_time": times,
            }
            msg_meta: dict[str, Any] = {"signal": self.params.key}
            if isinstance(units, str):
                msg_meta["units"] = {self.params.key: units}
            yield beampipe.StreamStart(stream=stream, metadata=meta)

            interval = self._interval(times, plan)
            deadline = 0.0
            msg_id = 0
            for part in plan.parts:
                ds = self._open_part(f, part, sent=msg_id)
                for i in range(part.frames):
                    frame = self._read(ds, part, i, msg_id)
                    if interval is not None:
                        if msg_id == 0:
                            deadline = self.clock()
                        else:
                            deadline += interval(msg_id)
                            delay = deadline - self.clock()
                            if delay > 0:
                                self.sleep(delay)
                    msg_id += 1
                    yield beampipe.Message(
                        data={self.params.key: frame},
                        metadata={"frame": msg_id - 1, **msg_meta},
                        stream=stream,
                        id=msg_id,
                    )
                del ds  # closes the data file of an external link
        yield beampipe.EndOfStream(stream=stream, last_id=msg_id, next_stream=following)

    def plan(self, f: h5py.File) -> Plan:
        """The parts and frame layout that ``f`` replays, checked (see the class doc).

        Raises:
            DatasetNotFound, DataFileMissing, NotFrames, FilterMissing: as :meth:`generate`.
        """
        where = self.params.dataset
        target = self._default_plot(f) if where is None else "/" + where.strip("/")
        node = self._get(f, target)
        members: list[str] = []
        if isinstance(node, h5py.Group):
            members = sorted(k for k in node if EIGER_PART.match(k))
            signal = node.attrs.get("signal")
            if members:
                links = [f"{target.rstrip('/')}/{k}" for k in members]
            elif signal is not None:
                links = [f"{target.rstrip('/')}/{jsonable(signal)}"]
            else:
                raise DatasetNotFound(
                    f"{self.name}: {f.filename}: {target} is a group without a 'signal' "
                    f"attribute or data_NNNNNN members (it holds: {_listing(node)}); "
                    "set 'dataset' to the frame dataset"
                )
        else:
            links = [target]
        first = None
        parts = []
        for link in links:
            ds = self._dataset(f, link)
            if first is None:
                first = ds
            elif (ds.shape[1:], ds.dtype) != (first.shape[1:], first.dtype):
                raise NotFrames(
                    f"{self.name}: {f.filename}: {link} has frames of shape {ds.shape[1:]} "
                    f"{ds.dtype}, but {links[0]} has {first.shape[1:]} {first.dtype}; the "
                    "parts of one stream must agree"
                )
            parts.append(Part(link, *_location(f, link), ds.shape[0]))
        assert first is not None
        attributes = {str(k): jsonable(v) for k, v in first.attrs.items()}
        return Plan(
            dataset=target if members else links[0],
            parts=tuple(parts),
            frame_shape=tuple(first.shape[1:]),
            dtype=first.dtype,
            attributes={k: v for k, v in attributes.items() if v is not None},
            filters=_filters(first),
        )

    def _default_plot(self, f: h5py.File) -> str:
        """Follow ``NXroot@default -> NXentry@default -> NXdata@signal``; where an attribute is
        missing, take the only group of the class needed (as the NeXus rules allow)."""
        entry = self._follow(f, "NXentry")
        group = self._follow(entry, "NXdata")
        return group.name

    def _follow(self, parent: h5py.Group, nxclass: str) -> h5py.Group:
        name = parent.attrs.get("default")
        if name is not None:
            name = jsonable(name)
            child = parent.get(name)
            if not isinstance(child, h5py.Group):
                raise DatasetNotFound(
                    f"{self.name}: {parent.file.filename}: {parent.name} has default={name!r}, "
                    f"which is not a group in it (it holds: {_listing(parent)}); "
                    "fix the file or set 'dataset'"
                )
            return child
        found = [
            k
            for k in parent
            if isinstance(parent.get(k, getlink=True), h5py.HardLink | h5py.SoftLink)
            and isinstance(child := parent.get(k), h5py.Group)
            and jsonable(child.attrs.get("NX_class")) == nxclass
        ]
        if len(found) != 1:
            what = f"{len(found)} {nxclass} groups ({', '.join(found)})" if found else "none"
            raise DatasetNotFound(
                f"{self.name}: {parent.file.filename}: {parent.name} has no 'default' attribute "
                f"and {what}, so the NeXus default plot cannot be followed; set 'dataset' to the "
                "frame dataset (e.g. entry/data/data)"
            )
        return parent[found[0]]

    def _get(self, f: h5py.File, path: str) -> h5py.Group | h5py.Dataset:
        """``f[path]``, with a clear error for a missing object or external data file."""
        link = f.get(path, getlink=True) if _parent_exists(f, path) else None
        if link is None:
            raise DatasetNotFound(
                f"{self.name}: {f.filename}: no dataset {path} in the file (its parent holds: "
                f"{_listing(_nearest(f, path))}); check 'dataset'"
            )
        if isinstance(link, h5py.ExternalLink):
            target = _external_file(f, link)
            if not target.exists():
                raise DataFileMissing(
                    f"{self.name}: {f.filename}: {path} is an external link to "
                    f"{link.filename}:{link.path}, but {target} does not exist; check that the "
                    "data files are next to the master file"
                )
        try:
            return f[path]
        except (KeyError, OSError) as exc:
            extra = (
                f" (external link to {link.filename}:{link.path})"
                if isinstance(link, h5py.ExternalLink)
                else ""
            )
            raise DatasetNotFound(
                f"{self.name}: {f.filename}: cannot open {path}{extra}: {exc}; check 'dataset' "
                "and the data files"
            ) from None

    def _dataset(self, f: h5py.File, link: str) -> h5py.Dataset:
        ds = self._get(f, link)
        if not isinstance(ds, h5py.Dataset):
            raise DatasetNotFound(
                f"{self.name}: {f.filename}: {link} is a group, not a dataset (it holds: "
                f"{_listing(ds)}); set 'dataset' to the frame dataset"
            )
        if ds.ndim < 2 or ds.dtype.kind not in "biufc":
            raise NotFrames(
                f"{self.name}: {f.filename}: dataset {link} has shape {ds.shape} and dtype "
                f"{ds.dtype}; frames need a numeric dataset of at least 2 dimensions (frames "
                "along the first axis); check 'dataset'"
            )
        missing = [flt for flt in _filters(ds) if not h5py.h5z.filter_avail(flt["id"])]
        if missing:
            names = ", ".join(f"{m['id']} ({m['name']})" for m in missing)
            hint = (
                "install hdf5plugin: pip install 'beampipe[hdf5]'"
                if hdf5plugin is None
                else "hdf5plugin does not provide it: install the filter plugin"
            )
            raise FilterMissing(
                f"{self.name}: {f.filename}: dataset {link} is compressed with HDF5 filter "
                f"{names}, which is not available; {hint}"
            )
        return ds

    def _open_part(self, f: h5py.File, part: Part, sent: int) -> h5py.Dataset:
        try:
            return self._dataset(f, part.link)
        except DataFileMissing as exc:
            raise DataFileMissing(f"{exc} ({sent} frames of the stream were sent)") from None

    def _read(self, ds: h5py.Dataset, part: Part, i: int, sent: int) -> np.ndarray:
        try:
            return ds[i]
        except (OSError, ValueError, RuntimeError) as exc:
            raise FrameReadError(
                f"{self.name}: {part.file}: dataset {part.dataset}: cannot read frame {i} "
                f"({exc}); {sent} frames of the stream were sent; check that the file is "
                "complete and was not changed or removed during the replay"
            ) from None

    @staticmethod
    def _title(f: h5py.File, dataset: str) -> str | None:
        entry = f.get("/" + dataset.strip("/").split("/")[0])
        title = entry.get("title") if isinstance(entry, h5py.Group) and entry.name != "/" else None
        if isinstance(title, h5py.Dataset) and title.shape == ():
            value = jsonable(title[()])
            return value if isinstance(value, str) else None
        return None

    # -- pacing --------------------------------------------------------------------------------

    def _frame_times(self, f: h5py.File, plan: Plan) -> float | list[float] | None:
        """Seconds per frame from the file: ``frame_time``, or the entry's NXdetector
        ``frame_time``; None if there is none (an error for ``pace: realtime``)."""
        path = self.params.frame_time
        if path is None:
            path = _detector_frame_time(f, plan.dataset)
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

    def _interval(
        self, times: float | list[float] | None, plan: Plan
    ) -> Callable[[int], float] | None:
        """Seconds from frame k - 1 to frame k (k >= 1) as a function of k, or None (no wait)."""
        pace, speedup = self.params.pace, self.params.speedup
        if pace == "max":
            return None
        if pace != "realtime":
            period = 1.0 / float(pace)
            return lambda k: period
        assert times is not None

        def wait(k: int) -> float:
            t = (times if isinstance(times, float) else times[k]) / speedup
            return t if math.isfinite(t) and t > 0 else 0.0

        return wait


def _listing(group: h5py.Group | None) -> str:
    """The member names of ``group`` (at most 10) for error messages."""
    if group is None:
        return "nothing"
    names = list(group)
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return shown or "nothing"


def _parent_exists(f: h5py.File, path: str) -> bool:
    parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
    try:
        return isinstance(f.get(parent), h5py.Group)
    except (KeyError, OSError):
        return False


def _nearest(f: h5py.File, path: str) -> h5py.Group:
    """The deepest existing group on ``path``."""
    group: h5py.Group = f
    for name in path.strip("/").split("/")[:-1]:
        try:
            child = group.get(name)
        except (KeyError, OSError):
            break
        if not isinstance(child, h5py.Group):
            break
        group = child
    return group


def _external_file(f: h5py.File, link: h5py.ExternalLink) -> Path:
    """The file an external link points to: absolute, or relative to the linking file's folder
    (where HDF5 looks first), else to the working directory."""
    target = Path(link.filename)
    if target.is_absolute():
        return target
    beside = Path(f.filename).resolve().parent / target
    return beside if beside.exists() or not target.exists() else target.resolve()


def _location(f: h5py.File, link: str) -> tuple[str, str]:
    """(file, path in it) of the object at ``link``: an external link's target, else ``f``."""
    obj = f.get(link, getlink=True)
    if isinstance(obj, h5py.ExternalLink):
        return str(_external_file(f, obj)), obj.path
    return str(Path(f.filename).resolve()), link


def _filters(ds: h5py.Dataset) -> list[dict[str, Any]]:
    """``[{"id": filter id, "name": its name}]`` of a dataset's filter pipeline."""
    plist = ds.id.get_create_plist()
    out = []
    for k in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(k)
        text = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)
        out.append({"id": int(code), "name": text.split(";")[0].strip()})
    return out


def _detector_frame_time(f: h5py.File, dataset: str) -> str | None:
    """The path of ``frame_time`` in the first NXdetector of the dataset's entry, or None."""
    entry = f.get("/" + dataset.strip("/").split("/")[0])
    if not isinstance(entry, h5py.Group) or entry.name == "/":
        return None
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if (
            not found
            and isinstance(obj, h5py.Group)
            and jsonable(obj.attrs.get("NX_class")) == "NXdetector"
            and isinstance(obj.get("frame_time"), h5py.Dataset)
        ):
            found.append(obj["frame_time"].name)

    entry.visititems(visit)
    return found[0] if found else None
