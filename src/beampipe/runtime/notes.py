"""What a node must tell the user at the end of the run: its warnings, drops and non-finite data.

A *note* is one distinct thing that went wrong without stopping the node:

* a Python warning raised inside the node (``warnings.warn``, numpy's floating-point warnings
  such as ``RuntimeWarning: Mean of empty slice``), keyed by category and place
  (file:line), as Python's own "default" warning action de-duplicates them;
* a ``logging`` record at WARNING or above, keyed by logger and place;
* an input dropped by the node's own code (:meth:`beampipe.Worker.dead_letter`) or skipped
  after an error (``on_error: skip``), keyed by the reason's exception type (or text);
* NaN or infinite values in a floating-point array the node sent, keyed by the data name.

:class:`NoteLog` counts each note under its key, keeping the first text and the stream and id
being handled when it first happened; the node sends :meth:`NoteLog.snapshot` with its metrics
(``NodeMetrics.notes``), so the launcher can list every distinct note with its count at the end
of the run. Per stream the log also keeps what happened while that stream's messages were
handled (:meth:`NoteLog.end_stream`); the end-of-stream marker carries it downstream, so a sink
such as the NeXus writer can store the warnings of a scan in the scan's entry.

A warning or log record is printed to the node's log (its standard error) the first time its
key is seen; later ones are only counted, so a warning per frame does not flood the log.
"""

from __future__ import annotations

import cmath
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_BYTES = np.dtype("S1")
"""The kind of data that is not an array (``bytes``): not checked."""

MAX_NOTES = 100
"""Distinct notes kept per node (and per stream); later new keys count under ``other``."""
OTHER = "other"


class NoteLog:
    """The notes of one node replica.

    Attributes:
        stream, msg_id: the stream and message id the node handles now (set by the runtime
            before each worker call); a note is attributed to them.
        warnings: warnings and log records counted so far.
        changed: a note was added since the last :meth:`snapshot`.
    """

    def __init__(self) -> None:
        self.notes: dict[str, list[Any]] = {}
        self.streams: dict[str, dict[str, list[Any]]] = {}
        self.stream: str | None = None
        self.msg_id: int | None = None
        self.warnings = 0
        self.changed = False
        self._show = warnings.showwarning
        self._installed = False

    def add(
        self,
        key: str,
        text: str,
        count: int = 1,
        where: tuple[str | None, int | None] | None = None,
    ) -> bool:
        """Count ``count`` occurrences of note ``key`` (``text`` describes the first) at
        ``where`` = (stream, id), by default the ones handled now; True if the key is new."""
        stream, msg_id = where or (self.stream, self.msg_id)
        self.changed = True
        new = key not in self.notes
        if new and len(self.notes) >= MAX_NOTES:
            key, text, new = OTHER, "further kinds of warning (see the node's log)", False
            self.notes.setdefault(OTHER, [text, 0, stream, msg_id])
        if new:
            self.notes[key] = [text, count, stream, msg_id]
        else:
            self.notes[key][1] += count
        if stream is not None:
            mine = self.streams.setdefault(stream, {})
            if key in mine:
                mine[key][1] += count
            elif len(mine) < MAX_NOTES:
                mine[key] = [text, count]
        return new

    def snapshot(self) -> dict[str, list[Any]]:
        """``{key: [first text, count, stream, id]}`` (a copy, msgpack-able)."""
        self.changed = False
        return {key: list(value) for key, value in self.notes.items()}

    def end_stream(self, stream: str) -> dict[str, list[Any]]:
        """The notes of ``stream`` (``{key: [first text, count]}``), forgotten here."""
        return self.streams.pop(stream, {})

    # -- what is captured ----------------------------------------------------------------------

    def install(self) -> None:
        """Capture Python warnings and ``logging`` records at WARNING and above from now on, in
        this process. Every warning is counted (the ``always`` action), except the categories
        Python ignores by default (deprecation, import and resource warnings), unless the
        process was started with ``-W`` or ``PYTHONWARNINGS``."""
        if self._installed:
            return
        self._installed = True
        if not sys.warnoptions:
            warnings.simplefilter("always")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
                warnings.simplefilter("ignore", category)
            warnings.simplefilter("ignore", ResourceWarning)
        warnings.showwarning = self._warning
        root = logging.getLogger()
        root.addHandler(_Handler(self))
        if root.level > logging.WARNING:
            root.setLevel(logging.WARNING)

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Capture Python warnings and ``logging`` records at WARNING and above while the block
        runs (:mod:`beampipe.testing`; a node process captures all the time, :meth:`install`).
        The warning filters in force stay: one that turns a warning into an error still does;
        a warning that no filter catches is counted each time (the ``always`` action). The first
        of each kind is also shown as it would have been without the capture."""
        root = logging.getLogger()
        handler, level = _Handler(self), root.level
        with warnings.catch_warnings():
            warnings.filterwarnings("always", append=True)
            warnings.showwarning = self._warning
            root.addHandler(handler)
            root.setLevel(min(level, logging.WARNING))
            try:
                yield
            finally:
                root.removeHandler(handler)
                root.setLevel(level)

    def _warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        self.warnings += 1
        place = f"{_short(filename)}:{lineno}"
        text = f"{category.__name__}: {message} ({place})"
        if self.add(f"warning:{category.__name__}:{place}", text):
            self._show(message, category, filename, lineno, file, line)

    def record(self, record: logging.LogRecord) -> None:
        """A ``logging`` record at WARNING or above."""
        self.warnings += 1
        place = f"{_short(record.pathname)}:{record.lineno}"
        text = f"{record.levelname} {record.name}: {record.getMessage()} ({place})"
        if self.add(f"log:{record.name}:{place}", text):
            print(f"{record.levelname} {record.name}: {record.getMessage()}", file=sys.stderr)

    # -- non-finite values ---------------------------------------------------------------------

    def count_nonfinite(self, data: dict[str, Any], stream: str, msg_id: int) -> int:
        """NaN and infinite values in the floating-point (and complex) arrays of ``data`` (a
        message of ``stream`` with id ``msg_id``), each data name with any noted; integer
        arrays and bytes are skipped.

        Cost: one pass over each float array, its sum of squares (a NaN or inf makes it NaN or
        inf; BLAS's dot product, about 65 µs for 4 MiB of float32 on one core), and an exact
        count only where that is not finite (``bench/nonfinite.py`` measures it).
        """
        total = 0
        for name, value in data.items():
            kind = getattr(value, "dtype", _BYTES).kind
            if kind != "f" and kind != "c":
                continue
            if not value.shape:  # a scan point's scalars: cheaper than numpy's reductions
                if math.isfinite(value) if kind == "f" else cmath.isfinite(value.item()):
                    continue
                bad = 1
            else:
                with np.errstate(all="ignore"):
                    if np.isfinite(_square_sum(value)):
                        continue
                    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:  # a finite sum can overflow to inf: then nothing is wrong with the data
                total += bad
                text = f"NaN or infinite values in {name!r}"
                self.add(f"nonfinite:{name}", text, bad, (stream, msg_id))
        return total


def _square_sum(value: np.ndarray) -> Any:
    """The sum of ``|value|²``: not finite if a value is NaN or infinite (or so large that its
    square overflows). BLAS ``dot`` for float32/64 and complex64/128 (``numpy.vdot``), else
    numpy's ``sum``."""
    if value.dtype.char in "fdFD":
        flat = value.reshape(-1)
        return np.vdot(flat, flat)
    return value.sum()


class _Handler(logging.Handler):
    def __init__(self, log: NoteLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.record(record)


def _short(filename: str) -> str:
    """An installed module's path from its package on (``numpy/lib/_nanfunctions_impl.py``),
    else the file's name."""
    parts = Path(filename).parts
    for folder in ("site-packages", "dist-packages"):
        if folder in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(folder) :])
    return Path(filename).name
