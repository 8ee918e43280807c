"""NeXus/HDF5 sink: ``use: nexus_writer`` (https://manual.nexusformat.org/).

One NXentry per stream in the master file ``path``; each input port of the node becomes one
NXdata group of the entry, stored in its own HDF5 file written in SWMR mode and linked into the
master, so the data can be read while the scan runs. Layout, reader procedure and NXxas status:
docs/nexus.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import h5py
from pydantic import Field

import beampipe
from beampipe.nodes.nexus.azint import AzintLayout, AzintParams, azint_layout, write_azint
from beampipe.nodes.nexus.columns import metadata_columns
from beampipe.nodes.nexus.compression import Compression, filter_options
from beampipe.nodes.nexus.files import GroupFile
from beampipe.nodes.nexus.fluo import FluoParams, add_fluo
from beampipe.nodes.nexus.master import edit_master
from beampipe.nodes.nexus.meta import (
    new_group,
    nexus_name,
    put,
    unique_name,
    write_entry_header,
    write_warnings,
    write_xas,
)
from beampipe.nodes.nexus.process import write_process
from beampipe.nodes.nexus.xasproc import write_xasproc

__all__ = [
    "AzintParams",
    "FluoParams",
    "GroupParams",
    "NexusWriter",
    "XasParams",
    "XasprocParams",
]

XasMode = Literal[
    "Transmission",
    "Fluorescence Yield",
    "Total Electron Yield",
    "Partial Electron Yield",
    "Auger Electron Yield",
]


class GroupParams(beampipe.Params):
    """How one input port is written (``groups: {port: {...}}``).

    ``mode``: ``append`` (each message adds a row) or ``replace`` (each message overwrites).
    ``signal`` and ``axes`` override the ``signal``/``axes`` of the message metadata.
    ``compression``: of the group's arrays (not of 0-d values): ``none``, ``bitshuffle_lz4``
    or ``lz4`` (HDF5 filters of hdf5plugin, ``beampipe[hdf5]``) or ``gzip``.
    ``fixed``: append mode: data names whose value is the same in every message of a stream
    (an axis): stored once, not per message; a message with other values is an error.
    ``metadata``: metadata items (numbers; a dotted key looks into a dict: ``positions.samx``)
    stored as data of every message, named by the key's last part (``samx``): e.g. each
    spectrum's motor positions and monitor counts beside its fit.
    """

    mode: Literal["append", "replace"] = "append"
    signal: str | None = None
    axes: list[str] | None = None
    compression: Compression = "none"
    fixed: list[str] = Field(default_factory=list)
    metadata: list[str] = Field(default_factory=list)


class XasParams(beampipe.Params):
    """The NXxas view (an NXsubentry ``xas``): the append-mode ``port`` whose messages carry
    ``energy`` (eV), ``incoming_beam`` (I0) and ``absorbed_beam`` (the sample signal: It in
    transmission, If in fluorescence) as data names; ``mode`` is NXxas's detection mode."""

    port: str = "points"
    energy: str = "energy"
    incoming_beam: str = "i0"
    absorbed_beam: str = "it"
    mode: XasMode = "Transmission"


class XasprocParams(beampipe.Params):
    """The NXxasproc view (an NXsubentry ``xasproc``): the replace-mode ``port`` whose messages
    carry the processed spectrum, ``energy`` (eV) and ``data`` (e.g. ``xas.normalize``'s
    ``norm``) as data names; the message metadata ``process`` names program, version and
    parameters."""

    port: str = "normalized"
    energy: str = "energy"
    data: str = "norm"


@dataclass
class _Stream:
    """An open stream: its entry in the master and the group files of its ports."""

    entry: str
    meta: dict[str, Any]
    groups: dict[str, GroupFile] = field(default_factory=dict)
    resumed: bool = False
    """The entry was written by a process that died: its group files are resumed."""

    def default_with(self, group: GroupFile) -> str:
        """The group to plot once ``group`` is added: the first replace-mode group, else the
        first group."""
        groups = [*self.groups.values(), group]
        return next((g.name for g in groups if g.mode == "replace"), groups[0].name)


class NexusWriter(beampipe.Worker):
    """Writes every stream into a NeXus file, one NXentry per stream.

    Master file ``path`` (created, with its parent directories, at the first stream; an existing
    file is overwritten): NXroot (``default`` = the first entry) with, per stream, an NXentry
    named after the stream (made a valid NeXus name: ``20K_GOE.00000`` ->
    ``entry_20K_GOE_00000``; ``_2``, ``_3`` ... appended if taken) holding ``title``,
    ``entry_identifier`` (the stream name), ``start_time``/``end_time``, NXinstrument, NXsample,
    the NXcollection ``metadata`` (the whole stream metadata; the raw header as NXnote) and one
    NXdata per input port, named after the port. ``default`` of the entry names the first
    replace-mode group, else the first group.

    Each port's NXdata lives in ``<path stem>_data/<entry>/<port>.h5`` (linked into the entry by
    an HDF5 external link), created at the port's first message in the stream and then written
    in SWMR mode (see :class:`~beampipe.nodes.nexus.files.GroupFile` for the append and
    replace modes and the ``id`` dataset). ``signal``/``axes`` come from ``groups`` or the first
    message's metadata; ``units`` from ``metadata["units"]`` (``{data name: unit}``).

    Written data is flushed (made visible to SWMR readers) at the first message after
    ``flush_interval`` seconds since the last flush, at each :meth:`checkpoint`, at the end of
    the stream and on :meth:`close`; the stream's group files are closed at its end.

    After a crash (``restart: on-failure``) the restarted writer resumes: it keeps the master
    file, and a stream whose entry exists goes on in that entry, its group files reopened
    (:meth:`GroupFile.resume`) and the messages already in them skipped, so every message is
    written exactly once.

    When the disk is full, the write fails before its rows get ids: the group file keeps the
    rows flushed before and is closed, readable by any reader, and the error (raised again by
    every later :meth:`checkpoint`, so nothing after it is acknowledged) names the file, the
    free space needed and the free space there is; a master edit that would not fit leaves the
    master as it was (docs/nexus.md, "When the disk is full").

    Raises:
        TypeError: message data that is bytes or not numeric.
        ImportError: a group's ``compression`` needs hdf5plugin, which is not installed (when
            the node is created).
        ValueError: a stream started twice; a message whose data names, shapes or ranks do not
            fit the port's first message.
        KeyError: a message or end of a stream that was never started.
        OSError: a file cannot be written (``errno`` ENOSPC when the disk is full); the text
            names the file and the free space needed.
    """

    class Params(beampipe.Params):
        """``path``: the master file (``~`` expanded; relative to the working directory).
        ``groups``: per input port, :class:`GroupParams`.
        ``flush_interval``: seconds between flushes (>= 0; 0 = after every message).
        ``stream_metadata``: defaults for every stream's metadata (e.g. ``source_type``,
        ``monitor_mode``); the stream's own items win. ``xas``: the NXxas view, or None for
        none. ``xasproc``: the NXxasproc view, or None for none. ``azint``: the NXazint1d /
        NXazint2d view of azimuthally integrated patterns, or None for none. ``fluo``: the
        NXfluo view of fitted XRF spectra, None (the default) for none."""

        path: beampipe.OutputPath
        groups: dict[str, GroupParams] = Field(default_factory=dict)
        flush_interval: float = Field(0.5, ge=0)
        stream_metadata: dict[str, Any] = Field(default_factory=dict)
        xas: XasParams | None = Field(default_factory=XasParams)
        xasproc: XasprocParams | None = Field(default_factory=XasprocParams)
        azint: AzintParams | None = Field(default_factory=AzintParams)
        fluo: FluoParams | None = None

    params: NexusWriter.Params
    inputs: ClassVar[tuple[str, ...] | None] = None
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: NexusWriter.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.path = Path(os.path.expanduser(params.path)).absolute()
        for spec in params.groups.values():
            filter_options(spec.compression)  # hdf5plugin missing: fail when the node starts
        self.data_dir = self.path.with_name(f"{self.path.stem}_data")
        self._streams: dict[str, _Stream] = {}
        self._entries: list[str] = []
        self._existing: dict[str, str] | None = None
        """After a restart: ``{stream: entry}`` of the entries in the master file."""
        self._last_flush = time.monotonic()

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        """Add the stream's NXentry to the master file (creating the file at the first stream)."""
        if stream in self._streams:
            raise ValueError(f"{self.name}: stream {stream!r} started twice")
        if self.restarts and self._existing is None and self.path.exists():
            with h5py.File(self.path, "r") as f:
                self._entries = list(f)
                self._existing = {
                    f[e]["entry_identifier"][()].decode(): e
                    for e in f
                    if "entry_identifier" in f[e]
                }
        if self._existing and stream in self._existing:
            entry = self._existing.pop(stream)
            self._streams[stream] = _Stream(entry=entry, meta=dict(metadata), resumed=True)
            return
        if not self._entries:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        name = unique_name(nexus_name(stream, "entry"), self._entries)
        meta = {**self.params.stream_metadata, **metadata}
        with edit_master(self.path, create=not self._entries) as f:
            entry = new_group(f, name, "NXentry")
            put(entry, "program_name", "beampipe")
            entry["program_name"].attrs["version"] = beampipe.__version__
            write_entry_header(entry, stream, meta)
            f.attrs.setdefault("default", name)
        self._entries.append(name)
        self._streams[stream] = _Stream(entry=name, meta=meta)

    def process(self, msg: beampipe.Message) -> None:
        """Append or replace the message's data in its port's group; flush if due."""
        state = self._stream(msg.stream)
        spec = self.params.groups.get(msg.port)
        if spec is not None and spec.metadata:
            msg = msg.replace(data={**msg.data, **metadata_columns(msg, spec.metadata)})
        group = state.groups.get(msg.port) or self._open_group(state, msg)
        group.write(msg)
        now = time.monotonic()
        if now - self._last_flush >= self.params.flush_interval:
            self._flush_all()
            self._last_flush = now

    def checkpoint(self) -> None:
        """Flush every open group file: what was processed is then in the files.

        Raises:
            OSError: a group file could not be written, now or at an earlier flush.
        """
        self._flush_all()
        self._last_flush = time.monotonic()

    def on_stream_end(self, stream: str) -> None:
        """Flush and close the stream's group files (they stop being SWMR files); store the
        warnings the pipeline's nodes noted while handling the stream, if any, in the entry's
        NXnote ``warnings`` (:func:`~beampipe.nodes.nexus.meta.write_warnings`)."""
        state = self._stream(stream)
        del self._streams[stream]
        _close_all(state.groups.values())
        warnings = self.stream_warnings(stream)
        if warnings:
            with edit_master(self.path) as f:
                write_warnings(f[state.entry], warnings)

    def close(self) -> None:
        """Flush and close the group files of all open streams."""
        streams, self._streams = list(self._streams.values()), {}
        for state in streams:
            _close_all(state.groups.values())

    def _stream(self, stream: str) -> _Stream:
        try:
            return self._streams[stream]
        except KeyError:
            raise KeyError(f"{self.name}: stream {stream!r} was not started") from None

    def _open_group(self, state: _Stream, msg: beampipe.Message) -> GroupFile:
        """Create the port's group file and link it into the entry (one master edit)."""
        spec = self.params.groups.get(msg.port, GroupParams())
        name = nexus_name(msg.port, "data")
        path = self.data_dir / state.entry / f"{name}.h5"
        if state.resumed and path.exists():
            group = GroupFile.resume(path, name, msg, spec.mode)
            state.groups[msg.port] = group
            return group
        group: GroupFile | None = None
        azint = azint_layout(msg, self.params.azint) if spec.mode == "append" else None
        fixed = frozenset(spec.fixed) | (azint.axes if azint else frozenset())
        try:
            with edit_master(self.path) as f:
                entry = f[state.entry]
                name = unique_name(nexus_name(msg.port, "data"), entry)
                path = self.data_dir / state.entry / f"{name}.h5"
                group = GroupFile(
                    *(path, name, msg, spec.mode, *self._plot(spec, msg.metadata)),
                    spec.compression,
                    fixed=fixed,
                    attributes=azint.attributes() if azint else None,
                )
                link = os.path.relpath(path, self.path.parent)
                entry[name] = h5py.ExternalLink(link, f"/entry/{name}")
                for image in group.images:  # one NXdata per element map, for viewers
                    entry[unique_name(image, entry)] = h5py.ExternalLink(link, f"/entry/{image}")
                entry.attrs["default"] = state.default_with(group)
                self._add_xas(entry, state, msg.port, group, link)
                add_fluo(entry, self.params.fluo, msg, group, link, state.meta)
                self._add_azint(entry, state, msg, group, link, azint)
                viewed = self._add_xasproc(entry, state, msg, group, link)
                viewed = viewed or (azint is not None and azint.long_name is not None)
                process = msg.metadata.get("process")
                if isinstance(process, dict) and not viewed:  # the view's NXprocess holds it
                    write_process(entry, name, process, h5py.ExternalLink(link, f"/entry/{name}"))
        except BaseException:
            if group is not None:
                group.close()
            raise
        state.groups[msg.port] = group
        return group

    @staticmethod
    def _plot(spec: GroupParams, metadata: dict[str, Any]) -> tuple[str | None, list[str] | None]:
        signal = spec.signal or metadata.get("signal")
        axes = spec.axes or metadata.get("axes")
        if isinstance(axes, str):
            axes = [axes]
        signal = signal if isinstance(signal, str) else None
        axes = list(map(str, axes)) if isinstance(axes, list) else None
        return signal, axes

    def _add_xas(
        self, entry: h5py.Group, state: _Stream, port: str, group: GroupFile, link: str
    ) -> None:
        xas = self.params.xas
        keys = ("energy", "incoming_beam", "absorbed_beam")
        if xas is None or port != xas.port or group.mode != "append":
            return
        if not all(getattr(xas, k) in group.names for k in keys):
            return
        names = {k: group.columns[getattr(xas, k)] for k in keys} | {"mode": xas.mode}
        write_xas(entry, link, f"/entry/{group.name}", names, group.signal, state.meta)

    def _add_xasproc(
        self, entry: h5py.Group, state: _Stream, msg: beampipe.Message, group: GroupFile, link: str
    ) -> bool:
        """Add the NXxasproc view if ``msg``'s port is ``xasproc.port``; whether it was."""
        proc = self.params.xasproc
        if proc is None or msg.port != proc.port or group.mode != "replace":
            return False
        if not (proc.energy in group.names and proc.data in group.names):
            return False
        process = msg.metadata.get("process")
        names = {"energy": group.columns[proc.energy], "data": group.columns[proc.data]}
        process = process if isinstance(process, dict) else {}
        write_xasproc(entry, link, f"/entry/{group.name}", names, process, state.meta)
        return True

    @staticmethod
    def _add_azint(
        entry: h5py.Group,
        state: _Stream,
        msg: beampipe.Message,
        group: GroupFile,
        link: str,
        azint: AzintLayout | None,
    ) -> None:
        if azint is None or azint.long_name is None:
            return
        process = msg.metadata.get("process")
        process = process if isinstance(process, dict) else {}

        def target(name: str) -> h5py.ExternalLink:
            return h5py.ExternalLink(link, f"/entry/{group.name}/{group.columns[name]}")

        write_azint(entry, group.name, target, azint, process, state.meta)

    def _flush_all(self) -> None:
        for state in self._streams.values():
            for group in state.groups.values():
                group.flush()


def _close_all(groups: Any) -> None:
    """Close every group file, even if closing one fails (the first error is raised)."""
    error: BaseException | None = None
    for group in groups:
        try:
            group.close()
        except Exception as exc:  # keep closing the others
            error = error or exc
    if error is not None:
        raise error
