"""The HDF5 files the pipeline's sinks write, and their entries per stream, for the page.

A sink whose params have a ``path`` (``nexus_writer``'s master file) is listed; only these files
can be read through the viewer, by node name, never by a path from the browser. Reading uses
h5grove (https://silx-kit.github.io/h5grove/): metadata, attributes and slices of datasets as
JSON, opened in SWMR read mode so that the groups of a running scan can be read while the
writer appends (see docs/nexus.md, "Reading while a scan is written").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
from h5grove.content import create_content
from h5grove.utils import NotFoundError

from beampipe.config import Pipeline


class FileError(Exception):
    """A request for a file or an object in it that cannot be served (HTTP status, text)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _open(path: Path) -> h5py.File:
    """Open for reading: in SWMR mode (for files being written), else plainly (files in
    formats older than HDF5 1.10, which SWMR cannot read)."""
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError:
        return h5py.File(path, "r")


def _is_hdf5(path: Path) -> bool:
    """Whether ``path`` is an existing HDF5 file (by its signature)."""
    return path.is_file() and h5py.is_hdf5(path)


class SinkFiles:
    """The files of the pipeline's sinks: ``{node: absolute path}``.

    Args:
        pipeline: the pipeline; a node counts when its params have a str ``path`` and it has
            no output connection. Relative paths are taken relative to the working directory,
            as the writer takes them.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.paths: dict[str, Path] = {}
        for node in pipeline.sinks():
            path = getattr(pipeline.node_params(node), "path", None)
            if isinstance(path, str | os.PathLike):
                self.paths[node] = Path(os.path.expanduser(path)).absolute()
        self._entries: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}
        self._lock = threading.Lock()

    def listing(self) -> list[dict[str, Any]]:
        """Per file: ``node``, ``path`` and whether it ``exists`` yet as an HDF5 file."""
        return [
            {"node": node, "path": str(path), "exists": _is_hdf5(path)}
            for node, path in self.paths.items()
        ]

    def path(self, node: str) -> Path:
        """The file of sink ``node``.

        Raises:
            FileError: 404 if ``node`` writes no file or the file does not exist (yet).
        """
        path = self.paths.get(node)
        if path is None:
            raise FileError(404, f"node {node!r} writes no file")
        if not _is_hdf5(path):
            raise FileError(404, f"{path} is not an HDF5 file (yet)")
        return path

    def entries(self, node: str) -> dict[str, str]:
        """``{stream name: entry path}`` of the NXentry groups in the file of ``node`` (from
        each entry's ``entry_identifier``), re-read only when the file changed; ``{}`` if the
        file does not exist or cannot be read (e.g. while it is replaced)."""
        path = self.paths.get(node)
        if path is None or not _is_hdf5(path):
            return {}
        try:
            st = path.stat()
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._entries.get(node)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        found: dict[str, str] = {}
        try:
            with _open(path) as f:
                for name, group in f.items():
                    ident = group.get("entry_identifier") if isinstance(group, h5py.Group) else None
                    if isinstance(ident, h5py.Dataset):
                        value = ident[()]
                        found[value.decode() if isinstance(value, bytes) else str(value)] = (
                            f"/{name}"
                        )
        except (OSError, KeyError):
            return {}
        with self._lock:
            self._entries[node] = (stamp, found)
        return found

    @contextmanager
    def content(self, node: str, path: str) -> Iterator[Any]:
        """h5grove's content object of ``path`` in the file of ``node`` (a group, dataset or
        link: ``.metadata()``, ``.attributes()``, ``.data(selection)``, ...), while the file is
        open.

        Raises:
            FileError: 404 for an unknown node, a missing file or path; 503 if the file cannot
                be opened (e.g. while the writer replaces it: try again).
        """
        file = self.path(node)
        try:
            f = _open(file)
        except OSError as exc:
            raise FileError(503, f"{file}: cannot be read now: {exc}") from None
        with f:
            try:
                yield create_content(f, path or "/")
            except NotFoundError as exc:
                raise FileError(404, str(exc)) from None
