"""Replay of XDI (XAS Data Interchange) files as streams: ``use: xdi_replay``.

Each file becomes one stream (one scan), each data line one :class:`~beampipe.Message`, sent at the
scan's own pace or as fast as the pipeline takes them. This reproduces, offline, the point stream a
beamline produces live (Dranspose's "record and replay").

Two header dialects are read:

* XDI 1.0 (https://github.com/XraySpectroscopy/XAS-Data-Interchange): ``# Namespace.tag: value``
  fields, columns named by ``# Column.N: name [units]``.
* The files written by the PETRA III P65 control software: free-form ``# key = value unit`` lines,
  a ``# Scan started at DD-MM-YYYY hh:mm:ss, finished at ...`` line and the column names on the last
  comment line before the data (``#enc_energy mono_energy ... VFC01 VFC02 ...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

import beampipe
from beampipe.message import Item
from beampipe.nodes.files.base import FileReplay, NoFilesMatched

__all__ = ["NoFilesMatched", "XdiFormatError", "XdiReplay", "parse_header", "stream_name"]


class XdiFormatError(ValueError):
    """A line of an XDI file cannot be read; the message starts with ``path:line:``.

    Attributes:
        path: the file.
        line: 1-based line number (0 if the problem is not tied to a line).
    """

    def __init__(self, path: str | os.PathLike[str], line: int, problem: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


_XDI_FIELD = re.compile(r"^(?P<key>[A-Za-z_][\w-]*\.[\w-]+)\s*:\s*(?P<value>.*)$")
_EQ_FIELD = re.compile(r"^(?P<key>[^=]+?)\s*=\s*(?P<value>.*)$")
# "Channel 1: gain 1E07V/A", "DCM Crystal: Si111"; the colon must be followed by a space and the key
# hold no comma, so "Scan started at 22-11-2020 01:47:54, ..." and "..., see: https://..." are not.
_COLON_FIELD = re.compile(r"^(?P<key>[^:=,]+?):\s+(?P<value>.*)$")
_SCAN_TIMES = re.compile(
    r"^scan started at (?P<start>.+?)(?:,\s*finished at (?P<end>.+?))?\s*$", re.IGNORECASE
)
_BEAMLINE = re.compile(
    r"^(?P<facility>.+?)\s+(?:extension\s+)?beamline\s+(?P<beamline>\S+)\s*$", re.IGNORECASE
)
_MODE = re.compile(r"^XAS\b.*\bMODE$", re.IGNORECASE)
_SEPARATOR = re.compile(r"^[-=/*\s]*$")
_TIME_FORMATS = ("%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


def _is_data(line: str) -> bool:
    """Not blank and not a ``#`` comment."""
    stripped = line.lstrip()
    return bool(stripped) and not stripped.startswith("#")


def stream_name(path: str | os.PathLike[str]) -> str:
    """The stream name of a file: its name without the ``.xdi`` suffix (``a/b.00001.xdi`` ->
    ``b.00001``)."""
    name = Path(path).name
    return name[:-4] if name.lower().endswith(".xdi") else name


def _iso(text: str) -> str:
    """``22-11-2020 01:47:54`` (day first, as P65 writes it) or an ISO string -> ISO 8601; text in
    no known format is returned stripped."""
    text = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).isoformat()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        return text


def _field(fields: dict[str, str], *keys: str) -> str | None:
    """The value of the first of ``keys`` present in ``fields`` (case-insensitive)."""
    lowered = {k.lower(): v for k, v in fields.items()}
    for key in keys:
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def parse_header(comments: list[str], path: str | os.PathLike[str] = "") -> dict[str, Any]:
    """Interpret the comment lines before the data of an XDI file.

    Args:
        comments: the header lines with their leading ``#`` removed, in file order.
        path: the file, used for the title and in error messages.

    Returns:
        A JSON-able dict: ``columns`` (list of str, empty if the header names none), ``header``
        (the lines, stripped), ``fields`` (``{key: value}`` from ``key = value [unit]``,
        ``Namespace.tag: value`` and ``Key: value`` lines; value as written, unit included),
        ``start_time``, ``end_time`` (ISO 8601, local time as written; None if absent),
        ``beamline``, ``facility``, ``mono_crystal``, ``scan_mode``, ``title`` (str or None).

    Raises:
        XdiFormatError: the column names repeat a name.
    """
    header = [line.strip() for line in comments]
    fields: dict[str, str] = {}
    start = end = beamline = facility = mode = None
    for line in header:
        m = _XDI_FIELD.match(line) or _EQ_FIELD.match(line) or _COLON_FIELD.match(line)
        if m:
            fields.setdefault(m["key"].strip(), m["value"].strip())
        elif m := _SCAN_TIMES.match(line):
            start, end = _iso(m["start"]), _iso(m["end"]) if m["end"] else None
        elif m := _BEAMLINE.match(line):
            facility, beamline = m["facility"], m["beamline"]
        elif mode is None and _MODE.match(line):
            mode = line

    columns = _column_names(header, fields)
    if len(set(columns)) != len(columns):
        dups = sorted({c for c in columns if columns.count(c) > 1})
        raise XdiFormatError(path, 0, f"column names repeat: {', '.join(dups)}")

    stem = stream_name(path) if path else ""
    title = f"{stem} ({mode})" if stem and mode else (stem or mode)
    return {
        "columns": columns,
        "header": header,
        "fields": fields,
        "start_time": start or _opt_iso(_field(fields, "Scan.start_time")),
        "end_time": end or _opt_iso(_field(fields, "Scan.end_time")),
        "beamline": beamline or _field(fields, "Beamline.name"),
        "facility": facility or _field(fields, "Facility.name"),
        "mono_crystal": _field(fields, "DCM Crystal", "Mono.name"),
        "scan_mode": mode,
        "title": title or None,
    }


def _opt_iso(text: str | None) -> str | None:
    return _iso(text) if text else None


def _column_names(header: list[str], fields: dict[str, str]) -> list[str]:
    """XDI ``Column.N: name [units]`` fields if present, else the words of the last header line
    (unless that line is a separator, a field or empty: then no names, ``[]``)."""
    numbered: dict[int, str] = {}
    for key, value in fields.items():
        ns, _, n = key.partition(".")
        if ns.lower() == "column" and n.isdigit() and value.split():
            numbered[int(n)] = value.split()[0]
    if numbered:
        return [numbered[n] for n in sorted(numbered)]
    if not header:
        return []
    last = header[-1]
    if _SEPARATOR.match(last) or _XDI_FIELD.match(last) or _EQ_FIELD.match(last):
        return []
    return last.split()


class XdiReplay(FileReplay):
    """Replays XDI files: one stream per file, one message per data line.

    Streams, in the order of ``paths`` (the matches of each pattern sorted by path, a file matched
    twice replayed once):

    * :class:`~beampipe.StreamStart` named after the file (:func:`stream_name`, e.g.
      ``20K_GOE_Fe_K_240.00000``), metadata = :func:`parse_header`'s dict plus ``file`` (absolute
      path) and ``n_points`` (number of data lines).
    * One :class:`~beampipe.Message` per data line, ids 1..n: ``data`` maps every column name to a
      0-d float64 array (units as in the file; at P65 ``enc_energy`` in eV, ``time_pp`` in s, the
      ``VFC0n`` counters in arbitrary units); ``metadata`` is ``{}``. Lines starting with ``#``
      and blank lines in the data section are skipped. Columns without a name in the header are
      called ``col1``, ``col2``, ...
    * :class:`~beampipe.EndOfStream` with ``last_id = n`` and ``next_stream`` = the next file's
      stream (None after the last file).

    A file is read when its stream begins; its lines are parsed and sent one at a time, so a bad
    line stops the replay only when it is reached.

    Pacing (``pace``): ``"max"`` sends as fast as downstream takes messages; ``"realtime"`` waits
    ``time_column / speedup`` seconds before each message after the first of a stream (the point's
    own acquisition time: it became available that long after the previous one); a number sends at
    that rate in Hz (``speedup`` is ignored). Waits follow a deadline schedule on a monotonic
    clock (``self.pacer``, a :class:`~beampipe.nodes.pacing.Pacer`), so time spent downstream is
    not added to them; after a backpressure stall the replay catches up, as a buffering detector
    would. Negative or non-finite times count as 0.

    Raises (from the constructor):
        NoFilesMatched: a pattern matches no file (also a ``FileNotFoundError`` and ``ValueError``).
        ValueError: two files would give the same stream name.

    Raises (from :meth:`generate`):
        XdiFormatError: a data line has the wrong number of columns or a value that is not a
            number (``path:line: expected 16 columns, found 15``); ``pace: realtime`` and the
            file has no ``time_column``; duplicate column names.
        OSError: a file cannot be read.
    """

    class Params(FileReplay.Params):
        """``paths``: glob patterns (``**`` recursive; ``~`` expanded), or one pattern as a string;
        relative ones are taken relative to the pipeline file's folder. ``pace``: ``"max"``,
        ``"realtime"`` or a rate in Hz (at least 0.001). ``speedup`` (at least 0.001) divides
        the realtime waits.
        ``time_column``: the column holding each point's acquisition time in seconds."""

        time_column: str = "time_pp"

    params: XdiReplay.Params

    stream_name = staticmethod(stream_name)

    def replay(self, path: Path, stream: str) -> Generator[Item, None, int]:
        """The StreamStart and the messages of one file (see the class doc); returns n."""
        p = self.params
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")

        data_lines = [i for i, line in enumerate(lines) if _is_data(line)]
        first = data_lines[0] if data_lines else len(lines)
        comments = [line.lstrip()[1:] for line in lines[:first] if line.lstrip().startswith("#")]
        meta = parse_header(comments, path)
        columns: list[str] = meta["columns"]
        if not columns and first < len(lines):
            columns = meta["columns"] = [f"col{j + 1}" for j in range(len(lines[first].split()))]
        meta = {"file": str(path), **meta, "n_points": len(data_lines)}

        tcol = -1  # the time column, for pace: realtime
        if p.pace == "realtime":
            if p.time_column not in columns:
                raise XdiFormatError(
                    path,
                    0,
                    f"pace 'realtime' needs time column {p.time_column!r}; "
                    f"columns: {', '.join(columns)}",
                )
            tcol = columns.index(p.time_column)

        yield beampipe.StreamStart(stream=stream, metadata=meta)
        ncol = len(columns)
        msg_id = 0
        for i in data_lines:
            values = self._parse(path, i + 1, lines[i], columns, ncol)
            msg_id += 1
            self.wait(float(values[tcol]) if tcol >= 0 else None)
            yield beampipe.Message(
                data=dict(zip(columns, values, strict=True)), stream=stream, id=msg_id
            )
        return msg_id

    @staticmethod
    def _parse(path: Path, lineno: int, line: str, columns: list[str], ncol: int) -> list[Any]:
        tokens = line.split()
        if len(tokens) != ncol:
            raise XdiFormatError(path, lineno, f"expected {ncol} columns, found {len(tokens)}")
        values = []
        for j, token in enumerate(tokens):
            try:
                values.append(np.array(float(token)))
            except ValueError:
                raise XdiFormatError(
                    path, lineno, f"column {j + 1} ({columns[j]}): {token!r} is not a number"
                ) from None
        return values
