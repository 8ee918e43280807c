"""Watch mode of ``image_files`` (``follow: true``): frames sent as a detector writes files.

Every ``poll`` seconds the ``paths`` patterns are matched again. A file is read once it is
complete:

* its size and modification time have not changed for ``settle`` seconds (and it is not empty);
* an HDF5 file also opens (HDF5 refuses a file another process has open for writing); one that
  does not, because its writer has it open in SWMR mode, is read as it grows: each poll reads
  the frames of its frame dataset below its current length less one (the last may be being
  written), and the rest once the writer has closed it.

Within a stream, files are read in their order (``stream_by``), a file only after every earlier
one of the stream: a file still settling holds back the later ones. A stream ends (its
:class:`~beampipe.EndOfStream`) when it has ``frames`` frames; when ``end_marker`` exists in its
folder (a name in the pattern's format syntax, with its fields and ``{stream}``) and no file of
it is pending; with ``stream_by: file`` when its file is read; or after ``idle_timeout`` seconds
without a new frame. The source ends when no stream is open and nothing new came for
``idle_timeout`` seconds (without it: when drained or stopped).

Checkpoint (:mod:`beampipe.nodes.images.journal`): each frame's id is journaled before it is
sent, acknowledgements after they come; a restarted process (``restart: on-failure``) sends the
StreamStart of the streams not ended again, then exactly the frames that were not acknowledged,
with their ids, and goes on with the files not yet read.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py

from beampipe.message import EndOfStream, Item, Message, StreamStart
from beampipe.nodes.files.hdf5_layout import Hdf5ReplayError, find_plan
from beampipe.nodes.images.grouping import Placed
from beampipe.nodes.images.journal import Journal
from beampipe.nodes.images.readers import FrameFile, ImageReadError, open_frames

if TYPE_CHECKING:
    from beampipe.nodes.images.source import ImageFiles

__all__ = ["Follow"]

log = logging.getLogger(__name__)


@dataclass
class Open:
    """A stream open in this process."""

    placed: Placed
    folder: Path
    next_id: int = 1
    last_news: float = field(default_factory=time.monotonic)


class Follow:
    """The watch loop of one ``image_files`` node (see the module doc)."""

    def __init__(self, node: ImageFiles, journal: Journal) -> None:
        self.node = node
        self.p = node.params
        self.journal = journal
        self.read: dict[str, int] = journal.files()
        """Frames read (given ids) per file, from its first."""
        self.done: set[str] = set(journal.dropped)
        """Files read whole, or dropped."""
        self.stable: dict[str, tuple[int, int, float]] = {}
        """Per file seen: (size, mtime in ns, monotonic time it was first seen so)."""
        self.open: dict[str, Open] = {}
        self.ended = {s for s, r in journal.streams.items() if r.ended is not None}
        self.strays: set[str] = set()
        """Files that do not fit the stream_by pattern (warned about once)."""
        self.pending: dict[str, int] = {}
        """Per stream, its files not finished with at the last poll."""
        for record in journal.streams.values():
            if record.ended is not None:
                self.done.update(path for path, _ in record.frames.values())

    def run(self) -> Iterator[Item | None]:
        yield from self._resume()
        last_news = time.monotonic()
        while True:
            sent = False
            for item in self._poll():
                sent = True
                yield item
            yield from self._ends()
            now = time.monotonic()
            if sent:
                last_news = now
            elif self.p.idle_timeout and not self.open and now - last_news >= self.p.idle_timeout:
                self.journal.flush()
                return
            self.journal.flush(due=True)
            yield None
            time.sleep(self.p.poll)

    # -- restart -------------------------------------------------------------------------------

    def _resume(self) -> Iterator[Item]:
        """After a restart: the streams not ended start again, and their frames that were not
        acknowledged are sent again with their ids."""
        for stream, record in self.journal.streams.items():
            if record.ended is not None or record.meta is None:
                continue
            first = record.frames[min(record.frames)][0] if record.frames else record.meta["file"]
            placed = self.node.grouping.place(Path(first))
            assert placed is not None
            state = self.open[stream] = Open(placed, Path(first).parent, record.next_id)
            yield StreamStart(stream, record.meta)
            for msg_id in sorted(set(record.frames) - record.acked):
                path, i = record.frames[msg_id]
                frames = self.node.open(stream, Path(path), msg_id)
                if frames is None:
                    continue
                with closing(frames):
                    msg = self.node.read(frames, stream, msg_id, i)
                if msg is not None:
                    yield msg
            state.last_news = time.monotonic()

    # -- one poll ------------------------------------------------------------------------------

    def _poll(self) -> Iterator[Item]:
        pending: dict[str, list[tuple[Placed, Path]]] = {}
        candidates = self._candidates()
        settled = {path: self._settled(path) for path in candidates}  # every file's clock runs
        for path in candidates:
            placed = self.node.grouping.place(path)
            if placed is None:
                if str(path) not in self.strays:
                    self.strays.add(str(path))
                    log.warning(
                        "%s: %s does not fit stream_by %r: ignored",
                        self.node.name,
                        path,
                        self.p.stream_by,
                    )
                continue
            pending.setdefault(placed.stream, []).append((placed, path))
        self.pending = {s: len(m) for s, m in pending.items()}
        for stream, members in pending.items():
            members.sort(key=lambda m: m[0].order)
            for placed, path in members:
                if stream in self.ended:
                    self._late(stream, path)
                    continue
                if settled[path]:
                    finished = yield from self._take(stream, placed, path)
                elif h5py.is_hdf5(path):  # growing: read it if its writer is in SWMR mode
                    finished = yield from self._growing(stream, placed, path)
                else:
                    break
                if not finished:
                    break

    def _candidates(self) -> list[Path]:
        found: set[Path] = set()
        for pattern in self.p.paths:
            found.update(Path(os.path.abspath(p)) for p in glob.glob(pattern, recursive=True))
        return sorted(p for p in found if str(p) not in self.done and p.is_file())

    def _settled(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        key = str(path)
        now = time.monotonic()
        seen = self.stable.get(key)
        if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
            self.stable[key] = (st.st_size, st.st_mtime_ns, now)
            return False
        return st.st_size > 0 and now - seen[2] >= self.p.settle

    def _late(self, stream: str, path: Path) -> None:
        self.done.add(str(path))
        self.journal.drop(str(path))
        self.node.dead_letter(
            Message(stream=stream, id=0, metadata={"file": str(path)}),
            f"{self.node.name}: {path} came after its stream {stream!r} had ended; not read",
        )

    def _take(self, stream: str, placed: Placed, path: Path) -> Iterator[Item]:
        """Send the frames of ``path`` not sent yet; whether the file is finished with."""
        key = str(path)
        try:
            frames = open_frames(path, self.p.dataset, self.node.name)
        except ImageReadError as exc:
            if h5py.is_hdf5(path) and ("already open" in str(exc) or "lock" in str(exc)):
                return (yield from self._growing(stream, placed, path))
            self.done.add(key)
            self.journal.drop(key)
            state = self.open.get(stream)
            self.node.dead_letter(
                Message(stream=stream, id=state.next_id if state else 1, metadata={"file": key}),
                str(exc),
            )
            return True
        with closing(frames):
            yield from self._send(stream, placed, frames, frames.frames)
        self.done.add(key)
        return True

    def _growing(self, stream: str, placed: Placed, path: Path) -> Iterator[Item]:
        """An HDF5 file open for writing: send the frames below its length less one if its
        writer has it open in SWMR mode; not finished with."""
        try:
            frames = open_frames_swmr(path, self.p.dataset, self.node.name)
        except ImageReadError:
            return False  # being written, not in SWMR mode: wait until it is closed
        with closing(frames):
            yield from self._send(stream, placed, frames, frames.frames - 1)
        return False

    def _send(self, stream: str, placed: Placed, frames: FrameFile, upto: int) -> Iterator[Item]:
        key = str(frames.path)
        state = self.open.get(stream)
        if state is None:
            state = self.open[stream] = Open(placed, frames.path.parent)
            meta = self.node.stream_meta(placed, frames)
            self.journal.start(stream, meta)
            yield StreamStart(stream, meta)
        for i in range(self.read.get(key, 0), upto):
            if self.p.frames and state.next_id > self.p.frames:
                return
            msg = self.node.read(frames, stream, state.next_id, i)
            self.read[key] = i + 1
            if msg is None:
                self.done.add(key)
                self.journal.drop(key)
                return
            self.journal.assign(stream, msg.id, key, i)
            state.next_id += 1
            state.last_news = time.monotonic()
            yield msg

    # -- ends ----------------------------------------------------------------------------------

    def _ends(self) -> Iterator[Item]:
        now = time.monotonic()
        for stream, state in list(self.open.items()):
            pending = self.pending.get(stream, 0)
            last = state.next_id - 1
            if (
                (self.p.frames and last >= self.p.frames)
                or (self.p.stream_by == "file" and not pending)
                or (not pending and self._marker(stream, state))
                or (self.p.idle_timeout and now - state.last_news >= self.p.idle_timeout)
            ):
                del self.open[stream]
                self.ended.add(stream)
                yield EndOfStream(stream=stream, last_id=last)

    def _marker(self, stream: str, state: Open) -> bool:
        if self.p.end_marker is None:
            return False
        fields: dict[str, Any] = {k: v for k, v in state.placed.fields.items() if k != "frame"}
        try:
            name = self.p.end_marker.format(stream=stream, **fields)
        except (KeyError, IndexError, ValueError):
            return False
        return (state.folder / name).exists()


def open_frames_swmr(path: Path, dataset: str | None, node: str) -> FrameFile:
    """``path``, which a writer has open in SWMR mode, opened as frames (its current ones)."""
    try:
        f = h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise ImageReadError(f"{node}: {path}: cannot open it in SWMR mode ({exc})") from None
    try:
        plan = find_plan(node, f, dataset)
    except Hdf5ReplayError as exc:
        f.close()
        raise ImageReadError(str(exc)) from None
    header = {"dataset": plan.dataset}
    return FrameFile(path, "hdf5", plan.frames, header, node, _h5=f, _plan=plan)
