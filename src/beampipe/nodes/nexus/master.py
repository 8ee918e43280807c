"""The master file of ``nexus_writer`` (``path``): NXroot with one NXentry per stream, holding
metadata and external links to the group files. It is never kept open: every change is made to
a private copy, which then atomically replaces the file (:func:`edit_master`), so a reader
always sees a complete file. See docs/nexus.md.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import h5py

import beampipe
from beampipe.nodes.nexus.meta import LIBVER
from beampipe.nodes.nexus.space import ensure_space

__all__ = ["edit_master"]


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
        NoSpace: the copy would not fit on the disk (checked first: the master is untouched).
        OSError: the file or its directory cannot be written.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        size = 0 if create else path.stat().st_size
        ensure_space(path, "a copy of the master file to change it", size)
        if not create:
            shutil.copyfile(path, tmp)
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
