"""How image files group into streams (``stream_by``), and their order within a stream.

* ``"file"``: one stream per file, named after the file without its last suffix
  (``scan_0001_master.h5`` -> ``scan_0001_master``).
* ``"folder"``: one stream per folder, named after the folder; its files in name order.
* a pattern of the file name in Python format syntax, such as ``"{scan}_{frame:05d}.cbf"``:
  the fields other than ``frame`` name the stream (their values joined by ``_``), ``frame``
  orders the files within it (by its number, then by name). A field ``{name:Nd}`` (or
  ``{name:0Nd}``) matches N digits, ``{name:d}`` one or more digits, ``{name}`` any text
  (shortest first).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Grouping", "Placed"]

FRAME = "frame"
"""The pattern field that orders the files of a stream."""


@dataclass(frozen=True)
class Placed:
    """Where a file goes: its stream, its order key within the stream, the pattern's fields."""

    stream: str
    order: tuple[int, str]
    fields: dict[str, str]


class Grouping:
    """The ``stream_by`` rule (see the module doc).

    Raises (from the constructor):
        ValueError: the pattern is not valid format syntax, repeats a field, or has no field
            other than ``frame`` to name the stream.
    """

    def __init__(self, stream_by: str) -> None:
        self.stream_by = stream_by
        self.regex: re.Pattern[str] | None = None
        self.names: list[str] = []
        if stream_by not in ("file", "folder"):
            self.regex, self.names = _compile(stream_by)

    def place(self, path: Path) -> Placed | None:
        """Where ``path`` goes; None if its name does not fit the pattern."""
        if self.stream_by == "file":
            return Placed(path.stem, (0, path.name), {})
        if self.stream_by == "folder":
            return Placed(path.parent.name, (0, path.name), {})
        assert self.regex is not None
        match = self.regex.fullmatch(path.name)
        if match is None:
            return None
        fields = match.groupdict()
        stream = "_".join(fields[n] for n in self.names if n != FRAME)
        number = fields.get(FRAME)
        order = int(number) if number is not None and number.isdigit() else 0
        return Placed(stream, (order, path.name), fields)


def _compile(pattern: str) -> tuple[re.Pattern[str], list[str]]:
    """The regular expression of a format-syntax file name pattern, and its field names."""
    parts: list[str] = []
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"stream_by pattern {pattern!r}: {exc}") from None
    for literal, name, spec, _conversion in parsed:
        parts.append(re.escape(literal))
        if name is None:
            continue
        if not name.isidentifier() or name in names:
            raise ValueError(
                f"stream_by pattern {pattern!r}: field {{{name}}} must be a distinct name "
                "(letters, digits, _)"
            )
        names.append(name)
        digits = re.fullmatch(r"0?(\d*)d", spec or "")
        if digits:
            width = digits.group(1)
            body = rf"\d{{{width}}}" if width else r"\d+"
        elif spec:
            raise ValueError(
                f"stream_by pattern {pattern!r}: field {{{name}:{spec}}}: only d, Nd or 0Nd "
                "formats are understood"
            )
        else:
            body = r".+?"
        parts.append(f"(?P<{name}>{body})")
    if not [n for n in names if n != FRAME]:
        raise ValueError(
            f"stream_by pattern {pattern!r} has no field naming the stream: add one besides "
            f"{{{FRAME}}}, e.g. '{{scan}}_{{frame:05d}}.cbf'"
        )
    return re.compile("".join(parts)), names
