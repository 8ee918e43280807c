"""The frames of an HDF5/NeXus file, as ``hdf5_replay`` finds and checks them.

The frame dataset is named by the ``dataset`` param or found through the NeXus default plot
(https://manual.nexusformat.org/datarules.html#find-the-plottable-data): ``NXroot@default`` ->
``NXentry@default`` -> ``NXdata@signal``. A group whose members are ``data_000001``,
``data_000002``, ... (the DECTRIS EIGER master file: each member an HDF5 external link to the
``/entry/data/data`` dataset of a data file) is one stream's frames, the members in order.
Where the default plot has no ``default``/``signal`` attributes to follow, the frame dataset is
the one carrying the older NeXus attribute ``signal=1`` (as Lambda and other detectors write it).

Frames: a dataset of 3 or more dimensions holds frames along its first axis; a 2-D dataset is
one frame (an image), unless it is a table: its NeXus ``interpretation`` attribute is
``spectrum`` (or the caller asks for rows), when each row is a frame; asked for rows, a 1-D
dataset (a counter) gives its values as 0-d frames.
Importing this module registers the HDF5 filters of ``hdf5plugin`` where it is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from beampipe.nodes.files.hdf5_meta import detector_frame_time, entry_title, filters, jsonable

try:  # registers bitshuffle, LZ4, Blosc, Zstd, ... with HDF5 as a side effect of the import
    import hdf5plugin
except ImportError:  # without it, datasets that need such a filter are reported clearly
    hdf5plugin = None

__all__ = [
    "DataFileMissing",
    "DatasetNotFound",
    "FilterMissing",
    "FrameReadError",
    "Hdf5ReplayError",
    "NotFrames",
    "Part",
    "Plan",
    "detector_frame_time",
    "entry_title",
    "find_plan",
    "frame_dataset",
    "is_image",
    "jsonable",
]

EIGER_PART = re.compile(r"^data_\d{6}$")
"""Member names of an EIGER master file's ``/entry/data`` group (external links to data files)."""


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
        frames: its length along the first axis; 1 for an image.
        image: the dataset is one 2-D frame, read whole (``ds[()]``), not along its first axis.
    """

    link: str
    file: str
    dataset: str
    frames: int
    image: bool = False

    def read(self, ds: h5py.Dataset, i: int) -> np.ndarray:
        """Frame ``i`` of this part from its dataset ``ds``."""
        return ds[()] if self.image else np.asarray(ds[i])


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


def find_plan(node: str, f: h5py.File, where: str | None, rows: bool = False) -> Plan:
    """The parts and frame layout of ``f``: the frame dataset at ``where`` (a dataset, or an
    EIGER data group of ``data_NNNNNN`` members, or a group with a ``signal`` attribute or a
    member with ``signal=1``), or found through the NeXus default plot when ``where`` is None;
    checked. A 2-D dataset is one frame unless ``rows`` or its ``interpretation`` attribute is
    ``spectrum`` (see the module doc). ``node`` (the node's name) starts every error message.

    Raises:
        DatasetNotFound: nothing at ``where``; the default plot cannot be followed.
        DataFileMissing: the data file of an external link does not exist.
        NotFrames: a dataset is not numeric or has fewer than 2 dimensions; the parts differ in
            frame shape or dtype.
        FilterMissing: a dataset needs an HDF5 filter that is not installed.
    """
    target = _default_plot(node, f) if where is None else "/" + where.strip("/")
    item = _get(node, f, target)
    members: list[str] = []
    if isinstance(item, h5py.Group):
        members = sorted(k for k in item if EIGER_PART.match(k))
        signal = item.attrs.get("signal")
        if members:
            links = [f"{target.rstrip('/')}/{k}" for k in members]
        elif signal is not None:
            links = [f"{target.rstrip('/')}/{jsonable(signal)}"]
        elif flagged := _signal_one(item):
            links = flagged[:1]
        else:
            raise DatasetNotFound(
                f"{node}: {f.filename}: {target} is a group without a 'signal' "
                f"attribute, a signal=1 dataset or data_NNNNNN members (it holds: "
                f"{_listing(item)}); set 'dataset' to the frame dataset"
            )
    else:
        links = [target]
    first = None
    parts: list[Part] = []
    for link in links:
        ds = frame_dataset(node, f, link, rows)
        image = is_image(ds, rows)
        shape = ds.shape if image else ds.shape[1:]
        if first is None:
            first = ds
        elif (shape, ds.dtype) != (plan_shape := _frame_shape(first, parts[0]), first.dtype):
            raise NotFrames(
                f"{node}: {f.filename}: {link} has frames of shape {shape} "
                f"{ds.dtype}, but {links[0]} has {plan_shape} {first.dtype}; the "
                "parts of one stream must agree"
            )
        parts.append(Part(link, *_location(f, link), 1 if image else ds.shape[0], image))
    assert first is not None
    attributes = {str(k): jsonable(v) for k, v in first.attrs.items()}
    return Plan(
        dataset=target if members else links[0],
        parts=tuple(parts),
        frame_shape=_frame_shape(first, parts[0]),
        dtype=first.dtype,
        attributes={k: v for k, v in attributes.items() if v is not None},
        filters=filters(first),
    )


def _frame_shape(ds: h5py.Dataset, part: Part) -> tuple[int, ...]:
    return tuple(ds.shape if part.image else ds.shape[1:])


def is_image(ds: h5py.Dataset, rows: bool = False) -> bool:
    """``ds`` is one 2-D frame: 2-D, not asked to be read as rows, and not a table by its
    NeXus ``interpretation`` attribute (``spectrum``)."""
    return ds.ndim == 2 and not rows and jsonable(ds.attrs.get("interpretation")) != "spectrum"


def _default_plot(node: str, f: h5py.File) -> str:
    """Follow ``NXroot@default -> NXentry@default -> NXdata@signal``; where an attribute is
    missing, take the only group of the class needed (as the NeXus rules allow); where that
    fails, the only dataset with the older ``signal=1`` attribute."""
    try:
        entry = _follow(node, f, "NXentry")
        group = _follow(node, entry, "NXdata")
    except DatasetNotFound as exc:
        flagged = _signal_one(f)
        if len(flagged) == 1:
            return flagged[0]
        if flagged:
            raise DatasetNotFound(
                f"{exc}; {len(flagged)} datasets carry signal=1 ({', '.join(flagged[:5])})"
            ) from None
        raise
    return group.name


def _signal_one(group: h5py.Group) -> list[str]:
    """The datasets under ``group`` (hard links followed, external links not) with the older
    NeXus attribute ``signal=1``, each stored dataset once, sorted by path."""
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and str(jsonable(obj.attrs.get("signal"))) == "1":
            found.append(obj.name)

    group.visititems(visit)  # each object once, whatever links lead to it
    return sorted(found)


def _follow(node: str, parent: h5py.Group, nxclass: str) -> h5py.Group:
    name = parent.attrs.get("default")
    if name is not None:
        name = jsonable(name)
        child = parent.get(name)
        if not isinstance(child, h5py.Group):
            raise DatasetNotFound(
                f"{node}: {parent.file.filename}: {parent.name} has default={name!r}, "
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
            f"{node}: {parent.file.filename}: {parent.name} has no 'default' attribute "
            f"and {what}, so the NeXus default plot cannot be followed; set 'dataset' to the "
            "frame dataset (e.g. entry/data/data)"
        )
    return parent[found[0]]


def _get(node: str, f: h5py.File, path: str) -> h5py.Group | h5py.Dataset:
    """``f[path]``, with a clear error for a missing object or external data file."""
    link = f.get(path, getlink=True) if _parent_exists(f, path) else None
    if link is None:
        raise DatasetNotFound(
            f"{node}: {f.filename}: no dataset {path} in the file (its parent holds: "
            f"{_listing(_nearest(f, path))}); check 'dataset'"
        )
    if isinstance(link, h5py.ExternalLink):
        target = _external_file(f, link)
        if not target.exists():
            raise DataFileMissing(
                f"{node}: {f.filename}: {path} is an external link to "
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
            f"{node}: {f.filename}: cannot open {path}{extra}: {exc}; check 'dataset' "
            "and the data files"
        ) from None


def frame_dataset(node: str, f: h5py.File, link: str, rows: bool = False) -> h5py.Dataset:
    """The frame dataset at ``link`` in ``f``, checked: numeric, at least 2-D (frames along the
    first axis; 1-D when read by ``rows``: one value per frame), its HDF5 filters available.

    Raises:
        DatasetNotFound: nothing at ``link``, or a group.
        DataFileMissing: ``link`` is an external link to a file that does not exist.
        NotFrames: not numeric, or fewer than 2 dimensions (1 with ``rows``).
        FilterMissing: it needs an HDF5 filter that is not installed.
    """
    ds = _get(node, f, link)
    if not isinstance(ds, h5py.Dataset):
        raise DatasetNotFound(
            f"{node}: {f.filename}: {link} is a group, not a dataset (it holds: "
            f"{_listing(ds)}); set 'dataset' to the frame dataset"
        )
    if ds.ndim < (1 if rows else 2) or ds.dtype.kind not in "biufc":
        raise NotFrames(
            f"{node}: {f.filename}: dataset {link} has shape {ds.shape} and dtype "
            f"{ds.dtype}; frames need a numeric dataset of at least 2 dimensions (frames "
            "along the first axis), or 1 with rows: true (a counter); check 'dataset'"
        )
    missing = [flt for flt in filters(ds) if not h5py.h5z.filter_avail(flt["id"])]
    if missing:
        names = ", ".join(f"{m['id']} ({m['name']})" for m in missing)
        hint = (
            "install hdf5plugin: pip install 'beampipe[hdf5]'"
            if hdf5plugin is None
            else "hdf5plugin does not provide it: install the filter plugin"
        )
        raise FilterMissing(
            f"{node}: {f.filename}: dataset {link} is compressed with HDF5 filter "
            f"{names}, which is not available; {hint}"
        )
    return ds


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
