"""The frames of an HDF5/NeXus file, as ``hdf5_replay`` finds and checks them.

The frame dataset is named by the ``dataset`` param or found through the NeXus default plot
(https://manual.nexusformat.org/datarules.html#find-the-plottable-data): ``NXroot@default`` ->
``NXentry@default`` -> ``NXdata@signal``. A group whose members are ``data_000001``,
``data_000002``, ... (the DECTRIS EIGER master file: each member an HDF5 external link to the
``/entry/data/data`` dataset of a data file) is one stream's frames, the members in order.
Importing this module registers the HDF5 filters of ``hdf5plugin`` where it is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

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


def find_plan(node: str, f: h5py.File, where: str | None) -> Plan:
    """The parts and frame layout of ``f``: the frame dataset at ``where`` (a dataset, or an
    EIGER data group of ``data_NNNNNN`` members, or a group with a ``signal`` attribute), or
    found through the NeXus default plot when ``where`` is None; checked. ``node`` (the node's
    name) starts every error message.

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
        else:
            raise DatasetNotFound(
                f"{node}: {f.filename}: {target} is a group without a 'signal' "
                f"attribute or data_NNNNNN members (it holds: {_listing(item)}); "
                "set 'dataset' to the frame dataset"
            )
    else:
        links = [target]
    first = None
    parts = []
    for link in links:
        ds = frame_dataset(node, f, link)
        if first is None:
            first = ds
        elif (ds.shape[1:], ds.dtype) != (first.shape[1:], first.dtype):
            raise NotFrames(
                f"{node}: {f.filename}: {link} has frames of shape {ds.shape[1:]} "
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


def _default_plot(node: str, f: h5py.File) -> str:
    """Follow ``NXroot@default -> NXentry@default -> NXdata@signal``; where an attribute is
    missing, take the only group of the class needed (as the NeXus rules allow)."""
    entry = _follow(node, f, "NXentry")
    group = _follow(node, entry, "NXdata")
    return group.name


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


def frame_dataset(node: str, f: h5py.File, link: str) -> h5py.Dataset:
    """The frame dataset at ``link`` in ``f``, checked: numeric, at least 2-D (frames along the
    first axis), its HDF5 filters available.

    Raises:
        DatasetNotFound: nothing at ``link``, or a group.
        DataFileMissing: ``link`` is an external link to a file that does not exist.
        NotFrames: not numeric, or fewer than 2 dimensions.
        FilterMissing: it needs an HDF5 filter that is not installed.
    """
    ds = _get(node, f, link)
    if not isinstance(ds, h5py.Dataset):
        raise DatasetNotFound(
            f"{node}: {f.filename}: {link} is a group, not a dataset (it holds: "
            f"{_listing(ds)}); set 'dataset' to the frame dataset"
        )
    if ds.ndim < 2 or ds.dtype.kind not in "biufc":
        raise NotFrames(
            f"{node}: {f.filename}: dataset {link} has shape {ds.shape} and dtype "
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
            f"{node}: {f.filename}: dataset {link} is compressed with HDF5 filter "
            f"{names}, which is not available; {hint}"
        )
    return ds


def entry_title(f: h5py.File, dataset: str) -> str | None:
    """The ``title`` of the NXentry that holds ``dataset`` (a scalar string), or None."""
    entry = f.get("/" + dataset.strip("/").split("/")[0])
    title = entry.get("title") if isinstance(entry, h5py.Group) and entry.name != "/" else None
    if isinstance(title, h5py.Dataset) and title.shape == ():
        value = jsonable(title[()])
        return value if isinstance(value, str) else None
    return None


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


def detector_frame_time(f: h5py.File, dataset: str) -> str | None:
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
