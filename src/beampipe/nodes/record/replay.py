"""Playback of a recording made by ``use: recorder``: ``use: replay``.

The streams of a recording (layout: :mod:`beampipe.nodes.record.recorder`) are sent again as they
were received: the same stream names and stream metadata, the messages of one recorded port
with their ids, metadata and data (dtype, shape and bytes identical), in the order they arrived
at the recorder, interleaved streams included. Messages are sent as fast as the pipeline takes
them or with the recorded gaps between them, optionally sped up.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import h5py
import numpy as np
from pydantic import PositiveFloat

import beampipe
from beampipe.message import Item
from beampipe.nodes.pacing import Pacer, Speedup
from beampipe.nodes.record.recorder import FORMAT, VERSION, link_name

__all__ = ["RecordingError", "Replay"]

_BLOCK_BYTES = 1 << 20
_TEXT_BLOCK = 256
_START, _MESSAGE, _END = 0, 1, 2


class RecordingError(ValueError):
    """The file is not a beampipe recording, is damaged, or has no such port."""


class _Rows:
    """Row ``k`` of a dataset, read in blocks of about 1 MiB (one row at a time for rows
    larger than that), so consecutive reads do not each touch the file."""

    def __init__(self, ds: h5py.Dataset) -> None:
        self.text = h5py.check_string_dtype(ds.dtype) is not None
        self.ds = ds.asstr() if self.text else ds
        row_bytes = ds.dtype.itemsize * math.prod(ds.shape[1:])
        self.step = _TEXT_BLOCK if self.text else max(1, _BLOCK_BYTES // max(1, row_bytes))
        self.start = 0
        self.block: np.ndarray | None = None

    def __getitem__(self, k: int) -> Any:
        block = self.block
        if block is None or not self.start <= k < self.start + len(block):
            self.start = k
            block = self.block = np.asarray(self.ds[k : k + self.step])
        row = block[k - self.start, ...]
        if self.text:
            return row.item() if isinstance(row, np.ndarray) else row
        return row.copy() if self.step > 1 else row


class _PortReader:
    """The messages of one port in one stream, row by row."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.metadata = _Rows(group["metadata"])
        self.timestamps = _Rows(group["timestamps"])
        self.items = _Rows(group["items"])
        self.received = _Rows(group["received"])
        self.stacks: dict[str, tuple[_Rows, str]] = {}

    def message(self, stream: str, msg_id: int, k: int, recorded_times: bool) -> _Read:
        data: dict[str, np.ndarray | bytes] = {}
        for name, row in json.loads(self.items[k]):
            if row >= 0:
                stack = self.stacks.get(name)
                if stack is None:
                    ds = self.group["data"][link_name(name)]
                    stack = self.stacks[name] = (_Rows(ds), str(ds.attrs["kind"]))
                value, kind = stack[0][row], stack[1]
            else:
                ds = self.group["per_message"][str(k)][link_name(name)]
                value, kind = ds[...], str(ds.attrs["kind"])
            data[name] = value.tobytes() if kind == "bytes" else value
        timestamps = json.loads(self.timestamps[k])
        sent = timestamps[-1][1] if timestamps else float(self.received[k])
        msg = beampipe.Message(
            data=data,
            metadata=json.loads(self.metadata[k]),
            stream=stream,
            id=msg_id,
            timestamps=timestamps if recorded_times else [],
        )
        return _Read(msg, float(sent))


@dataclass
class _Read:
    msg: beampipe.Message
    sent: float
    """Recorded unix time at which the recorded port sent the message (its last timestamp),
    or the time it was received if it has none."""


@dataclass
class _StreamRec:
    name: str
    group: h5py.Group
    start_seq: int
    end_seq: int
    ids: np.ndarray
    seqs: np.ndarray
    port: h5py.Group | None


class Replay(beampipe.Source):
    """Plays back a recording of ``recorder``: its streams, with the messages of one port.

    Items, in the order they arrived at the recorder (``seq``), streams interleaved as they
    were:

    * :class:`~beampipe.StreamStart` of every recorded stream, with its recorded name and
      metadata (also streams in which ``port`` carried no message: they come out empty).
    * Every :class:`~beampipe.Message` that ``port`` received: the recorded stream, id,
      metadata and data. Data keep their order, dtype, shape and bytes; ``bytes`` values come
      back as ``bytes``. ``timestamps``: ``"new"`` starts them afresh (the runtime stamps this
      node when it sends, so latencies downstream are measured from the replay),
      ``"recorded"`` sends the recorded ones (the runtime adds this node's stamp after them).
    * :class:`~beampipe.EndOfStream` where the stream ended in the recording, or after
      everything else for a stream that had not ended, with ``last_id`` = the highest id
      replayed in it (0 if none) and ``next_stream`` = the next stream of the recording (in
      the order they started; None after the last). The recorder does not see the original
      marker's ``next_stream``, so this is where it comes from.

    Pacing (``pace``): ``"max"`` sends as fast as downstream takes messages; ``"original"``
    keeps the recorded gaps between consecutive messages (each message's last timestamp, i.e.
    when the recorded port sent it), divided by ``speedup`` and cut to ``max_gap`` seconds if
    given, across streams too. A message recorded earlier than one before it is sent at once.
    Waits follow a deadline schedule on a monotonic clock (``self.pacer``, a
    :class:`~beampipe.nodes.pacing.Pacer`), so time spent downstream is not added; after a
    backpressure stall the replay catches up.

    Raises (from the constructor):
        FileNotFoundError: ``path`` does not exist.
        RecordingError: (a ``ValueError``) the file is not a recording of this format version,
            ``port`` is not in it, or it holds several ports and ``port`` is not given.
        OSError: the file cannot be opened (e.g. it is still being written).

    Raises (from :meth:`generate`):
        RecordingError: a dataset of the layout is missing or unreadable.
    """

    class Params(beampipe.Params):
        """``path``: the recording (relative to the pipeline file's folder). ``port``: the
        recorded input port to play back (may be left out if the recording has one).
        ``pace``: ``"max"`` or ``"original"``. ``speedup`` (at least 0.001) divides the original
        gaps.
        ``max_gap``: longest wait in seconds with ``original`` (None: no limit).
        ``timestamps``: ``"new"`` or ``"recorded"``."""

        path: beampipe.InputPath
        port: str | None = None
        pace: Literal["max", "original"] = "max"
        speedup: Speedup = 1.0
        max_gap: PositiveFloat | None = None
        timestamps: Literal["new", "recorded"] = "new"

    params: Replay.Params

    def __init__(self, params: Replay.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.path = os.path.abspath(params.path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.name}: recording {self.path} does not exist")
        with self._open() as f:
            ports = self.ports(f)
        if params.port is not None and params.port not in ports:
            have = f"its ports: {', '.join(ports)}" if ports else "it holds no messages"
            raise RecordingError(
                f"{self.name}: {self.path}: no port {params.port!r} in the recording ({have}); "
                "check 'port'"
            )
        if params.port is None and len(ports) > 1:
            raise RecordingError(
                f"{self.name}: {self.path}: the recording holds the ports {', '.join(ports)}; "
                "choose one with 'port'"
            )
        self.port: str | None = params.port or (ports[0] if ports else None)
        self.pacer = Pacer()

    def _open(self) -> h5py.File:
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise OSError(
                f"{self.name}: cannot open recording {self.path} ({exc}); is it an HDF5 file, "
                "and is the recording finished?"
            ) from None
        fmt, version = f.attrs.get("format"), f.attrs.get("version")
        if fmt != FORMAT or "streams" not in f:
            f.close()
            raise RecordingError(
                f"{self.name}: {self.path} is not a beampipe recording (no format={FORMAT!r} "
                "attribute or no /streams group); record with 'use: recorder' or "
                "'beampipe record'"
            )
        if version != VERSION:
            f.close()
            raise RecordingError(
                f"{self.name}: {self.path} is a recording of format version {version}; this "
                f"beampipe reads version {VERSION}"
            )
        return f

    @staticmethod
    def ports(f: h5py.File) -> list[str]:
        """The recorded port names, in the order they first appear."""
        names: dict[str, None] = {}
        for group in f["streams"].values():
            for port in group["ports"].values():
                names.setdefault(str(port.attrs["port"]), None)
        return list(names)

    def generate(self) -> Iterator[Item]:
        """The recorded items in their recorded order (see the class doc)."""
        with self._open() as f:
            streams = self._streams(f)
            seqs, kinds, index, rows = self._schedule(streams)
            readers: dict[int, _PortReader] = {}
            pacer = self._pacer()
            for seq, kind, i, k in zip(seqs, kinds, index, rows, strict=True):
                rec = streams[i]
                if kind == _START:
                    yield beampipe.StreamStart(rec.name, self._metadata(rec))
                elif kind == _END:
                    readers.pop(i, None)
                    last = int(rec.ids.max()) if len(rec.ids) else 0
                    following = streams[i + 1].name if i + 1 < len(streams) else None
                    yield beampipe.EndOfStream(rec.name, last, following)
                else:
                    read = self._message(rec, readers, i, int(k), int(seq))
                    pacer(read.sent)
                    yield read.msg

    def _streams(self, f: h5py.File) -> list[_StreamRec]:
        out = []
        empty = np.zeros(0, dtype=np.int64)
        for group in f["streams"].values():
            try:
                port = None
                if self.port is not None:
                    port = group["ports"].get(link_name(self.port))
                ids = port["id"][()] if port is not None else empty
                seqs = port["seq"][()] if port is not None else empty
                rec = _StreamRec(
                    name=str(group.attrs["stream"]),
                    group=group,
                    start_seq=int(group.attrs["start_seq"]),
                    end_seq=int(group.attrs["end_seq"]),
                    ids=ids,
                    seqs=seqs,
                    port=port,
                )
            except (KeyError, OSError) as exc:
                raise self._damaged(group.name, exc) from None
            if len(ids) != len(seqs):
                raise self._damaged(group.name, "id and seq differ in length")
            out.append(rec)
        out.sort(key=lambda r: r.start_seq)
        return out

    @staticmethod
    def _schedule(
        streams: list[_StreamRec],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(seq, kind, stream index, row) of every item to send, in recorded order; a stream
        that never ended ends after everything recorded."""
        last = max(
            [0, *(r.end_seq for r in streams), *(int(r.seqs.max()) for r in streams if len(r.seqs))]
        )
        parts = []
        for i, rec in enumerate(streams):
            n = len(rec.seqs)
            end = rec.end_seq if rec.end_seq >= 0 else last + 1 + i
            parts.append(
                (
                    np.concatenate([[rec.start_seq], rec.seqs, [end]]).astype(np.int64),
                    np.concatenate([[_START], np.full(n, _MESSAGE), [_END]]).astype(np.int8),
                    np.full(n + 2, i, dtype=np.int64),
                    np.concatenate([[0], np.arange(n), [0]]).astype(np.int64),
                )
            )
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        seqs, kinds, index, rows = (np.concatenate(p) for p in zip(*parts, strict=True))
        order = np.lexsort((kinds, seqs))
        return seqs[order], kinds[order], index[order], rows[order]

    def _metadata(self, rec: _StreamRec) -> dict[str, Any]:
        try:
            return json.loads(rec.group["metadata"].asstr()[()])
        except (KeyError, OSError, ValueError) as exc:
            raise self._damaged(rec.group.name, exc) from None

    def _message(
        self, rec: _StreamRec, readers: dict[int, _PortReader], i: int, k: int, seq: int
    ) -> _Read:
        assert rec.port is not None
        try:
            reader = readers.get(i)
            if reader is None:
                reader = readers[i] = _PortReader(rec.port)
            recorded = self.params.timestamps == "recorded"
            return reader.message(rec.name, int(rec.ids[k]), k, recorded)
        except (KeyError, OSError, ValueError) as exc:
            raise self._damaged(f"{rec.port.name} (message {k}, seq {seq})", exc) from None

    def _damaged(self, where: str, problem: Any) -> RecordingError:
        return RecordingError(
            f"{self.name}: {self.path}: {where}: {problem}; the recording is incomplete or "
            "damaged (was the recorder stopped before it closed the file?)"
        )

    def _pacer(self) -> Callable[[float], None]:
        """``pace(t)`` before each message, ``t`` its recorded send time: waits as the class
        doc says (nothing for ``pace: max``)."""
        p = self.params
        if p.pace == "max":
            return lambda t: None
        self.pacer.restart()
        latest: float | None = None  # the latest recorded time so far

        def pace(t: float) -> None:
            nonlocal latest
            gap = 0.0
            if latest is None:
                latest = t
            else:
                gap = (t - latest) / p.speedup if math.isfinite(t) and t > latest else 0.0
                latest = max(latest, t) if math.isfinite(t) else latest
            self.pacer.wait(gap if p.max_gap is None else min(gap, p.max_gap))

        return pace
