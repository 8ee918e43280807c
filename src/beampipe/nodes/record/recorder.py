"""Recording of messages into an HDF5 file: ``use: recorder`` (played back by ``use: replay``).

Everything the node receives is kept, losslessly, so that a pipeline can be developed offline on
a stream recorded during the beamtime (Dranspose's "record and replay"). The file is plain HDF5
(https://docs.hdfgroup.org/hdf5/develop/), readable with h5py without beampipe.

Layout (format ``beampipe-recording``, version 1)::

    /                                   attrs: format = "beampipe-recording", version = 1,
                                               beampipe_version, created (ISO 8601, UTC)
    /streams/<stream>/                  one group per stream, in the order the streams started
        attrs: stream     the exact stream name (the group name is escaped, see below)
               start_seq  position of the stream's start in the recording (see ``seq``)
               end_seq    position of its end, -1 while open or if it never ended
               ended      whether the stream ended (its EndOfStream was received)
        metadata          scalar UTF-8 string: the StreamStart metadata as JSON
        ports/<port>/     one group per input port of the recorder that carried messages of
                          the stream; attrs: port (its name), origin (the upstream "node.port"
                          when known, else ""), messages (count), last_id (highest id)
            id            int64 (n,)    message ids, in arrival order
            seq           int64 (n,)    position of each message in the whole recording: one
                                        counter from 1 over every stream start, message and
                                        stream end received, in arrival order
            received      float64 (n,)  unix time (s) at which the recorder received it
            metadata      str (n,)      the message metadata, JSON
            timestamps    str (n,)      the message timestamps, JSON: [[node, unix time], ...]
            items         str (n,)      JSON per message: [[name, row], ...], its data items in
                                        their order; row >= 0: row of data/<name>; row = -1:
                                        the item is per_message/<k>/<name>, k = the message's
                                        index in this group (0-based)
            data/<name>   (rows, *shape) the items called <name> that have the dtype, shape and
                                        kind of the first one: resizable, chunked along rows
            per_message/<k>/<name>      an item that does not fit data/<name> (another shape,
                                        dtype or kind, or a zero-length axis), as a dataset of
                                        its own

Every data dataset has the attributes ``name`` (the exact data name), ``kind`` (``"array"`` for a
numpy array, ``"bytes"`` for a ``bytes`` value, stored as uint8 of shape (length,)) and
``dtype`` (the numpy dtype string, e.g. ``"<u2"``, ``">i4"``, ``"<U5"``). Arrays of a type HDF5
has (bool, integers, floats, complex, fixed-length bytes ``S``, structured without strings) are
stored as that type, byte order included; the others (unicode ``U``, ``datetime64``,
``timedelta64``) as HDF5 opaque data tagged with the numpy dtype (h5py's ``opaque_dtype``),
which h5py reads back as the same dtype. Values are stored bit for bit.

Names: a stream or data name becomes a link name with ``%`` written ``%25`` and ``/`` ``%2F``;
the names ``.``, ``..`` and the empty name are written ``%2E``, ``%2E%2E`` and ``%``. A stream
that starts again after it ended gets a new group, ``<name>%#2``, ``%#3``, ...

Rows are buffered and written in batches: at the latest ``flush_interval`` seconds after the
last write (checked as messages arrive), when 16 MiB are waiting, at the end of each stream, at
each checkpoint of the runtime and when the node closes; a data item of 1 MiB or more (a
detector frame) is written when it arrives, without a copy. The file is created (parent folders
too; an existing file is overwritten) when the node starts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
from pydantic import Field

import beampipe

__all__ = ["FORMAT", "VERSION", "Recorder", "link_name", "storage_dtype"]

FORMAT = "beampipe-recording"
"""The ``format`` attribute of a recording's root group."""

VERSION = 1
"""The ``version`` attribute of a recording's root group (this layout)."""

PENDING_BYTES = 16 << 20
"""Rows waiting to be written are written once they reach this many bytes."""

_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20
_COLUMN_CHUNK = 1024


def link_name(text: str) -> str:
    """The HDF5 link name for a stream or data name (see the module doc)."""
    escaped = text.replace("%", "%25").replace("/", "%2F")
    return {"": "%", ".": "%2E", "..": "%2E%2E"}.get(escaped, escaped)


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """How arrays of ``dtype`` are stored: as themselves if HDF5 has the type, else as HDF5
    opaque data tagged with the numpy dtype."""
    try:
        h5py.h5t.py_create(dtype, logical=True)
    except TypeError:
        return h5py.opaque_dtype(dtype)
    return dtype


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-able ({exc}); metadata must be JSON-able") from None


class _Column:
    """A resizable 1-D dataset with rows waiting to be written."""

    def __init__(self, group: h5py.Group, name: str, dtype: Any) -> None:
        self.ds = group.create_dataset(
            name, shape=(0,), maxshape=(None,), chunks=(_COLUMN_CHUNK,), dtype=dtype
        )
        self.pending: list[Any] = []

    def write(self) -> None:
        if self.pending:
            n = self.ds.shape[0]
            self.ds.resize((n + len(self.pending),))
            self.ds[n:] = self.pending
            self.pending = []


@dataclass
class _Stack:
    """``data/<name>``: the rows of one data name that share the first one's layout."""

    ds: h5py.Dataset
    kind: str
    dtype: np.dtype
    shape: tuple[int, ...]
    rows: int = 0
    pending: list[np.ndarray] = field(default_factory=list)

    def fits(self, kind: str, value: np.ndarray) -> bool:
        return (kind, value.dtype, value.shape) == (self.kind, self.dtype, self.shape)

    def write(self) -> None:
        if self.pending:
            n, count = self.ds.shape[0], len(self.pending)
            self.ds.resize((n + count, *self.shape))
            if count == 1:  # a large row is written at once, without a copy
                self.ds[n] = self.pending[0].view(self.ds.dtype)
            else:
                rows = np.empty((count, *self.shape), dtype=self.dtype)
                for j, value in enumerate(self.pending):
                    rows[j] = value  # np.stack would turn big-endian rows into native ones
                self.ds[n:] = rows.view(self.ds.dtype)
            self.pending = []


class _Port:
    """The group of one input port within one stream."""

    def __init__(self, group: h5py.Group, port: str, origin: str) -> None:
        self.group = group
        group.attrs["port"] = port
        group.attrs["origin"] = origin
        group.attrs["messages"] = 0
        group.attrs["last_id"] = 0
        self.columns = {
            "id": _Column(group, "id", np.int64),
            "seq": _Column(group, "seq", np.int64),
            "received": _Column(group, "received", np.float64),
            "metadata": _Column(group, "metadata", _STR),
            "timestamps": _Column(group, "timestamps", _STR),
            "items": _Column(group, "items", _STR),
        }
        self.data = group.create_group("data", track_order=True)
        self.stacks: dict[str, _Stack] = {}
        self.messages = 0
        self.last_id = 0

    def add(self, msg: beampipe.Message, seq: int, received: float, where: str) -> int:
        """Queue ``msg``; returns the bytes queued."""
        cols = self.columns
        metadata = _json(msg.metadata, f"{where}: the message metadata")
        timestamps = _json(msg.timestamps, f"{where}: the message timestamps")
        for name, value in msg.data.items():
            if isinstance(value, np.ndarray) and value.dtype.hasobject:
                raise TypeError(f"{where}: data {name!r} is an object array; it cannot be stored")
        items: list[list[Any]] = []
        queued = len(metadata) + len(timestamps)
        for name, value in msg.data.items():
            kind = "bytes" if isinstance(value, bytes) else "array"
            array = np.frombuffer(value, dtype=np.uint8) if kind == "bytes" else value
            stack = self.stacks.get(name) or self._new_stack(name, kind, array)
            if stack is not None and stack.fits(kind, array):
                items.append([name, stack.rows])
                stack.pending.append(array)
                stack.rows += 1
                if array.nbytes >= _CHUNK_BYTES:
                    stack.write()
                else:
                    queued += array.nbytes
            else:
                items.append([name, -1])
                group = self.group.require_group(f"per_message/{self.messages}")
                ds = group.create_dataset(
                    link_name(name), data=array.view(storage_dtype(array.dtype))
                )
                _describe(ds, name, kind, array.dtype)
        cols["id"].pending.append(msg.id)
        cols["seq"].pending.append(seq)
        cols["received"].pending.append(received)
        cols["metadata"].pending.append(metadata)
        cols["timestamps"].pending.append(timestamps)
        cols["items"].pending.append(json.dumps(items, ensure_ascii=False))
        self.messages += 1
        self.last_id = max(self.last_id, msg.id)
        return queued

    def _new_stack(self, name: str, kind: str, array: np.ndarray) -> _Stack | None:
        """``data/<name>`` for arrays like ``array``; None (per-message storage) for arrays
        with an empty dimension, which cannot be chunked."""
        if 0 in array.shape:
            return None
        rows = max(1, min(_COLUMN_CHUNK, _CHUNK_BYTES // max(1, array.nbytes)))
        ds = self.data.create_dataset(
            link_name(name),
            shape=(0, *array.shape),
            maxshape=(None, *array.shape),
            chunks=(rows, *array.shape),
            dtype=storage_dtype(array.dtype),
        )
        _describe(ds, name, kind, array.dtype)
        stack = self.stacks[name] = _Stack(ds, kind, array.dtype, array.shape)
        return stack

    def write(self) -> None:
        for column in self.columns.values():
            column.write()
        for stack in self.stacks.values():
            stack.write()
        self.group.attrs["messages"] = self.messages
        self.group.attrs["last_id"] = self.last_id


def _describe(ds: h5py.Dataset, name: str, kind: str, dtype: np.dtype) -> None:
    ds.attrs["name"] = name
    ds.attrs["kind"] = kind
    ds.attrs["dtype"] = dtype.str


@dataclass
class _Stream:
    group: h5py.Group
    ports: dict[str, _Port] = field(default_factory=dict)


class Recorder(beampipe.Worker):
    """Records every message it receives, and the stream starts and ends, into an HDF5 file.

    A sink: connect any output ports to it, each to an input port of its own name
    (``mu.out -> rec.mu_out``). Layout of the file: see the module doc (and
    ``docs/nodes.md``). Play it back with ``use: replay``. Streams may interleave; the order of
    arrival over the whole recording is kept (``seq``).

    Raises:
        TypeError: metadata or timestamps that are not JSON-able, or an object array (the
            message names stream and id); the node's ``on_error`` policy applies.
        KeyError: a message of a stream that was never started.
        OSError: the file cannot be created or written.
    """

    class Params(beampipe.Params):
        """``path``: the recording (``~`` expanded; relative to the working directory; an
        existing file is overwritten). ``flush_interval``: at most this many seconds between
        writes (>= 0; 0: write every message at once). ``origins``: ``{port: "node.port"}``,
        stored as each port group's ``origin`` (``beampipe record`` fills it in)."""

        path: beampipe.OutputPath
        flush_interval: float = Field(1.0, ge=0)
        origins: dict[str, str] = Field(default_factory=dict)

    params: Recorder.Params
    inputs: ClassVar[tuple[str, ...] | None] = None
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Recorder.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.path = Path(os.path.expanduser(params.path)).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file: h5py.File | None = h5py.File(self.path, "w")
        self.file.attrs["format"] = FORMAT
        self.file.attrs["version"] = VERSION
        self.file.attrs["beampipe_version"] = beampipe.__version__
        self.file.attrs["created"] = datetime.now(timezone.utc).isoformat()
        self.streams_group = self.file.create_group("streams", track_order=True)
        self._open: dict[str, _Stream] = {}
        self._seq = 0
        self._pending = 0
        self._last_write = time.monotonic()

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        """Create the stream's group with its metadata."""
        if stream in self._open:
            raise ValueError(f"{self.name}: stream {stream!r} started twice")
        text = _json(metadata, f"{self.name}: stream {stream!r}: the stream metadata")
        base = name = link_name(stream)
        k = 1
        while name in self.streams_group:
            k += 1
            name = f"{base}%#{k}"
        group = self.streams_group.create_group(name, track_order=True)
        self._seq += 1
        group.attrs["stream"] = stream
        group.attrs["start_seq"] = self._seq
        group.attrs["end_seq"] = -1
        group.attrs["ended"] = False
        group.create_dataset("metadata", data=text, dtype=_STR)
        group.create_group("ports", track_order=True)
        self._open[stream] = _Stream(group)

    def process(self, msg: beampipe.Message) -> None:
        """Queue the message's row; write what is waiting if due."""
        received = time.time()
        state = self._open.get(msg.stream)
        if state is None:
            raise KeyError(f"{self.name}: stream {msg.stream!r} was not started")
        port = state.ports.get(msg.port)
        if port is None:
            group = state.group["ports"].create_group(link_name(msg.port), track_order=True)
            port = state.ports[msg.port] = _Port(
                group, msg.port, self.params.origins.get(msg.port, "")
            )
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        self._pending += port.add(msg, self._seq + 1, received, where)
        self._seq += 1
        now = time.monotonic()
        if self._pending >= PENDING_BYTES or now - self._last_write >= self.params.flush_interval:
            self._write()

    def on_stream_end(self, stream: str) -> None:
        """Write the stream's rows and mark it ended."""
        state = self._open.pop(stream, None)
        if state is None:
            raise KeyError(f"{self.name}: stream {stream!r} was not started")
        for port in state.ports.values():
            port.write()
        self._seq += 1
        state.group.attrs["end_seq"] = self._seq
        state.group.attrs["ended"] = True
        assert self.file is not None
        self.file.flush()

    def checkpoint(self) -> None:
        """Write what is waiting and flush the file, so that what was received is on disk."""
        if self.file is not None:
            self._write()

    def close(self) -> None:
        """Write what is waiting and close the file (streams still open stay ``ended =
        False``)."""
        if self.file is None:
            return
        try:
            self._write()
        finally:
            self.file.close()
            self.file = None

    def _write(self) -> None:
        for state in self._open.values():
            for port in state.ports.values():
                port.write()
        assert self.file is not None
        self.file.flush()
        self._pending = 0
        self._last_write = time.monotonic()
