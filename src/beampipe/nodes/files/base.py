"""Sources that replay files, one stream per file: finding the files, and the base class of
``xdi_replay`` and ``hdf5_replay``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

import beampipe
from beampipe.message import Item
from beampipe.nodes.pacing import Pacer, Rate, Speedup

__all__ = ["FileReplay", "NoFilesMatched", "match_files"]


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


class FileReplay(beampipe.Source):
    """Base of the sources that replay files: one stream per file, in the order of ``paths``.

    A subclass names a file's stream (:meth:`stream_name`) and sends one file
    (:meth:`replay`: the :class:`~beampipe.StreamStart` and the messages, calling :meth:`wait`
    before each message); :meth:`generate` ends each stream with an
    :class:`~beampipe.EndOfStream` whose ``next_stream`` is the next file's stream (None after
    the last), and starts a new pacing schedule for each file.

    Attributes:
        files: the files to replay, absolute, in order (:func:`match_files` when the node is
            created).
        pacer: the :class:`~beampipe.nodes.pacing.Pacer` of the waits (tests give it a fake
            clock).

    Raises (from the constructor):
        NoFilesMatched: a pattern matches no file (a ``FileNotFoundError`` and ``ValueError``).
        ValueError: two files would give the same stream name.
    """

    class Params(beampipe.Params):
        """``paths``: glob patterns (``**`` recursive; ``~`` expanded), or one pattern as a
        string; relative ones are taken relative to the pipeline file's folder. ``pace``:
        ``"max"``, ``"realtime"`` or a rate in Hz (at least 0.001). ``speedup`` (at least
        0.001) divides the realtime waits."""

        paths: list[beampipe.InputPath]
        pace: Literal["max", "realtime"] | Rate = "max"
        speedup: Speedup = 1.0

        @field_validator("paths", mode="before")
        @classmethod
        def _one_pattern(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

    params: FileReplay.Params

    def __init__(self, params: FileReplay.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.files = match_files(self.name, self.params.paths, self.stream_name)
        self.pacer = Pacer()

    @staticmethod
    def stream_name(path: str | os.PathLike[str]) -> str:
        """The stream name of a file."""
        raise NotImplementedError

    def generate(self) -> Iterator[Item]:
        """StreamStart, Messages and EndOfStream for each file in turn (see the class doc)."""
        for k, path in enumerate(self.files):
            stream = self.stream_name(path)
            following = self.stream_name(self.files[k + 1]) if k + 1 < len(self.files) else None
            self.pacer.restart()
            last_id = yield from self.replay(path, stream)
            yield beampipe.EndOfStream(stream=stream, last_id=last_id, next_stream=following)

    def replay(self, path: Path, stream: str) -> Generator[Item, None, int]:
        """The :class:`~beampipe.StreamStart` of ``path`` (stream ``stream``) and its messages,
        ids 1..n; returns n."""
        raise NotImplementedError

    def wait(self, realtime: float | None) -> None:
        """Wait before a message as ``pace`` says: not at all for ``"max"``; 1 / rate seconds
        for a rate; ``realtime`` (the message's own time after the previous one, seconds; given
        for ``pace: realtime``) / ``speedup`` for ``"realtime"``. On the deadline schedule of
        :attr:`pacer`: the first message of a file does not wait."""
        pace = self.params.pace
        if pace == "max":
            return
        if pace == "realtime":
            assert realtime is not None
            self.pacer.wait(realtime / self.params.speedup)
        else:
            self.pacer.wait(1.0 / float(pace))
