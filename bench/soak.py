"""Soak test: does the resident memory of any process grow while a pipeline streams for an hour?

    python bench/soak.py [--duration 3600] [--warmup 300] [--interval 10] [--window 60]
                         [--out soak.json|soak.csv] [--rate max|HZ] [--shape 1024 1024]
                         [--frames-per-stream 500] [--pool 8] [--sums-only] [--folder DIR]
                         [--rev HEAD | --live-src]

The pipeline (written with a copy of ``bench_nodes.py`` into a temporary folder and run by
:class:`beampipe.launch.Launcher` with its defaults, in this process)::

    det:   detector_sim   uint16 frames of --shape (1024 x 1024 = 2 MiB) at --rate: max (the
                          default: as fast as the pipeline takes them) or a number of Hz
                          (500 Hz x 2 MiB = 1.05 GB/s, more than the 2 shared cores of
                          docs/benchmarks.md reached through the writer); streams of
                          --frames-per-stream frames named soak_00001, soak_00002, ...
    work:  bench_nodes:FrameSum, replicas: 2 (round robin): the frame's sum, sent on with
                          the frame itself
    nexus: nexus_writer   the frames and sums of every stream, appended to
                          FOLDER/soak_data/<stream>/frames.h5; one NXentry per stream in the
                          master file FOLDER/soak.nxs

What the soak writes, and why. An hour at about 1 GB/s is 3.6 TB, more than the disk holds, so
the frames are cut into streams (acquisition series) of ``--frames-per-stream`` frames (500 x
2 MiB = 1 GiB) and this script deletes a stream's group file as soon as the writer reports the
stream finished (the launcher observer's ``stream_end`` of node ``nexus``). The writer still
does all of its work for every frame (buffering the rows, writing them in blocks through h5py
into an SWMR file, flushing, opening and closing one group file per stream and adding one
NXentry per stream to the master file), so its memory is exercised as in a beamtime of many
scans; only the finished files disappear. At most about two streams' files exist at once
(about 2 GiB at the defaults); the master file keeps every entry (a few kB each, with links to
the deleted files). A file deleted within seconds, before the kernel writes its dirty pages
back (``vm.dirty_expire_centisecs``, 30 s, unless the dirty pages pass
``vm.dirty_background_ratio``), need never reach the disk: the soak measures the processes and
the page cache, not the disk. ``--sums-only`` sends only the sums
from the workers to the writer (a few bytes a frame; the frames still cross source -> workers).

What is sampled: every ``--interval`` s (default 10) the VmRSS (``/proc/PID/status``) and the
CPU time (``/proc/PID/stat``) of every node process (the source, each worker replica, the
writer: ``node_processes()`` of ``bench/throughput.py``) and of this process, which runs the
launcher; the frames the writer has processed (the observer's progress and stream-end reports),
the bytes in the output folder and the load average. At ``--duration`` s (default 3600, counted
from the launcher's start) the pipeline is drained (``Launcher.drain``: the source ends its
stream, everything sent is written) and the run ends.

Printed: one line per sample, then per process the RSS at the first sample at or after
``--warmup`` s (default 300), at the last sample and the largest after the warmup; the growth
from the warmup sample to the last in %; the growth of the median of the last ``--window`` s
over the median of the first ``--window`` s after the warmup (default 300 s, at most half the
time after the warmup: 60 s for ``--duration 180 --warmup 60``); the growth to the largest
sample; the trend (least-squares slope over the samples after the warmup, MB per hour); the
mean CPU; and whether the median growth stayed under 5 % (the issue-15 criterion). The medians
decide because single samples of the processes that handle frames swing by up to about 150 MB
(the writer's buffered rows, frames in flight): one sample can catch the top or the bottom of
a swing, a median tells a level that rises. Then the frames/s and MB/s (frame payload, 10^6
bytes) the writer processed after the warmup and over the whole run, the largest disk use and
the master file's size. ``--out FILE`` writes every sample (``.json``, or ``.csv`` one row per
sample; the JSON also holds the summary). Nothing is asserted.

Source: the working tree is shared with engineers editing ``src/``, so the script extracts
``src/beampipe`` of one commit (``--rev``, default ``HEAD``: the committed code, without anyone's
uncommitted edits) with ``git archive`` into a temporary folder and imports it from there, in
this process and in every node process (``PYTHONPATH``); the commit is printed with the machine
line. ``--live-src`` imports the working tree's ``src/`` instead.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _source(argv: list[str]) -> str:
    """Put ``src/beampipe`` of the commit ``--rev`` (default HEAD) first on ``sys.path`` and
    ``PYTHONPATH`` (unless ``--live-src``); returns what was imported, for the report."""
    if "--live-src" in argv:
        return "live src/ (--live-src)"
    rev = next((a.split("=", 1)[1] for a in argv if a.startswith("--rev=")), "HEAD")
    if "--rev" in argv[:-1]:
        rev = argv[argv.index("--rev") + 1]
    repo = ["git", "-C", str(HERE.parent)]
    sha = subprocess.run(
        [*repo, "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        [*repo, "archive", sha, "src/beampipe"], capture_output=True, check=True
    )
    dest = Path(tempfile.mkdtemp(prefix="bench-soak-src-"))
    atexit.register(shutil.rmtree, dest, True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    sys.path.insert(0, str(dest / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(dest / "src"), os.environ.get("PYTHONPATH", "")) if p
    )
    return f"git archive of {rev} ({sha[:10]})"


SOURCE = _source(sys.argv[1:]) if __name__ == "__main__" else "as imported"
sys.path.insert(1, str(HERE))

import numpy as np  # noqa: E402
from throughput import machine, node_processes, vm_rss  # noqa: E402

from beampipe.config import load_pipeline  # noqa: E402
from beampipe.launch import Launcher  # noqa: E402

MB = 1e6
LAUNCHER = "launcher (this process)"
SINK = "nexus"
PREFIX = "soak_"  # stream soak_00001 is a valid NeXus name: its entry and data folder keep it

PIPELINE = """\
name: soak
nodes:
  det:
    use: detector_sim
    params:
      shape: [{rows}, {columns}]
      dtype: uint16
      frames: {frames}
      streams: {streams}
      rate: {rate}
      pool: {pool}
      prefix: {prefix}
  work:
    use: bench_nodes:FrameSum
    replicas: 2
    params: {{forward: {forward}}}
  {sink}:
    use: nexus_writer
    params: {{path: "{master}", xas: null}}
connections:
  - det.out -> work.in
  - work.out -> {sink}.frames
"""


class Writer:
    """Launcher observer: counts the frames the writer has processed and deletes the group
    files of the streams it has finished."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.failures: list[str] = []
        self.streams = 0
        self._done = 0
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        if node == SINK:
            with self._lock:
                self._open = dict(streams)

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        if node != SINK:
            return
        stream = report["stream"]
        with self._lock:
            self._done += report["messages"]
            self._open.pop(stream, None)
            self.streams += 1
        shutil.rmtree(self.data_dir / stream, ignore_errors=True)

    def failure(self, text: str) -> None:
        self.failures.append(text)

    def frames(self) -> int:
        """Frames the writer has processed so far."""
        with self._lock:
            return self._done + sum(self._open.values())


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (``/proc/PID/stat``), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_bytes(folder: Path) -> int:
    """Bytes allocated to the files below ``folder``."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


class Sampler(threading.Thread):
    """Every ``interval`` s from its start: one row of samples (see the module doc); at
    ``duration`` s it drains the pipeline and stops."""

    def __init__(
        self, launcher: Launcher, writer: Writer, folder: Path, args: argparse.Namespace
    ) -> None:
        super().__init__(daemon=True)
        self.launcher, self.writer, self.folder = launcher, writer, folder
        self.interval, self.duration = args.interval, args.duration
        self.frame_bytes = args.shape[0] * args.shape[1] * 2
        self.labels: dict[int, str] = {os.getpid(): LAUNCHER}
        self.rows: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        k = 0
        while not self.stopped.is_set():
            t = time.monotonic() - self.t0
            self.sample(t)
            if t >= self.duration:
                self.launcher.drain("the soak's --duration")
                return
            k += 1
            self.stopped.wait(max(0.0, self.t0 + k * self.interval - time.monotonic()))

    def sample(self, t: float) -> None:
        for pid, label in node_processes().items():
            if pid not in self.labels:
                taken = sum(1 for x in self.labels.values() if x.split(" ")[0] == label)
                self.labels[pid] = label if not taken else f"{label} (restart {taken})"
        rss, cpu = {}, {}
        for pid, label in self.labels.items():
            r, c = vm_rss(pid), cpu_seconds(pid)
            if r is not None and c is not None:
                rss[label], cpu[label] = r, c
        row = {
            "t": round(t, 3),
            "frames": self.writer.frames(),
            "streams": self.writer.streams,
            "disk": disk_bytes(self.folder),
            "load": os.getloadavg()[0],
            "rss": rss,
            "cpu": cpu,
        }
        self.rows.append(row)
        self.print_row(row)

    def print_row(self, row: dict[str, Any]) -> None:
        rate = math.nan
        if len(self.rows) > 1:
            before = self.rows[-2]
            rate = (row["frames"] - before["frames"]) / (row["t"] - before["t"])
        rss = " ".join(f"{k.split(' ')[0]} {v / MB:.0f}" for k, v in row["rss"].items())
        print(
            f"{row['t']:6.0f} s  {row['frames']:>9,} frames  {rate:6.0f} fr/s "
            f"{rate * self.frame_bytes / MB:6.0f} MB/s  disk {row['disk'] / 1e9:5.2f} GB  "
            f"load {row['load']:4.1f}  RSS MB: {rss}",
            flush=True,
        )


def summarise(rows: list[dict[str, Any]], warmup: float, window: float) -> list[dict[str, Any]]:
    """Per process: RSS at the warmup sample, at the last sample, the largest after the
    warmup, growth in % (last / warmup sample; median of the last ``window`` s / median of the
    first ``window`` s after the warmup; largest / warmup sample), trend in MB/h and mean CPU in
    % of a core."""
    out = []
    labels = list(dict.fromkeys(k for row in rows for k in row["rss"]))
    for label in labels:
        mine = [(r["t"], r["rss"][label], r["cpu"][label]) for r in rows if label in r["rss"]]
        after = [x for x in mine if x[0] >= warmup]
        if not after:
            continue
        (t_w, at_w, _), (t_end, end, _) = after[0], after[-1]
        first = float(np.median([x[1] for x in after if x[0] < t_w + window]))
        last = float(np.median([x[1] for x in after if x[0] > t_end - window]))
        peak = max(x[1] for x in after)
        trend = math.nan
        if len(after) >= 3 and t_end > t_w:
            t, r = np.array([x[0] for x in after]), np.array([x[1] for x in after])
            trend = float(np.polyfit(t, r, 1)[0]) * 3600 / MB
        span = mine[-1][0] - mine[0][0]
        out.append(
            {
                "process": label,
                "t_warmup": t_w,
                "t_end": t_end,
                "rss_warmup": at_w,
                "rss_end": end,
                "rss_max": peak,
                "rss_max_all": max(x[1] for x in mine),
                "rss_first_window_median": first,
                "rss_last_window_median": last,
                "growth_pct": 100 * (end - at_w) / at_w,
                "median_growth_pct": 100 * (last - first) / first,
                "max_growth_pct": 100 * (peak - at_w) / at_w,
                "trend_mb_per_h": trend,
                "cpu_pct": 100 * (mine[-1][2] - mine[0][2]) / span if span > 0 else math.nan,
                "under_5pct": last < 1.05 * first,
            }
        )
    return out


def throughput(rows: list[dict[str, Any]], warmup: float, frame_bytes: int) -> dict[str, Any]:
    """Frames/s and MB/s the writer processed after the warmup and from the first sample."""
    out: dict[str, Any] = {"frames": rows[-1]["frames"], "streams": rows[-1]["streams"]}
    after = [r for r in rows if r["t"] >= warmup]
    for key, part in (("after_warmup", after), ("whole_run", rows)):
        if len(part) >= 2 and part[-1]["t"] > part[0]["t"]:
            fps = (part[-1]["frames"] - part[0]["frames"]) / (part[-1]["t"] - part[0]["t"])
            out[key] = {"fps": fps, "mbps": fps * frame_bytes / MB}
    out["disk_max"] = max(r["disk"] for r in rows)
    return out


def report(summary: list[dict[str, Any]], rate: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nRSS per process, MB. warmup: the first sample at or after {args.warmup:g} s (at s); "
        "growth %: the last sample against it; median %: the median of the last "
        f"{args.window:g} s against that of the first {args.window:g} s after the warmup; "
        "max %: the largest sample after the warmup against the warmup sample; MB/h: the "
        "least-squares trend after the warmup; < 5 %: the median growth under 5 %"
    )
    print(
        f"{'process':<26} {'at s':>6} {'warmup':>8} {'end':>8} {'max':>8} {'growth %':>9} "
        f"{'median %':>9} {'max %':>7} {'MB/h':>8} {'CPU %':>6}  < 5 %"
    )
    for s in summary:
        print(
            f"{s['process']:<26} {s['t_warmup']:6.0f} {s['rss_warmup'] / MB:8.1f} "
            f"{s['rss_end'] / MB:8.1f} {s['rss_max'] / MB:8.1f} {s['growth_pct']:+9.1f} "
            f"{s['median_growth_pct']:+9.1f} {s['max_growth_pct']:+7.1f} "
            f"{s['trend_mb_per_h']:+8.1f} {s['cpu_pct']:6.0f}  "
            + ("yes" if s["under_5pct"] else "NO")
        )
    for key, text in (("after_warmup", "after the warmup"), ("whole_run", "whole run")):
        if key in rate:
            print(
                f"writer, {text}: {rate[key]['fps']:,.0f} frames/s, {rate[key]['mbps']:,.0f} MB/s"
            )
    print(
        f"{rate['frames']:,} frames in {rate['streams']:,} streams; "
        f"largest disk use {rate['disk_max'] / 1e9:.2f} GB"
    )


def write_out(path: Path, result: dict[str, Any]) -> None:
    if path.suffix != ".csv":
        path.write_text(json.dumps(result, indent=1, default=str))
        return
    rows = result["samples"]
    labels = list(dict.fromkeys(k for row in rows for k in row["rss"]))
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            ["t_s", "frames", "streams", "disk_bytes", "load1"]
            + [f"rss_bytes {k}" for k in labels]
            + [f"cpu_s {k}" for k in labels]
        )
        for r in rows:
            out.writerow(
                [r["t"], r["frames"], r["streams"], r["disk"], r["load"]]
                + [r["rss"].get(k, "") for k in labels]
                + [r["cpu"].get(k, "") for k in labels]
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3600, help="seconds (default 3600)")
    parser.add_argument("--warmup", type=float, default=300, help="seconds (default 300)")
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument(
        "--window",
        type=float,
        help="seconds of the median windows (default: 300, at most half the time after the warmup)",
    )
    parser.add_argument("--out", type=Path, help="write the samples here (.json or .csv)")
    parser.add_argument("--rate", default="max", help="frames/s, or max (the default)")
    parser.add_argument("--shape", type=int, nargs=2, default=[1024, 1024], metavar=("R", "C"))
    parser.add_argument("--frames-per-stream", type=int, default=500)
    parser.add_argument("--pool", type=int, default=8, help="detector_sim's distinct frames")
    parser.add_argument("--sums-only", action="store_true", help="the writer gets the sums only")
    parser.add_argument("--folder", type=Path, help="work folder, kept (default: a temporary one)")
    parser.add_argument("--rev", default="HEAD", help="the commit whose src/ runs (default HEAD)")
    parser.add_argument("--live-src", action="store_true", help="run the working tree's src/")
    args = parser.parse_args()

    if args.window is None:
        args.window = max(args.interval, min(300.0, (args.duration - args.warmup) / 2))
    frame_bytes = args.shape[0] * args.shape[1] * 2
    fastest = 4e9 / frame_bytes if args.rate == "max" else float(args.rate)
    streams = math.ceil(fastest * (args.duration + 60) / args.frames_per_stream) + 1
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "bench_nodes.py", folder)
    text = PIPELINE.format(
        rows=args.shape[0],
        columns=args.shape[1],
        frames=args.frames_per_stream,
        streams=streams,
        rate=args.rate,
        pool=args.pool,
        prefix=PREFIX,
        forward=str(not args.sums_only).lower(),
        sink=SINK,
        master=folder / "soak.nxs",
    )
    (folder / "pipeline.yaml").write_text(text)

    info = machine()
    info["src"] = SOURCE
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(
        f"soak: detector_sim {args.shape[0]}x{args.shape[1]} uint16 ({frame_bytes / MB:.2f} MB) "
        f"at rate {args.rate} -> FrameSum x 2 -> nexus_writer "
        f"({'sums only' if args.sums_only else 'frames and sums'}), streams of "
        f"{args.frames_per_stream} frames, {args.duration:g} s, warmup {args.warmup:g} s, "
        f"a sample every {args.interval:g} s; folder {folder}",
        flush=True,
    )
    writer = Writer(folder / "soak_data")
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), writer, rundir=folder / "run")
    sampler = Sampler(launcher, writer, folder, args)
    try:
        sampler.start()
        result = launcher.run()
        sampler.stopped.set()
        sampler.join()
        master = (folder / "soak.nxs").stat().st_size if (folder / "soak.nxs").exists() else 0
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    drained = result.exit_code == 130 and all(
        "drained, every file closed" in e for e in result.errors
    )
    if result.exit_code != 0 and not drained:
        print(f"the pipeline failed (exit code {result.exit_code}):", *result.errors, sep="\n")

    rows = sampler.rows
    summary = summarise(rows, args.warmup, args.window)
    rate = throughput(rows, args.warmup, frame_bytes)
    rate["master_file_bytes"] = master
    report(summary, rate, args)
    print(f"master file {master / MB:.1f} MB; run ended: exit code {result.exit_code}")
    if args.out:
        write_out(
            args.out,
            {
                "machine": info,
                "args": {k: str(v) for k, v in vars(args).items()},
                "pipeline": text,
                "frame_bytes": frame_bytes,
                "exit_code": result.exit_code,
                "errors": result.errors,
                "samples": rows,
                "summary": summary,
                "throughput": rate,
            },
        )
        print(f"samples written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
