"""Salvaging a group file of ``nexus_writer`` that a killed writer left open for writing:
HDF5 lets such a file be read (up to its last flush, with ``swmr=True``) but not opened for
writing again, so its flushed content is copied into a fresh file that replaces it
(docs/reliability.md; :meth:`~beampipe.nodes.nexus.files.GroupFile.resume`).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from beampipe.nodes.nexus.meta import LIBVER
from beampipe.nodes.nexus.space import ensure_space, no_space

__all__ = ["copy_flushed"]


def copy_flushed(path: Path) -> None:
    """Replace ``path``, a group file left open for writing by a process that died, by a copy
    of its flushed content (written as ``.<name>.resume``, then renamed; removed on failure).

    Raises:
        NoSpace: the copy would not fit on the disk (nothing was written).
        OSError: the file cannot be read, or the copy cannot be written.
    """
    tmp = path.with_name(f".{path.name}.resume")
    size = path.stat().st_size
    ensure_space(path, "copying the file to resume it", size)
    try:
        with h5py.File(path, "r", swmr=True) as old, h5py.File(tmp, "w", libver=LIBVER) as new:
            new.attrs.update(old.attrs)
            old.copy("entry", new)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise no_space(path, "copying the file to resume it", size, exc) from exc
