"""Summarise ``py-spy record --format raw`` profiles (collapsed stacks) as text.

    python bench/pyspy_summary.py PROFILE.txt [PROFILE.txt ...] [--top 25] [--rate 100]

For each file: the samples (and, given the sampling ``--rate`` and the process's run time, the
fraction of one core it used — py-spy without ``--idle`` drops samples of a thread that waits in
the OS, so the samples are CPU time), then the functions by *self* samples (the leaf frame) and
by *inclusive* samples (anywhere on the stack, counted once per sample), as ``function
(file:line)`` without the line of the call site for inclusive counts.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _name(frame: str, with_line: bool) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    where = _short(m["file"])
    if with_line and m["line"]:
        where += f":{m['line']}"
    return f"{m['func']} ({where})"


def summarise(
    path: Path, top: int = 25
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, [(function, self samples)], [(function, inclusive samples)])."""
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("thread (", "process "))]
        total += n
        if not frames:
            continue
        self_counts[_name(frames[-1], True)] += n
        for name in {_name(f, False) for f in frames}:
            incl[name] += n
    return total, self_counts.most_common(top), incl.most_common(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        total, top_self, top_incl = summarise(path, args.top)
        print(f"== {path.name}: {total} samples")
        print("  self:")
        for name, n in top_self:
            print(f"    {100 * n / total:5.1f} %  {name}")
        print("  inclusive:")
        for name, n in top_incl:
            print(f"    {100 * n / total:5.1f} %  {name}")
        print()


if __name__ == "__main__":
    main()
