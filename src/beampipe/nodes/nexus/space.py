"""Disk space for ``nexus_writer``: the check before a write and the error that names the file.

A full disk must not leave rows that claim data they do not hold, nor files that readers cannot
open (docs/nexus.md, "When the disk is full"). The real write error is always caught
(:class:`~beampipe.nodes.nexus.files.GroupFile` rolls its file back to the rows it flushed
before); :func:`ensure_space` is a complement that refuses a write whose new blocks would not
fit, before anything is written, so the file can still be closed cleanly.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

__all__ = ["MARGIN", "NoSpace", "ensure_space", "free_bytes", "no_space", "size_text"]

MARGIN = 256 * 1024
"""Bytes kept free beyond a write's data: HDF5 metadata (chunk index, object headers) written at
the flush and at the close of the file."""


def size_text(n: float) -> str:
    """``n`` bytes for a person: ``"512 B"``, ``"1.5 MB"`` (decimal units)."""
    units = ("B", "kB", "MB", "GB", "TB")
    k = 0
    while abs(n) >= 1000 and k < len(units) - 1:
        n, k = n / 1000, k + 1
    return f"{n:.0f} B" if k == 0 else f"{n:.1f} {units[k]}"


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the file system of ``path`` (or of its nearest existing
    parent directory)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


class NoSpace(OSError):
    """Not enough free disk space for a write (``errno`` ENOSPC), found before writing."""


def no_space(path: Path, doing: str, needed: int, cause: BaseException | None = None) -> OSError:
    """The error for ``doing`` (a phrase: ``"writing ids 5..9"``) to ``path`` that failed or
    would not fit: its text names the file, the free space needed (``needed`` bytes and
    :data:`MARGIN`) and the free space there is, and ``cause`` if given. A :class:`NoSpace`
    when the free space is short, else an ``OSError`` with ``errno`` EIO."""
    free, want = free_bytes(path), needed + MARGIN
    if free < want:
        text = f"{path}: no space left for {doing}: it needs {size_text(want)} free, "
        text += f"{size_text(free)} free on the file system"
    else:
        text = f"{path}: {doing} failed ({size_text(free)} free, {size_text(want)} needed)"
    if cause is not None:
        text += f"; {type(cause).__name__}: {' '.join(str(cause).split())}"
    return NoSpace(errno.ENOSPC, text) if free < want else OSError(errno.EIO, text)


def ensure_space(path: Path, doing: str, needed: int) -> None:
    """Check that ``needed`` bytes and :data:`MARGIN` are free on the file system of ``path``
    before ``doing`` (a phrase: ``"writing ids 5..9"``).

    Raises:
        NoSpace: not enough free space; the text names the file and both sizes.
    """
    if free_bytes(path) < needed + MARGIN:
        raise no_space(path, doing, needed)
