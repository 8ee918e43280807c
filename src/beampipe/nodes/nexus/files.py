"""The two kinds of HDF5 file ``nexus_writer`` writes.

* The **master** file (``path``): NXroot with one NXentry per stream, holding metadata and external
  links to the data. It is never kept open: every change is made to a private copy, which then
  atomically replaces the file (:func:`edit_master`), so a reader always sees a complete file.
* One **group file** per (stream, input port) (:class:`GroupFile`): the port's NXdata group, written
  in HDF5 SWMR mode (https://docs.h5py.org/en/stable/swmr.html) once its datasets exist, so other
  processes can read it while it grows.

See docs/nexus.md for the layout and the reader procedure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

import beampipe
from beampipe.nodes.nexus.meta import new_group, nexus_name, unique_name

LIBVER = ("v110", "v110")
"""HDF5 file-format bounds: 1.10 is the oldest format with SWMR; readers need HDF5 >= 1.10."""

CONVENTION_KEYS = frozenset({"signal", "axes", "units"})
"""Message metadata keys that describe the data rather than being data."""

_CHUNK_BYTES = 1 << 20
_MAX_CHUNK_ROWS = 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def edit_master(path: Path, create: bool = False) -> Iterator[h5py.File]:
    """Open a copy of the master file for changes, then atomically replace the master with it.

    Args:
        path: the master file.
        create: start from an empty file (``NXroot`` attributes set) instead of a copy.

    Yields:
        The copy (``.<name>.tmp`` next to ``path``), open for writing. If the body raises, the copy
        is deleted and the master is left as it was.

    Raises:
        OSError: the file or its directory cannot be written.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    if not create:
        shutil.copyfile(path, tmp)
    try:
        with h5py.File(tmp, "w" if create else "r+", libver=LIBVER, track_order=create) as f:
            if create:
                _root_attributes(f, path.name)
            f.attrs["file_update_time"] = _now()
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _root_attributes(f: h5py.File, name: str) -> None:
    f.attrs.update(
        {
            "NX_class": "NXroot",
            "file_name": name,
            "file_time": _now(),
            "creator": "beampipe nexus_writer",
            "creator_version": beampipe.__version__,
            "HDF5_Version": h5py.version.hdf5_version,
            "h5py_version": h5py.version.version,
        }
    )


def numeric_arrays(msg: beampipe.Message) -> dict[str, np.ndarray]:
    """``msg.data`` as numpy arrays.

    Raises:
        TypeError: a value is ``bytes`` or an array of non-numeric dtype (bool, int, uint,
            float and complex are accepted).
    """
    arrays = {}
    for name, value in msg.data.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            kind = type(value).__name__ if not isinstance(value, np.ndarray) else value.dtype
            raise TypeError(
                f"stream {msg.stream!r} id {msg.id} port {msg.port!r}: {name!r} is {kind}; "
                "nexus_writer stores numeric arrays only"
            )
        arrays[name] = value
    return arrays


def numeric_scalars(metadata: Mapping[str, Any]) -> dict[str, int | float]:
    """The int and float items of ``metadata`` (not bools, not the convention keys)."""
    return {
        k: v
        for k, v in metadata.items()
        if k not in CONVENTION_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
    }


def plot_axes(rank: int, axes: list[str] | None, mode: str, known: set[str]) -> list[str]:
    """The ``axes`` attribute for a signal of rank ``rank`` (as stored).

    In append mode a list one shorter than the rank gets ``id`` (the axis messages are stacked
    along) in front. A list of another length than the rank, or none, is replaced by ``id``
    then ``.`` (append mode) or all ``.`` (replace mode); names not in ``known`` become ``.``.
    So the attribute always passes nxcheck.
    """
    if axes is not None and mode == "append" and len(axes) == rank - 1:
        axes = ["id", *axes]
    if axes is None or len(axes) != rank:
        axes = ["id", *["."] * (rank - 1)] if mode == "append" else ["."] * rank
    return [a if a in known else "." for a in axes]


class GroupFile:
    """One input port of one stream: ``/entry/<name>`` (NXdata) in its own HDF5 file.

    The file is created from the first message of the port: one dataset per data name, ``id``,
    and in replace mode one 0-d field per numeric scalar of the metadata; then ``signal``,
    ``axes``, ``<axis>_indices`` and ``units`` attributes are set and SWMR mode is switched on.
    From then on the structure is fixed. Dataset names are the data names made valid NeXus names
    (:func:`~beampipe.nodes.nexus.meta.nexus_name`; ``id`` is reserved): see
    :attr:`columns`.

    Modes:
        append: an array of shape S is appended along a new first axis: dataset shape (n, *S),
            chunked, unlimited first dimension; ``id`` (int64, shape (n,)) holds the message ids.
        replace: every message overwrites the datasets (resized to the new shapes, same rank);
            ``id`` (int64, 0-d) is the id of the message shown; numeric scalar metadata fields
            are updated when a message carries them.

    Attributes:
        columns: ``{data or metadata key: dataset name}``.
        signal: the dataset named by the ``signal`` attribute.
        count: messages written.

    Raises (constructor and :meth:`write`):
        TypeError: non-numeric data (see :func:`numeric_arrays`).
        ValueError: a later message has other data names than the first, a shape that cannot be
            appended (append mode) or another rank (replace mode); in append mode, an array
            with a dimension of length 0 (cannot be chunked).
        OSError: the file cannot be created or written.
    """

    def __init__(
        self,
        path: Path,
        name: str,
        msg: beampipe.Message,
        mode: Literal["append", "replace"],
        signal: str | None,
        axes: list[str] | None,
    ) -> None:
        self.path = path
        self.name = name
        self.mode = mode
        self.count = 0
        self.written: set[int] = set()
        """Ids in the file before a :meth:`resume` (skipped by :meth:`write`)."""
        self._pending: list[tuple[int, dict[str, np.ndarray]]] = []
        arrays = numeric_arrays(msg)
        scalars = numeric_scalars(msg.metadata) if mode == "replace" else {}
        scalars = {k: v for k, v in scalars.items() if k not in arrays}
        self.columns = _column_names([*arrays, *scalars])
        self.names = frozenset(arrays)
        self.scalars = tuple(scalars)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(path, "w", libver=LIBVER)
        try:
            group = self._skeleton()
            self.datasets = {k: self._create(group, self.columns[k], a) for k, a in arrays.items()}
            self.datasets.update(
                {k: group.create_dataset(self.columns[k], data=v) for k, v in scalars.items()}
            )
            self.id = self._create(group, "id", np.array(0, dtype=np.int64))
            self._units(msg.metadata.get("units"))
            self._plot_attributes(group, signal, axes)
            self.file.swmr_mode = True
        except BaseException:
            self.file.close()
            raise

    @classmethod
    def resume(
        cls, path: Path, name: str, msg: beampipe.Message, mode: Literal["append", "replace"]
    ) -> GroupFile:
        """Reopen the group file a writer process that died left behind, to go on writing.

        A file left open in SWMR mode by a killed writer can be read (up to its last flush) but
        not opened for writing again (HDF5 keeps its "open for writing" flag set), so the flushed
        content is copied into a fresh file that then replaces it. ``msg`` is the port's next
        message: its data names give the dataset names, as they did at creation. In append
        mode the ids already in the file are remembered: :meth:`write` skips them.

        Raises:
            OSError: the file cannot be read or replaced.
            KeyError: the file lacks a dataset ``msg`` needs.
        """
        tmp = path.with_name(f".{path.name}.resume")
        with h5py.File(path, "r", swmr=True) as old, h5py.File(tmp, "w", libver=LIBVER) as new:
            new.attrs.update(old.attrs)
            old.copy("entry", new)
        os.replace(tmp, path)
        gf = cls.__new__(cls)
        gf.path, gf.name, gf.mode = path, name, mode
        gf._pending = []
        arrays = numeric_arrays(msg)
        gf.file = h5py.File(path, "r+", libver=LIBVER)
        group = gf.file["entry"][name]
        scalars = [k for k in numeric_scalars(msg.metadata) if k not in arrays]
        scalars = [k for k in scalars if mode == "replace"]
        gf.columns = _column_names([*arrays, *scalars])
        gf.names = frozenset(arrays)
        gf.scalars = tuple(k for k in scalars if gf.columns[k] in group)
        gf.datasets = {k: group[gf.columns[k]] for k in [*arrays, *gf.scalars]}
        gf.id = group["id"]
        gf.signal = group.attrs["signal"]
        gf.written = set(gf.id[()].tolist()) if mode == "append" else set()
        gf.count = len(gf.written)
        gf.file.swmr_mode = True
        return gf

    def _skeleton(self) -> h5py.Group:
        self.file.attrs.update({"NX_class": "NXroot", "default": "entry"})
        entry = new_group(self.file, "entry", "NXentry")
        entry.attrs["default"] = self.name
        return new_group(entry, self.name, "NXdata")

    def _create(self, group: h5py.Group, name: str, a: np.ndarray) -> h5py.Dataset:
        if self.mode == "replace":
            if a.ndim == 0:
                return group.create_dataset(name, shape=(), dtype=a.dtype)
            return group.create_dataset(
                name, shape=a.shape, maxshape=(None,) * a.ndim, chunks=True, dtype=a.dtype
            )
        rows = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_BYTES // max(1, a.nbytes)))
        return group.create_dataset(
            name,
            shape=(0, *a.shape),
            maxshape=(None, *a.shape),
            chunks=(rows, *a.shape),
            dtype=a.dtype,
        )

    def _units(self, units: Any) -> None:
        if isinstance(units, Mapping):
            for k, dataset in self.datasets.items():
                if isinstance(units.get(k), str):
                    dataset.attrs["units"] = units[k]

    def _plot_attributes(
        self, group: h5py.Group, signal: str | None, axes: list[str] | None
    ) -> None:
        """NXdata ``signal`` (the given one if it names data, else the first data name that is
        not an axis), ``axes`` (:func:`plot_axes`) and ``<axis>_indices``, with data names
        mapped to dataset names (https://manual.nexusformat.org/classes/base_classes/NXdata.html)."""
        if signal not in self.datasets:
            candidates = (k for k in self.columns if k in self.names and k not in (axes or ()))
            signal = next(candidates, "id")
        rank = self.datasets[signal].ndim if signal in self.datasets else 1
        known = {*self.datasets, "id"}
        names = [self.columns.get(a, a) for a in plot_axes(rank, axes, self.mode, known)]
        self.signal = self.columns.get(signal, signal)
        group.attrs["signal"] = self.signal
        group.attrs["axes"] = np.array(names, dtype=h5py.string_dtype())
        for i, axis in enumerate(names):
            if axis != "." and f"{axis}_indices" not in group.attrs:
                group.attrs[f"{axis}_indices"] = np.int64(i)

    def write(self, msg: beampipe.Message) -> None:
        """Append or replace with the data of ``msg``. Appended rows are kept in memory and
        written in one block per dataset by :meth:`flush` (per-row HDF5 writes cost ~60 µs
        each, which would cap a scan at a few hundred points per second). A message whose id
        was in the file when it was resumed is skipped (it was sent again after a crash)."""
        if msg.id in self.written:
            self.written.discard(msg.id)
            return
        arrays = numeric_arrays(msg)
        if set(arrays) != self.names:
            raise ValueError(
                f"stream {msg.stream!r} id {msg.id} port {msg.port!r}: data names "
                f"{sorted(arrays)} differ from those of the port's first message "
                f"{sorted(self.names)}"
            )
        if self.mode == "append":
            self._append(msg, arrays)
        else:
            self._replace(msg, arrays)
        self.count += 1

    def _append(self, msg: beampipe.Message, arrays: dict[str, np.ndarray]) -> None:
        for k, a in arrays.items():
            if a.shape != self.datasets[k].shape[1:]:
                raise ValueError(
                    f"stream {msg.stream!r} id {msg.id} port {msg.port!r}: {k!r} has shape "
                    f"{a.shape}, earlier messages {self.datasets[k].shape[1:]}"
                )
        self._pending.append((msg.id, arrays))

    def _write_pending(self) -> None:
        if not self._pending:
            return
        n, new = self.id.shape[0], len(self._pending)
        for k, dataset in self.datasets.items():
            dataset.resize(n + new, axis=0)
            dataset[n:] = np.stack([arrays[k] for _, arrays in self._pending])
        self.id.resize((n + new,))
        self.id[n:] = [msg_id for msg_id, _ in self._pending]
        self._pending.clear()

    def _replace(self, msg: beampipe.Message, arrays: dict[str, np.ndarray]) -> None:
        for k, a in arrays.items():
            if a.ndim != self.datasets[k].ndim:
                raise ValueError(
                    f"stream {msg.stream!r} id {msg.id} port {msg.port!r}: {k!r} has rank "
                    f"{a.ndim}, the first message's {self.datasets[k].ndim}"
                )
        for k, a in arrays.items():
            if a.ndim:
                self.datasets[k].resize(a.shape)
            self.datasets[k][()] = a
        scalars = numeric_scalars(msg.metadata)
        for k in self.scalars:
            if k in scalars:
                self.datasets[k][()] = scalars[k]
        self.id[()] = msg.id

    def flush(self) -> None:
        """Write the pending rows and make everything visible to SWMR readers."""
        self._write_pending()
        self.file.flush()

    def close(self) -> None:
        """Flush and close (ends SWMR mode; the file is then an ordinary HDF5 file)."""
        if self.file.id.valid:
            try:
                self._write_pending()
            finally:
                self.file.close()


def _column_names(keys: list[str]) -> dict[str, str]:
    """``{key: dataset name}``: valid NeXus names, unique, ``id`` reserved."""
    taken = {"id"}
    columns = {}
    for key in keys:
        columns[key] = unique_name(nexus_name(key, "data"), taken)
        taken.add(columns[key])
    return columns
