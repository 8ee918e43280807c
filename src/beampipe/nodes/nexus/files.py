"""The group files of ``nexus_writer``: one per (stream, input port) (:class:`GroupFile`), the
port's NXdata group, written in HDF5 SWMR mode (https://docs.h5py.org/en/stable/swmr.html) once
its datasets exist, so other processes can read it while it grows; linked into the master file
(:mod:`beampipe.nodes.nexus.master`).

See docs/nexus.md for the layout, the reader procedure and what a full disk leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import h5py
import numpy as np

import beampipe
from beampipe.nodes.nexus.columns import (
    column_names,
    numeric_arrays,
    numeric_scalars,
    plot_axes,
)
from beampipe.nodes.nexus.compression import Compression, filter_options
from beampipe.nodes.nexus.labels import string_lists, write_names
from beampipe.nodes.nexus.meta import LIBVER, new_group
from beampipe.nodes.nexus.salvage import copy_flushed
from beampipe.nodes.nexus.space import NoSpace, ensure_space, no_space

__all__ = ["GroupFile"]

_CHUNK_BYTES = 1 << 20
_MAX_CHUNK_ROWS = 1024


class GroupFile:
    """One input port of one stream: ``/entry/<name>`` (NXdata) in its own HDF5 file.

    The file is created from the first message of the port: one dataset per data name, ``id``,
    and in replace mode one 0-d field per numeric scalar of the metadata; then ``signal``,
    ``axes``, ``<axis>_indices`` and ``units`` attributes are set, what the metadata names is
    written (:func:`~beampipe.nodes.nexus.labels.write_names`) and SWMR mode is switched on.
    From then on the structure is fixed. Dataset names (:attr:`columns`): the data names made
    valid NeXus names (:func:`~beampipe.nodes.nexus.meta.nexus_name`; ``id`` is reserved).

    Modes:
        append: an array of shape S is appended along a new first axis: dataset shape (n, *S),
            chunked (a 2-D or larger array, a detector frame: one chunk per frame; smaller ones
            about 1 MiB per chunk), unlimited first dimension; ``id`` (int64, shape (n,)) holds
            the message ids.
        replace: every message overwrites the datasets (resized to the new shapes, same rank);
            ``id`` (int64, 0-d) is the id of the message shown; numeric scalar metadata fields
            are updated when a message carries them.

    Append mode stores the data names in ``fixed`` (a pattern's q axis) once, as the first
    message has them; later messages must carry the same. ``attributes`` (``{data name:
    {attribute: text}}``) are set on the datasets besides ``units`` (``metadata["units"]``).

    Writes wait in memory until :meth:`flush` writes the data, flushes, then writes the ids: an
    id in the file always names a row whose data is on disk. A failed write (a full disk:
    :func:`~beampipe.nodes.nexus.space.ensure_space`, or HDF5's error) rolls the file back to the
    last successful flush and closes it, readable by any reader; every later call raises it.

    Attributes:
        columns: ``{data or metadata key: dataset name}``.
        signal: the dataset named by the ``signal`` attribute.
        fixed: append mode: ``{data name: array}`` of the data stored once.
        count: messages written (or pending).
        rows: append mode: rows in the file with their ids (flushed).
        failed: the error of a failed write, or None.
        images: the per-image NXdata groups made in the file's ``/entry``.

    Raises (constructor, :meth:`write`, :meth:`flush`, :meth:`close`):
        TypeError: non-numeric data (see :func:`~beampipe.nodes.nexus.columns.numeric_arrays`).
        ValueError: a later message has other data names than the first, a shape that cannot be
            appended (append mode) or another rank (replace mode); in append mode, an array
            with a dimension of length 0 (cannot be chunked), or a ``fixed`` one whose values
            differ from the first message's; metadata ``images`` naming no image.
        OSError: the file cannot be created or written; its text names the file, the free
            space needed and the free space there is (:func:`~beampipe.nodes.nexus.space.no_space`;
            a :class:`~beampipe.nodes.nexus.space.NoSpace` when the disk is full).
    """

    def __init__(
        self,
        path: Path,
        name: str,
        msg: beampipe.Message,
        mode: Literal["append", "replace"],
        signal: str | None,
        axes: list[str] | None,
        compression: Compression = "none",
        *,
        fixed: frozenset[str] = frozenset(),
        attributes: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.path = path
        self.name = name
        self.mode = mode
        self.count = self.rows = 0
        self.failed: OSError | None = None
        self.written: set[int] = set()
        """Ids in the file before a :meth:`resume` (skipped by :meth:`write`)."""
        self._pending: list[tuple[int, dict[str, np.ndarray]]] = []
        self._shown: _Shown | None = None
        """Replace mode: the message last flushed (restored if a later write fails)."""
        self._filters = filter_options(compression)
        arrays = numeric_arrays(msg)
        scalars = numeric_scalars(msg.metadata) if mode == "replace" else {}
        scalars = {k: v for k, v in scalars.items() if k not in arrays}
        labels = string_lists(msg.metadata)
        self.columns = column_names([*arrays, *scalars, *labels])
        self.names = frozenset(arrays)
        self.scalars = tuple(scalars)
        self.fixed = {k: a for k, a in arrays.items() if k in fixed and mode == "append"}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = h5py.File(path, "w", libver=LIBVER)
        except (OSError, RuntimeError) as exc:
            path.unlink(missing_ok=True)
            raise no_space(path, "creating the file", 0, exc) from exc
        try:
            group = self._skeleton()
            made = {k: self._create(group, self.columns[k], a, k) for k, a in arrays.items()}
            fields = {k: group.create_dataset(self.columns[k], data=v) for k, v in scalars.items()}
            self.datasets = made | fields
            self.id = self._create(group, "id", np.array(0, dtype=np.int64))
            self._attributes(msg.metadata.get("units"), attributes or {})
            self._plot_attributes(group, signal, axes, set(labels))
            self.images = write_names(group, msg, self.columns, labels, self.datasets, mode)
            self.file.swmr_mode = True
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the file is removed: it holds nothing yet
                self.file.close()
            path.unlink(missing_ok=True)
            if isinstance(exc, OSError | RuntimeError):
                raise no_space(path, "creating the file", 0, exc) from exc
            raise

    @classmethod
    def resume(
        cls, path: Path, name: str, msg: beampipe.Message, mode: Literal["append", "replace"]
    ) -> GroupFile:
        """Reopen the group file a writer process that died left behind, to go on writing.

        A file the process closed (after a failed write) is opened as it is. A file left open in
        SWMR mode by a killed writer can be read (up to its last flush) but not opened for
        writing again (HDF5 keeps its "open for writing" flag set), so the flushed content is
        copied into a fresh file (``.<name>.resume``, after a check that it fits on the disk)
        that then replaces it. ``msg`` is the port's next message: its data names give the
        dataset names, as they did at creation. In append mode the datasets are cut to the rows
        that have both ids and data, and the ids already in the file are remembered:
        :meth:`write` skips them.

        Raises:
            OSError: the file cannot be read or replaced; :class:`NoSpace` if the copy would
                not fit (the file is then left as it was, no copy made).
            KeyError: the file lacks a dataset ``msg`` needs.
        """
        try:
            file = h5py.File(path, "r+", libver=LIBVER)
        except OSError:  # left open for writing by the process that died
            copy_flushed(path)
            file = h5py.File(path, "r+", libver=LIBVER)
        gf = cls.__new__(cls)
        gf.path, gf.name, gf.mode, gf.file = path, name, mode, file
        gf._pending, gf.failed = [], None
        arrays = numeric_arrays(msg)
        group = gf.file["entry"][name]
        scalars = [k for k in numeric_scalars(msg.metadata) if k not in arrays]
        scalars = [k for k in scalars if mode == "replace"]
        gf.columns = column_names([*arrays, *scalars])
        gf.names = frozenset(arrays)
        gf.scalars = tuple(k for k in scalars if gf.columns[k] in group)
        gf.datasets = {k: group[gf.columns[k]] for k in [*arrays, *gf.scalars]}
        gf.id = group["id"]
        gf.signal = group.attrs["signal"]
        gf.rows, gf.written, gf._shown, gf.images = 0, set(), None, []
        fixed = {k: d for k, d in gf.datasets.items() if d.maxshape[:1] != (None,)}
        gf.fixed = {k: d[()] for k, d in fixed.items()} if mode == "append" else {}
        if mode == "append":
            gf.rows = min(d.shape[0] for d in gf._grown())
            for dataset in gf._grown():
                dataset.resize(gf.rows, axis=0)  # a row without its id or its data is dropped
            gf.written = set(gf.id[()].tolist())
        else:
            gf._shown = _Shown(int(gf.id[()]), {k: d[()] for k, d in gf.datasets.items()})
        gf.count = len(gf.written)
        gf.file.swmr_mode = True
        return gf

    def _skeleton(self) -> h5py.Group:
        self.file.attrs.update({"NX_class": "NXroot", "default": "entry"})
        entry = new_group(self.file, "entry", "NXentry")
        entry.attrs["default"] = self.name
        return new_group(entry, self.name, "NXdata")

    def _create(self, group: h5py.Group, name: str, a: np.ndarray, key: str = "") -> h5py.Dataset:
        if key in self.fixed:
            return group.create_dataset(name, data=a)
        filters = self._filters if a.ndim and name != "id" else {}
        if self.mode == "replace":
            if a.ndim == 0:
                return group.create_dataset(name, shape=(), dtype=a.dtype)
            return group.create_dataset(
                name,
                shape=a.shape,
                maxshape=(None,) * a.ndim,
                chunks=True,
                dtype=a.dtype,
                **filters,
            )
        rows = 1 if a.ndim >= 2 else max(1, min(_MAX_CHUNK_ROWS, _CHUNK_BYTES // max(1, a.nbytes)))
        return group.create_dataset(
            name,
            shape=(0, *a.shape),
            maxshape=(None, *a.shape),
            chunks=(rows, *a.shape),
            dtype=a.dtype,
            **filters,
        )

    def _attributes(self, units: Any, attributes: Mapping[str, Mapping[str, str]]) -> None:
        for k, dataset in self.datasets.items():
            if isinstance(units, Mapping) and isinstance(units.get(k), str):
                dataset.attrs["units"] = units[k]
            dataset.attrs.update(attributes.get(k, {}))

    def _grown(self) -> list[h5py.Dataset]:
        """Append mode: the datasets that get a row per message (not the fixed ones), ``id``
        last."""
        return [d for k, d in self.datasets.items() if k not in self.fixed] + [self.id]

    def _plot_attributes(
        self, group: h5py.Group, signal: str | None, axes: list[str] | None, labels: set[str]
    ) -> None:
        """NXdata ``signal`` (the given one if it names data, else the first data name that is
        not an axis), ``axes`` (:func:`~beampipe.nodes.nexus.columns.plot_axes`) and
        ``<axis>_indices``, with data names mapped to dataset names (https://manual.nexusformat.org/classes/base_classes/NXdata.html)."""
        if signal not in self.datasets:
            candidates = (k for k in self.columns if k in self.names and k not in (axes or ()))
            signal = next(candidates, "id")
        rank = self.datasets[signal].ndim if signal in self.datasets else 1
        known = {*self.datasets, "id", *labels}
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
        each, which would cap a scan at a few hundred points per second); in replace mode the
        last message is kept until then. A message whose id was in the file when it was
        resumed is skipped (it was sent again after a crash)."""
        if self.failed is not None:
            raise self.failed
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
        where = f"stream {msg.stream!r} id {msg.id} port {msg.port!r}"
        for k, a in arrays.items():
            dataset = self.datasets[k]
            if k in self.fixed and not np.array_equal(a, self.fixed[k], equal_nan=True):
                raise ValueError(f"{where}: {k!r} differs from the stream's first {k!r}")
            if self.mode == "append" and k not in self.fixed and a.shape != dataset.shape[1:]:
                raise ValueError(
                    f"{where}: {k!r} has shape {a.shape}, earlier messages {dataset.shape[1:]}"
                )
            if self.mode == "replace" and a.ndim != dataset.ndim:
                raise ValueError(
                    f"{where}: {k!r} has rank {a.ndim}, the first message's {dataset.ndim}"
                )
        if self.mode == "replace":
            scalars = numeric_scalars(msg.metadata)
            arrays |= {k: np.asarray(scalars[k]) for k in self.scalars if k in scalars}
            self._pending.clear()  # only the last message is shown
        self._pending.append((msg.id, arrays))
        self.count += 1

    def flush(self) -> None:
        """Write what is pending, the data before the ids, and make everything visible to
        SWMR readers. A failed write rolls the file back and closes it (see the class).

        Raises:
            OSError: the write failed (the file named, the free space needed and there is).
        """
        if self.failed is not None:
            raise self.failed
        try:
            if self.mode == "append":
                self._append_pending()
            else:
                self._replace_pending()
        except Exception as exc:
            raise self._fail(exc) from exc

    def _append_pending(self) -> None:
        if not self._pending:
            return
        n, new = self.rows, len(self._pending)
        ensure_space(self.path, self._doing(), self._needed())
        for k, dataset in self.datasets.items():
            if k not in self.fixed:
                dataset.resize(n + new, axis=0)
                dataset[n:] = np.stack([arrays[k] for _, arrays in self._pending])
        self.file.flush()  # the rows' data is on disk before any id names it
        self.id.resize((n + new,))
        self.id[n:] = [msg_id for msg_id, _ in self._pending]
        self.file.flush()
        self.rows = n + new
        self._pending.clear()

    def _replace_pending(self) -> None:
        if not self._pending:
            return
        msg_id, arrays = self._pending[0]
        ensure_space(self.path, self._doing(), self._needed())
        self._show(arrays)
        self.file.flush()  # the data is on disk before the id names it
        self.id[()] = msg_id
        self.file.flush()
        values = {**(self._shown.values if self._shown else {}), **arrays}
        self._shown = _Shown(msg_id, values)
        self._pending.clear()

    def _show(self, arrays: dict[str, np.ndarray]) -> None:
        for k, a in arrays.items():
            if a.ndim:
                self.datasets[k].resize(a.shape)
            self.datasets[k][()] = a

    def _doing(self) -> str:
        ids = [msg_id for msg_id, _ in self._pending]
        return f"writing id {ids[0]}" if len(ids) == 1 else f"writing ids {ids[0]}..{ids[-1]}"

    def _needed(self) -> int:
        """Bytes the pending write may take on disk: in append mode the chunks that the new
        rows begin (HDF5 writes whole chunks), in replace mode the message's data."""
        if self.mode == "replace":
            return sum(a.nbytes for _, arrays in self._pending for a in arrays.values())
        total, n, new = 0, self.rows, len(self._pending)
        for dataset in self._grown():
            rows = dataset.chunks[0]
            chunks = -(-(n + new) // rows) - -(-n // rows)
            total += chunks * int(np.prod(dataset.chunks)) * dataset.dtype.itemsize
        return total

    def _fail(self, exc: Exception) -> OSError:
        """After the failed write ``exc``: roll the file back to the last successful flush,
        close it, and keep the error, naming the file and the space (returned)."""
        doing = self._doing() if self._pending else "flushing the file"
        cause = None if isinstance(exc, NoSpace) else exc
        error = no_space(self.path, doing, self._needed(), cause)
        self._pending.clear()
        kept = f"{self.rows} rows" if self.mode == "append" else "the message shown before"
        text = f"{error.strerror}; the file keeps {kept} and was closed"
        try:
            if self.mode == "append":
                for dataset in self._grown():
                    dataset.resize(self.rows, axis=0)
            elif self._shown is not None:
                self._show(self._shown.values)
                self.id[()] = self._shown.id
            self.file.close()
        except Exception as undo:
            text += f" (rolling it back failed: {type(undo).__name__}: {undo})"
        self.failed = OSError(error.errno, text)
        return self.failed

    def close(self) -> None:
        """Flush and close (ends SWMR mode; the file is then an ordinary HDF5 file).

        Raises:
            OSError: the write failed, now or before (the file is closed all the same).
        """
        if self.failed is not None:
            raise self.failed
        if self.file.id.valid:
            self.flush()
            self.file.close()


class _Shown(NamedTuple):
    """Replace mode: the message in the file, ``id`` and ``{key: value}`` of its datasets."""

    id: int
    values: dict[str, np.ndarray]
