"""``use: image_files``: detector image files as a stream of 2-D frames, one message per frame,
from files already written (replay) or as a detector writes them (``follow: true``).

Formats: see :mod:`beampipe.nodes.images.readers` (fabio for CBF, EDF, TIFF, MarCCD, ADSC, ...;
h5py + hdf5plugin for HDF5/NeXus, EIGER and Lambda layouts). Streams: see
:mod:`beampipe.nodes.images.grouping`. Watch mode: :mod:`beampipe.nodes.images.follow`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

import beampipe
from beampipe.message import EndOfStream, Item, Message
from beampipe.nodes.files.base import NoFilesMatched
from beampipe.nodes.images.grouping import Grouping, Placed
from beampipe.nodes.images.journal import Journal
from beampipe.nodes.images.readers import FrameFile, ImageReadError, open_frames
from beampipe.nodes.pacing import Pacer, Rate, Speedup

__all__ = ["ImageFiles", "ImageReadError", "NoFilesMatched"]


class ImageFiles(beampipe.Source):
    """Sends the frames of detector image files: one message per 2-D frame, whatever the
    format (a multi-frame file gives several, a 2-D HDF5 dataset one).

    Per stream (``stream_by``: a file, a folder, or the files of one scan named by a pattern):

    * :class:`~beampipe.StreamStart`, metadata: ``stream_by``, ``signal`` (= ``key``),
      ``file`` (the first file read, absolute), ``folder``, ``format`` (``"cbf"``, ``"edf"``,
      ``"tif"``, ``"hdf5"``, ...), ``fields`` (the pattern's fields of the file, e.g.
      ``{"scan": "sample7"}``; ``{}`` without a pattern) and, with ``header: stream``,
      ``header``: the first file's header (fabio's header as ``{key: text}``; for HDF5 the
      frame ``dataset`` and the NeXus instrument fields of its entry).
    * One :class:`~beampipe.Message` per frame, ids 1, 2, ... over the stream's files in order:
      ``data = {key: frame}`` (the frame as read: the detector's dtype, shape (ny, nx)),
      ``metadata = {"frame": id - 1, "file": path, "file_frame": index in the file,
      "signal": key}`` plus, with ``header: message``, ``"header"``: the file's header (a
      multi-frame fabio file: the frame's own header).
    * :class:`~beampipe.EndOfStream` with the last id and the next stream (replay mode).

    A file that cannot be read (damaged, truncated, not an image file) or a frame that cannot
    be read, is not 2-D or differs in shape or dtype from the stream's first frame goes to the
    dead-letter file, naming the file and frame and the reason
    (:meth:`~beampipe.Source.dead_letter`; counted as dropped), and the other files go on; the
    ids stay consecutive over the frames sent.

    Replay (``follow: false``): the files ``paths`` match when the node starts, each pattern's
    matches in name order; streams in the order of their first file, ``pace`` as in
    ``hdf5_replay`` (``"realtime"``: a file's first frame waits the time between the file's
    and the previous file's modification times, divided by ``speedup``).

    Raises (from the constructor):
        NoFilesMatched: replay, and a pattern matches no file.
        ValueError: a matched file does not fit the ``stream_by`` pattern; two folders of one
            name with ``stream_by: folder``; two files of one stem with ``stream_by: file``.
    """

    class Params(beampipe.Params):
        """See docs/nodes.md, ``image_files``, for each parameter (units: seconds)."""

        paths: list[beampipe.InputPath]
        stream_by: str = Field("file", min_length=1)
        dataset: str | None = None
        key: str = Field("image", min_length=1)
        header: Literal["stream", "message"] = "stream"
        pace: Literal["max", "realtime"] | Rate = "max"
        speedup: Speedup = 1.0
        follow: bool = False
        settle: float = Field(1.0, ge=0, allow_inf_nan=False)
        poll: float = Field(0.2, gt=0, le=5, allow_inf_nan=False)
        idle_timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
        end_marker: str | None = Field(None, min_length=1)
        frames: PositiveInt | None = None

        @field_validator("paths", mode="before")
        @classmethod
        def _one_pattern(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

        @field_validator("stream_by")
        @classmethod
        def _grouping(cls, value: str) -> str:
            Grouping(value)
            return value

        @model_validator(mode="after")
        def _watch_only(self) -> ImageFiles.Params:
            if not self.follow:
                given = [n for n in ("idle_timeout", "end_marker", "frames") if getattr(self, n)]
                if given:
                    raise ValueError(f"{', '.join(given)} apply only with follow: true")
            return self

    params: ImageFiles.Params

    def __init__(self, params: ImageFiles.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.grouping = Grouping(self.params.stream_by)
        self.pacer = Pacer()
        self.journal: Journal | None = None
        """Watch mode: what was sent and acknowledged (made when :meth:`generate` starts)."""
        self.layouts: dict[str, tuple[tuple[int, ...], Any]] = {}
        """Per stream, the shape and dtype of its first frame, which the others must have."""
        self.streams: dict[str, list[tuple[Placed, Path]]] = {}
        if not self.params.follow:
            self.streams = self._plan(self._match())

    # -- finding the files ---------------------------------------------------------------------

    def _match(self) -> list[Path]:
        files: list[Path] = []
        seen: set[Path] = set()
        for pattern in self.params.paths:
            found = sorted(Path(os.path.abspath(p)) for p in glob.glob(pattern, recursive=True))
            found = [p for p in found if p.is_file()]
            if not found:
                raise NoFilesMatched(f"{self.name}: paths pattern {pattern!r} matches no file")
            files.extend(p for p in found if p not in seen)
            seen.update(found)
        return files

    def _plan(self, files: Iterable[Path]) -> dict[str, list[tuple[Placed, Path]]]:
        """The streams of ``files``, each its files in order (see the class doc)."""
        streams: dict[str, list[tuple[Placed, Path]]] = {}
        where: dict[str, Path] = {}
        for path in files:
            placed = self.grouping.place(path)
            if placed is None:
                raise ValueError(
                    f"{self.name}: {path.name} (in {path.parent}) does not fit the stream_by "
                    f"pattern {self.params.stream_by!r}; narrow 'paths' or fix the pattern"
                )
            key = path if self.params.stream_by == "file" else path.parent
            other = where.setdefault(placed.stream, key)
            if other != key:
                raise ValueError(
                    f"{self.name}: {other} and {key} would both be stream {placed.stream!r}"
                )
            streams.setdefault(placed.stream, []).append((placed, path))
        for members in streams.values():
            members.sort(key=lambda m: m[0].order)
        return streams

    # -- sending -------------------------------------------------------------------------------

    def generate(self) -> Iterator[Item | None]:
        """The streams' items (see the class doc); watch mode: see
        :class:`~beampipe.nodes.images.follow.Follow`."""
        if self.params.follow:
            from beampipe.nodes.images.follow import Follow

            self.journal = Journal(self.state_file)
            yield from Follow(self, self.journal).run()
            return
        names = list(self.streams)
        for k, stream in enumerate(names):
            self.pacer.restart()
            last = yield from self._replay(stream, self.streams[stream])
            following = names[k + 1] if k + 1 < len(names) else None
            yield EndOfStream(stream=stream, last_id=last, next_stream=following)

    def _replay(
        self, stream: str, members: list[tuple[Placed, Path]]
    ) -> Generator[Item, None, int]:
        next_id = 1
        started = False
        previous: float | None = None
        for placed, path in members:
            frames = self.open(stream, path, next_id)
            if frames is None:
                continue
            try:
                if not started:
                    started = True
                    yield beampipe.StreamStart(stream, self.stream_meta(placed, frames))
                mtime = path.stat().st_mtime
                gap = 0.0 if previous is None else mtime - previous
                previous = mtime
                for i in range(frames.frames):
                    msg = self.read(frames, stream, next_id, i)
                    if msg is None:
                        break
                    self._wait(gap if i == 0 else 0.0)
                    next_id += 1
                    yield msg
            finally:
                frames.close()
        if not started:
            yield beampipe.StreamStart(stream, self.stream_meta(members[0][0], None))
        return next_id - 1

    def _wait(self, realtime: float) -> None:
        pace = self.params.pace
        if pace == "realtime":
            self.pacer.wait(realtime / self.params.speedup)
        elif pace != "max":
            self.pacer.wait(1.0 / float(pace))

    def stream_meta(self, placed: Placed, frames: FrameFile | None) -> dict[str, Any]:
        """The StreamStart metadata of a stream whose first readable file is ``frames`` (None:
        no file of the stream could be read)."""
        meta: dict[str, Any] = {
            "stream_by": self.params.stream_by,
            "signal": self.params.key,
            "fields": dict(placed.fields),
        }
        if frames is not None:
            meta.update(file=str(frames.path), folder=str(frames.path.parent))
            meta["format"] = frames.format
            if self.params.header == "stream":
                meta["header"] = frames.header
        return meta

    def open(self, stream: str, path: Path, next_id: int) -> FrameFile | None:
        """``path`` opened as frames, or None after a dead letter saying why it cannot be."""
        try:
            return open_frames(path, self.params.dataset, self.name)
        except ImageReadError as exc:
            self.dead_letter(
                Message(stream=stream, id=next_id, metadata={"file": str(path)}), str(exc)
            )
            return None

    def read(self, frames: FrameFile, stream: str, msg_id: int, i: int) -> Message | None:
        """The message of frame ``i`` of ``frames`` as id ``msg_id``, or None after a dead
        letter naming the file and frame."""
        meta: dict[str, Any] = {
            "frame": msg_id - 1,
            "file": str(frames.path),
            "file_frame": i,
            "signal": self.params.key,
        }
        try:
            data, own = frames.frame(i)
        except ImageReadError as exc:
            self.dead_letter(Message(stream=stream, id=msg_id, metadata=meta), str(exc))
            return None
        first = self.layouts.setdefault(stream, (data.shape, data.dtype))
        if (data.shape, data.dtype) != first:
            self.dead_letter(
                Message(stream=stream, id=msg_id, metadata=meta),
                f"{self.name}: {frames.path}: frame {i} is {data.shape} {data.dtype}, but the "
                f"frames of stream {stream!r} are {first[0]} {first[1]}; a file of another "
                "detector or mode among the stream's files? (check 'paths' and 'stream_by')",
            )
            return None
        if self.params.header == "message":
            meta["header"] = own if own is not None else frames.header
        return Message(data={self.params.key: data}, metadata=meta, stream=stream, id=msg_id)

    # -- acknowledgements (watch mode) ---------------------------------------------------------

    def acknowledged(self, item: Message | EndOfStream) -> None:
        """Watch mode: note in the journal what downstream acknowledged."""
        if self.journal is None:
            return
        if isinstance(item, EndOfStream):
            self.journal.ended(item.stream, item.last_id)
        else:
            self.journal.acked(item.stream, item.id)

    def sent_before(self, stream: str) -> Iterable[int]:
        """The ids of ``stream`` acknowledged before a restart (from the journal)."""
        if self.journal is None or stream not in self.journal.streams:
            return ()
        return sorted(self.journal.streams[stream].acked)
