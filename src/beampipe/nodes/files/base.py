"""Sources that replay files, one stream per file: finding the files.

Used by ``xdi_replay`` and ``hdf5_replay``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path


class NoFilesMatched(FileNotFoundError, ValueError):
    """A ``paths`` pattern of a file-replay source matches no file."""


def match_files(
    node: str, patterns: Sequence[str], stream_name: Callable[[Path], str]
) -> list[Path]:
    """The files the glob ``patterns`` match (``**`` recursive), absolute, each once, sorted
    within each pattern and in pattern order.

    Raises:
        NoFilesMatched: a pattern matches no file.
        ValueError: two files would get the same stream name (``stream_name(path)``).
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        matches = sorted(Path(os.path.abspath(p)) for p in glob.glob(pattern, recursive=True))
        matches = [p for p in matches if p.is_file()]
        if not matches:
            raise NoFilesMatched(f"{node}: paths pattern {pattern!r} matches no file")
        for path in matches:
            if path not in seen:
                seen.add(path)
                files.append(path)
    by_stream: dict[str, Path] = {}
    for path in files:
        other = by_stream.setdefault(stream_name(path), path)
        if other != path:
            raise ValueError(
                f"{node}: {other} and {path} would both be stream {stream_name(path)!r}"
            )
    return files
