"""beampipe transport benchmark: throughput, latency, small messages and memory under backpressure.

    python bench/throughput.py [--quick] [--repeat N] [--latency] [--small] [--backpressure]
                               [--duration S] [--matrix] [--all] [--seconds S]
                               [--sizes 1KiB 1MiB 4MiB 16MiB] [--replicas 1 2 4] [--rate HZ]
                               [--cpu] [--profile DIR] [--spy-args ARGS] [--perf DIR]
                               [--live-src] [--encrypt] [--json FILE]

``--quick`` runs a reduced matrix (1 KiB and 4 MiB, 1 and 2 replicas, one repeat of ~0.7 s
each: about 20 s) and shortens the modes (latency 2 s, backpressure 10 s).

Without a mode flag it runs the throughput matrix; ``--latency``, ``--small`` and
``--backpressure`` run those modes instead (add ``--matrix`` to run the matrix as well, or
``--all`` for everything). Everything runs in one process tree and one invocation, so the
references and beampipe see the same machine state.

What is measured
----------------
1. Physical references, measured in the same run:

   * ``memcpy``: ``numpy.copyto`` of one frame into another preallocated buffer, repeated for
     about 0.2 s per size (median of 5): the bandwidth of one core copying frames of that size.
   * ``raw pyzmq`` (``bench/raw_zmq.py``): source -> N workers -> sink as PUSH/PULL over
     ``ipc://`` with ``copy=False``, one process each (``multiprocessing`` spawn), the same frame
     sizes, the same trivial work in the workers (the frame's sum, frame passed on with it) and a
     16-byte header carrying the source's send time. Flow control is the high-water mark:
     ``SNDHWM = RCVHWM = max(1, min(window, window_bytes // frame) // 2)`` on both ends of every
     pipe, so about as many messages are queued per pipe as beampipe's credit allows.

2. beampipe: ``detector_sim`` (``frame_bytes``, ``rate: max``, ``pool: 4``) ->
   ``bench_nodes:FrameSum`` x N replicas (round_robin) -> ``bench_nodes:Recorder``, run by
   :class:`beampipe.launch.Launcher` with its defaults (``ipc``, window 32 messages,
   64 MiB) from a temporary folder holding the pipeline file and a copy of ``bench_nodes.py``.

Throughput is taken *at the sink, over the steady state*: the sink records a
``time.perf_counter()`` at the receipt of every message, and throughput is
``(n - k - 1) / (t[n-1] - t[k])`` messages/s with ``k = max(5, n // 10)``: the first 10 % of
the messages (at least 5) are dropped. This excludes process start-up, imports, the
connection handshake and ``detector_sim``'s frame-pool generation (all happen before the first
message reaches the sink) as well as the pipeline filling up (the first messages arrive faster
than the steady state because the credit window is empty). The wall time of each run, start-up
included, is reported separately in ``--json``. MB/s are 10^6 bytes of frame payload per
second (headers not counted).

End-to-end latency: from the source's timestamp (beampipe: the ``timestamps[0]`` the runtime
stamps as the source sends; raw: the header) to the sink's receipt. For beampipe p50/p99 are read
from ``RunResult.metrics["sink"].latency`` (log buckets, 20 per decade: a quantile is the upper
edge of its bucket, exact to about 12 %); for raw pyzmq the latencies the sink computed are put
into the same :class:`~beampipe.runtime.metrics.Histogram`, so both columns have the same
resolution; these include every message, the first ones too. The ``steady`` columns of
``--latency`` are exact quantiles of the latencies the sink recorded, without the first 10 % of
the messages (as for throughput). At ``rate: max`` the latency is mostly queueing: the messages
in flight (the credit window or HWM) divided by the throughput. ``--latency`` measures it at a
fixed rate instead.

Every case is repeated ``--repeat`` times (default 3), raw and beampipe interleaved, and the
tables show medians; frames per run are chosen so that each run streams for about
``--seconds`` (default 3 s, from the rate measured by the previous repeat of the same case).
The machine this was written for has 2 cores shared with other engineers: see the load average
printed with each run.

Modes
-----
``--latency``  detector_sim at ``rate: 2000`` (Hz; ``--rate`` to change) with 1 MiB frames,
               source -> 1 worker -> sink, ``rate * --duration`` frames (default 10 s):
               p50/p99 end-to-end latency (target p99 <= 5 ms at 2 kHz), with the raw pyzmq
               pipe paced the same way (deadline schedule) as reference, and the sink's rate
               (if it is below the source's, the pipe is saturated and latency is queueing).
``--small``    1 KiB messages, source -> 1 worker -> sink at ``rate: max``: messages/s
               (target >= 20,000).
``--backpressure``  4 MiB frames (``--bp-frame-mib``) from detector_sim at 100 Hz, sink sleeping
               so that it takes 10 % of that (10 Hz), for ``--duration`` s (default 60). Every
               second the VmRSS (``/proc/PID/status``) of this process and of every node process
               (children of this process whose command line runs ``beampipe.runtime``) is
               sampled. Reported per process: the peak before the first message reached the
               sink (start-up: imports, detector_sim's frame pool), then, while streaming, the
               first, peak and final RSS, and the bound ``sum over its pipes of
               min(window * frame, max(window_bytes, frame))`` (what the credit lets be in
               flight on a pipe) ``+ pool * frame`` for the source (the frames it sends from)
               ``+ 100 MB``.

Source snapshot: the working tree is shared with engineers editing ``src/``, so at start the
script copies ``src/beampipe`` to a temporary folder and imports it from there, in this process
and in every node process (``PYTHONPATH``), so one invocation measures one version of the code;
its fingerprint is printed with the machine line (``--live-src`` imports ``src/`` instead).

``--cpu`` prints, for every run (beampipe and raw), the CPU time of each thread of each node
process over the streaming window (``/proc/PID/task/TID/stat`` and ``schedstat``, sampled every
0.25 s) as microseconds per message: main Python thread, libzmq's I/O thread, other Python
threads (pyzmq's zero-copy garbage collector), system part in brackets; how often each main
thread got onto a CPU per message; and how long threads waited runnable for a CPU.

``--profile DIR`` attaches ``py-spy record --format raw --rate 100 --nonblocking`` to every node
process of every beampipe run (CPU samples only; summarise with ``bench/pyspy_summary.py``;
``--spy-args="--nonblocking --gil"`` keeps only samples holding the GIL, i.e. Python-level work;
``--rate N`` among them samples N times a second instead).
``--perf DIR`` does the same with ``perf record -g`` (native and kernel stacks, all threads).
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _snapshot_src() -> str:
    """Copy ``src/beampipe`` to a private folder and import it from there, in this process and
    (through ``PYTHONPATH``) in every node process: other engineers edit ``src/`` in the same
    working tree, and a module changed halfway through a run would mix versions. Returns a
    fingerprint of the copied sources."""
    src = HERE.parent / "src" / "beampipe"
    dest = Path(tempfile.mkdtemp(prefix="bench-src-"))
    shutil.copytree(src, dest / "beampipe", ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha1()
    for f in sorted((dest / "beampipe").rglob("*.py")):
        digest.update(f.relative_to(dest).as_posix().encode() + b"\0" + f.read_bytes())
    atexit.register(shutil.rmtree, dest, True)
    sys.path.insert(0, str(dest))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(dest), os.environ.get("PYTHONPATH", "")) if p
    )
    return digest.hexdigest()[:10]


if __name__ != "__main__":  # a multiprocessing child re-importing this module: PYTHONPATH is set
    SNAPSHOT = "inherited"
elif "--live-src" in sys.argv:
    SNAPSHOT = "live src/ (--live-src)"
else:
    SNAPSHOT = _snapshot_src()

import numpy as np  # noqa: E402
import raw_zmq  # noqa: E402
import zmq  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from beampipe.config import load_pipeline  # noqa: E402
from beampipe.launch import Launcher  # noqa: E402
from beampipe.runtime.metrics import Histogram  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - /proc scan fallback
    psutil = None

KiB, MiB = 1 << 10, 1 << 20
SIZES = {"1KiB": KiB, "1MiB": MiB, "4MiB": 4 * MiB, "16MiB": 16 * MiB}
REPLICAS = (1, 2, 4)
POOL = 4
WINDOW, WINDOW_BYTES = 64, 64 * MiB  # Launcher's defaults
RATE_GUESS = {  # frames/s for the first repeat of a case (later ones use the rate measured)
    "raw": {KiB: 50000, MiB: 1800, 4 * MiB: 450, 16 * MiB: 100},
    "beampipe": {KiB: 15000, MiB: 1500, 4 * MiB: 380, 16 * MiB: 90},
}

console = Console(width=160, highlight=False)
log = Console(stderr=True, width=160, highlight=False, soft_wrap=True)


def size_label(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n // KiB} KiB"


# -- measurement helpers ------------------------------------------------------------------------


@dataclass
class Sample:
    """One run of one case."""

    system: str  # "raw" or "beampipe"
    frame_bytes: int
    replicas: int
    frames: int
    fps: float  # steady-state frames/s at the sink
    p50: float  # s, histogram quantile
    p99: float
    exact_p50: float  # s, from the sink's own record, steady state (first 10 % dropped)
    exact_p99: float
    wall: float  # s, whole run including start-up
    load: float  # 1-min load average when the run started
    rate: float = 0.0  # source rate asked for (0 = max)
    first: float = math.nan  # the sink's first and last receipt, time.perf_counter(), which on
    last: float = math.nan  # Linux is CLOCK_MONOTONIC as time.monotonic() in every process
    gc: dict[str, Any] | None = None  # per node: cyclic-GC collections and seconds, whole run

    @property
    def mbps(self) -> float:
        return self.fps * self.frame_bytes / 1e6


def steady_start(n: int) -> int:
    """Index of the first message of the steady state: the first 10 % (at least 5) dropped."""
    k = max(5, n // 10)
    return k if n - k >= 3 else max(0, n - 3)


def steady_rate(t: np.ndarray) -> float:
    """Messages/s at the sink over the steady state."""
    n = len(t)
    k = steady_start(n)
    span = t[-1] - t[k]
    return (n - k - 1) / span if span > 0 else math.nan


def steady_quantiles(lat: np.ndarray) -> tuple[float, float]:
    """Exact p50 and p99 of the steady-state latencies."""
    steady = lat[steady_start(len(lat)) :]
    return float(np.quantile(steady, 0.5)), float(np.quantile(steady, 0.99))


def hist_of(latencies: np.ndarray) -> Histogram:
    h = Histogram()
    for x in latencies:
        h.add(float(x))
    return h


def memcpy_bandwidth(frame_bytes: int, repeat: int = 5, seconds: float = 0.2) -> float:
    """Bytes/s of numpy.copyto for frames of ``frame_bytes`` (median of ``repeat`` timings)."""
    src = np.random.default_rng(0).integers(0, 255, frame_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    rates = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(16):
                np.copyto(dst, src)
            n += 16
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        rates.append(n * frame_bytes / dt)
    return statistics.median(rates)


class Watch(threading.Thread):
    """Every ``interval`` s: the node processes below this process (and this process itself);
    optionally samples their VmRSS, the CPU time of each of their threads (``/proc/PID/task``:
    the Python main thread and libzmq's ``ZMQbg/IO/0`` I/O thread) and attaches py-spy to new
    node processes."""

    def __init__(
        self,
        interval: float = 1.0,
        rss: bool = False,
        profile: Path | None = None,
        tag: str = "",
        cpu: bool = False,
        spy_args: str = "--nonblocking",
        perf: Path | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.rss = rss
        self.cpu = cpu
        self.cpu_samples: dict[tuple[int, int], tuple[str, list[tuple[float, ...]]]] = {}
        self.profile = profile
        self.perf = perf
        self._perf_pending: dict[int, str] = {}
        self.spy_args = spy_args.split()
        if "--rate" not in self.spy_args:
            self.spy_args += ["--rate", "100"]
        self.tag = tag
        self.labels: dict[int, str] = {os.getpid(): "launcher (this process)"}
        self.samples: dict[int, list[tuple[float, int]]] = {}
        self.spies: list[subprocess.Popen[bytes]] = []
        self._stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        for spy in self.spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()

    def poll(self) -> None:
        now = time.monotonic()
        for pid, label in node_processes().items():
            if pid not in self.labels:
                self.labels[pid] = label
                if self.profile is not None:
                    self._attach(pid, label)
                if self.perf is not None:
                    self._perf_pending[pid] = label
        for pid, label in list(self._perf_pending.items()):
            # perf -p follows only the threads that exist when it attaches: wait for libzmq's
            # I/O and reaper threads
            try:
                threads = len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                del self._perf_pending[pid]
                continue
            if threads >= 3:
                del self._perf_pending[pid]
                self._perf(pid, label)
        if self.rss:
            for pid in list(self.labels):
                rss = vm_rss(pid)
                if rss is not None:
                    self.samples.setdefault(pid, []).append((now, rss))
        if self.cpu:
            for pid in list(self.labels):
                if pid == os.getpid():
                    continue
                for tid, comm, *counters in thread_ticks(pid):
                    # the main thread, libzmq's ZMQbg/IO/0 and ZMQbg/Reaper, and any Python
                    # thread (pyzmq's zero-copy garbage collector: "python")
                    comm = "main" if tid == pid else comm
                    entry = self.cpu_samples.setdefault((pid, tid), (comm, []))
                    entry[1].append((now, *counters))

    def add(self, pid: int, label: str) -> None:
        """Watch a process that is not a beampipe node (the raw pyzmq reference)."""
        self.labels[pid] = label
        if self.perf is not None:
            self._perf_pending[pid] = label

    def cpu_rows(
        self, first: float, last: float
    ) -> list[tuple[str, str, float, float, float, float]]:
        """Per thread over [first, last] (monotonic): (process, thread, user and system CPU
        seconds per wall second, times it was scheduled onto a CPU per second, seconds it waited
        runnable for a CPU per wall second)."""
        tick = os.sysconf("SC_CLK_TCK")
        rows = []
        for (pid, _tid), (comm, samples) in sorted(self.cpu_samples.items()):
            inside = [x for x in samples if first <= x[0] <= last]
            if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
                continue
            (t0, u0, s0, n0, w0), (t1, u1, s1, n1, w1) = inside[0], inside[-1]
            dt = t1 - t0
            rows.append(
                (
                    self.labels.get(pid, str(pid)),
                    comm,
                    (u1 - u0) / tick / dt,
                    (s1 - s0) / tick / dt,
                    (n1 - n0) / dt,
                    (w1 - w0) / 1e9 / dt,
                )
            )
        return rows

    def _perf(self, pid: int, label: str) -> None:
        assert self.perf is not None
        self.perf.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.tag}-{label}")
        self.spies.append(
            subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-F",
                    "499",
                    "-g",
                    "-p",
                    str(pid),
                    "-o",
                    str(self.perf / f"{name}.data"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def _attach(self, pid: int, label: str) -> None:
        assert self.profile is not None
        self.profile.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.tag}-{label}")
        out = self.profile / f"{name}.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.spies.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    *self.spy_args,
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )


def node_processes() -> dict[int, str]:
    """``{pid: "node#replica"}`` of the beampipe node processes below this process."""
    found: dict[int, list[str]] = {}
    if psutil is not None:
        try:
            for child in psutil.Process().children(recursive=True):
                try:
                    found[child.pid] = child.cmdline()
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
    else:  # scan /proc for our descendants
        parent: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        mine = {os.getpid()}
        changed = True
        while changed:
            changed = False
            for pid, ppid in parent.items():
                if ppid in mine and pid not in mine:
                    mine.add(pid)
                    changed = True
        for pid in mine - {os.getpid()}:
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                found[pid] = [x.decode(errors="replace") for x in found[pid]]  # type: ignore[misc]
            except OSError:
                continue
    out = {}
    for pid, cmd in found.items():
        if "beampipe.runtime" in cmd:
            node = cmd[cmd.index("--node") + 1] if "--node" in cmd else "?"
            replica = cmd[cmd.index("--replica") + 1] if "--replica" in cmd else "0"
            out[pid] = f"{node}#{replica}"
    return out


def thread_ticks(pid: int) -> list[tuple[int, str, int, int, int, int]]:
    """(tid, comm, utime, stime in clock ticks, timeslices run, ns waited on a run queue) of
    every thread of ``pid`` (``/proc/PID/task/TID/stat`` and ``schedstat``)."""
    out = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        try:
            _run_ns, wait_ns, slices = map(int, (task / "schedstat").read_text().split())
        except (OSError, ValueError):
            wait_ns = slices = 0
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out.append((int(task.name), comm, int(fields[11]), int(fields[12]), slices, wait_ns))
    return out


def vm_rss(pid: int) -> int | None:
    """Resident set size in bytes (VmRSS of /proc/PID/status), None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


# -- one run ------------------------------------------------------------------------------------


class Quiet:
    """A launcher observer that keeps the failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        pass

    def stream_end(self, node: str, replica: int, report: dict[str, Any]) -> None:
        pass

    def failure(self, text: str) -> None:
        self.failures.append(text)


PIPELINE = """\
name: bench
nodes:
  source:
    use: detector_sim
    params: {{frame_bytes: {frame_bytes}, rate: {rate}, frames: {frames}, pool: {pool}}}
  worker:
    use: bench_nodes:FrameSum
    replicas: {replicas}
    params: {{forward: {forward}, gc_log: "{folder}/gc-worker"}}
  sink:
    use: bench_nodes:Recorder
    params: {{path: "{out}", delay: {delay}, gc_log: "{folder}/gc-sink"}}
connections:
  - source -> worker
  - worker -> sink
"""


def run_beampipe(
    frame_bytes: int,
    replicas: int,
    frames: int,
    *,
    rate: float = 0.0,
    sink_delay: float = 0.0,
    window: int = WINDOW,
    window_bytes: int = WINDOW_BYTES,
    watch: Watch | None = None,
    forward: bool = True,
) -> tuple[Sample, Any]:
    """One beampipe run; the sample and the launcher's RunResult."""
    with tempfile.TemporaryDirectory(prefix="bench-beampipe-") as tmp:
        folder = Path(tmp)
        shutil.copy(HERE / "bench_nodes.py", folder)
        out = folder / "sink.npy"
        path = folder / "pipeline.yaml"
        path.write_text(
            PIPELINE.format(
                frame_bytes=frame_bytes,
                rate=rate or "max",
                frames=frames,
                pool=POOL,
                replicas=replicas,
                forward=str(forward).lower(),
                out=out,
                delay=sink_delay,
                folder=folder,
            )
        )
        load = os.getloadavg()[0]
        observer = Quiet()
        launcher = Launcher(load_pipeline(path), observer, window=window, window_bytes=window_bytes)
        if watch is not None:
            watch.start()
        t0 = time.monotonic()
        try:
            result = launcher.run()
        finally:
            if watch is not None:
                watch.stop()
        wall = time.monotonic() - t0
        if result.exit_code != 0:
            raise RuntimeError("beampipe run failed:\n" + "\n".join(result.errors))
        record = np.load(out)
        gc_stats = {}
        for log_file in sorted(folder.glob("gc-*")):
            node = log_file.name.removeprefix("gc-").split(".")[0]
            data = json.loads(log_file.read_text())
            acc = gc_stats.setdefault(node, {"collections": [0, 0, 0], "seconds": [0.0] * 3})
            for g in range(3):
                acc["collections"][g] += data["collections"][g]
                acc["seconds"][g] += data["seconds"][g]
    t, lat = record[:, 0], record[:, 1]
    sink = result.metrics["sink"].latency
    return (
        Sample(
            "beampipe",
            frame_bytes,
            replicas,
            frames,
            steady_rate(t),
            sink.quantile(0.5),
            sink.quantile(0.99),
            *steady_quantiles(lat),
            wall,
            load,
            rate,
            float(t[0]),
            float(t[-1]),
            gc_stats,
        ),
        result,
    )


def run_raw(
    frame_bytes: int,
    replicas: int,
    frames: int,
    *,
    rate: float = 0.0,
    window: int = WINDOW,
    window_bytes: int = WINDOW_BYTES,
    watch: Watch | None = None,
    forward: bool = True,
) -> Sample:
    hwm = max(1, min(window, window_bytes // frame_bytes) // 2)
    load = os.getloadavg()[0]
    t0 = time.monotonic()

    def started(pids: dict[int, str]) -> None:
        if watch is not None:
            for pid, label in pids.items():
                watch.add(pid, label)
            watch.start()

    try:
        record = raw_zmq.run(
            frame_bytes,
            replicas,
            frames,
            hwm=hwm,
            pool=POOL,
            rate=rate,
            forward=forward,
            on_start=started,
        )
    finally:
        if watch is not None and watch.is_alive():
            watch.stop()
    wall = time.monotonic() - t0
    t, lat = record[:, 0], record[:, 1]
    h = hist_of(lat)
    return Sample(
        "raw",
        frame_bytes,
        replicas,
        frames,
        steady_rate(t),
        h.quantile(0.5),
        h.quantile(0.99),
        *steady_quantiles(lat),
        wall,
        load,
        rate,
        float(t[0]),
        float(t[-1]),
    )


def bp_run(
    args: argparse.Namespace, tag: str, frame_bytes: int, replicas: int, frames: int, **kw: Any
) -> Sample:
    """:func:`run_beampipe` with py-spy (``--profile``) and per-thread CPU (``--cpu``)."""
    watch = None
    if args.profile or args.cpu or args.perf:
        watch = Watch(
            interval=0.25,
            profile=args.profile,
            tag=tag,
            cpu=args.cpu,
            spy_args=args.spy_args,
            perf=args.perf,
        )
    s, _ = run_beampipe(frame_bytes, replicas, frames, watch=watch, forward=args.forward, **kw)
    if watch is not None and args.cpu:
        cpu_report(watch, s, tag, args)
    return s


def raw_run(
    args: argparse.Namespace, tag: str, frame_bytes: int, replicas: int, frames: int, **kw: Any
) -> Sample:
    """:func:`run_raw` with per-thread CPU (``--cpu``) and ``perf record`` (``--perf``)."""
    if not (args.cpu or args.perf):
        return run_raw(frame_bytes, replicas, frames, forward=args.forward, **kw)
    watch = Watch(interval=0.25, cpu=True, perf=args.perf, tag=f"{tag}-raw")
    s = run_raw(frame_bytes, replicas, frames, watch=watch, forward=args.forward, **kw)
    if args.cpu:
        cpu_report(watch, s, tag, args)
    return s


def cpu_report(watch: Watch, s: Sample, tag: str, args: argparse.Namespace) -> None:
    """One line per run: CPU microseconds per message at the sink's steady rate, per node (its
    replicas added up) and thread kind: ``main`` (the Python main thread), ``io`` (libzmq's
    I/O thread), ``gc`` (other Python threads: pyzmq's zero-copy garbage collector), the system
    (kernel) part in brackets; how often the main thread was scheduled onto a CPU per message
    (wake-ups and preemptions); and the total time the threads spent runnable but waiting for a
    CPU, per second (> 0 means the cores were oversubscribed)."""
    rows = watch.cpu_rows(s.first, s.last)
    if not rows:
        log.print(f"    CPU ({s.system}): streaming window too short to sample (--seconds)")
        return
    us = 1e6 / s.fps
    per: dict[tuple[str, str], list[float]] = {}
    wakeups: dict[str, float] = {}
    waiting = 0.0
    for process, comm, user, system, slices, wait in rows:
        waiting += wait
        node = process.split("#")[0].removeprefix("raw ")
        if comm == "main":
            kind = "main"
        elif comm.startswith("ZMQbg/IO"):
            kind = "io"
        elif comm.startswith("ZMQbg"):
            kind = "reaper"
        else:
            kind = "gc"
        if kind == "main":
            wakeups[node] = wakeups.get(node, 0.0) + slices / s.fps
        acc = per.setdefault((node, kind), [0.0, 0.0])
        acc[0] += (user + system) * us
        acc[1] += system * us
    parts = []
    for node in dict.fromkeys(node for node, _ in per):
        threads = " ".join(
            f"{kind} {per[node, kind][0]:.0f} ({per[node, kind][1]:.0f})"
            for kind in ("main", "io", "gc")
            if (node, kind) in per and per[node, kind][0] >= 0.5
        )
        parts.append(f"{node}: {threads}, main on-CPU {wakeups.get(node, 0):.2f}x/msg")
    total = sum(v[0] for v in per.values())
    log.print(
        f"    CPU us/msg (sys) {s.system} {s.fps:.0f}/s: "
        + " | ".join(parts)
        + f" | total {total:.0f} us/msg; threads waited for a CPU {waiting:.2f} s/s"
    )
    if s.gc and any(sum(g["collections"]) for g in s.gc.values()):
        log.print(
            "      cyclic GC over the whole run: "
            + "; ".join(
                f"{node} {sum(g['seconds']) * 1e3:.0f} ms in {g['collections']} collections "
                f"(gen2 {g['seconds'][2] * 1e3:.0f} ms) = {sum(g['seconds']) / s.frames * 1e6:.1f} "
                "us/msg"
                for node, g in s.gc.items()
            )
        )
    args.cpu_log.append({"tag": tag, "system": s.system, "fps": s.fps, "rows": rows})


def progress(s: Sample, tag: str = "") -> None:
    log.print(
        f"  {tag}{s.system:8s} {size_label(s.frame_bytes):>7s} x{s.replicas} "
        f"{s.frames:7d} frames: {s.fps:9.0f} fr/s {s.mbps:8.0f} MB/s  "
        f"p50 {s.p50 * 1e3:7.2f} ms  p99 {s.p99 * 1e3:7.2f} ms  "
        f"(wall {s.wall:5.1f} s, load {s.load:.1f})"
    )


def median(samples: list[Sample], attr: str) -> float:
    values = [getattr(s, attr) for s in samples]
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1e3:.2f}"


def num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


# -- modes --------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "-C", str(HERE.parent), "diff", "HEAD", "--", "src"],
            capture_output=True,
            timeout=10,
        ).stdout
        if diff:  # other engineers edit src/ in the same tree: fingerprint the uncommitted state
            files = diff.count(b"diff --git")
            rev += f" (src diff {hashlib.sha1(diff).hexdigest()[:10]}, {files} files)"
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "numpy": np.__version__,
        "kernel": platform.release(),
        "git": rev,
        "src": SNAPSHOT if SNAPSHOT.startswith("live") else f"snapshot sha1 {SNAPSHOT}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def frames_for(system: str, frame_bytes: int, seconds: float, measured: float | None) -> int:
    rate = measured if measured and not math.isnan(measured) else RATE_GUESS[system][frame_bytes]
    # the first 10 % are dropped from the measurement: stream seconds / 0.9
    return int(min(400_000, max(60, rate * seconds / 0.9)))


def run_matrix(args: argparse.Namespace, results: dict[str, Any]) -> None:
    sizes = [SIZES[s] for s in args.sizes]
    replicas = args.replicas
    log.print("[bold]memcpy reference[/bold]")
    memcpy = {size: memcpy_bandwidth(size) for size in sizes}
    for size, bw in memcpy.items():
        log.print(f"  {size_label(size):>7s}: {bw / 1e6:,.0f} MB/s")
    samples: dict[tuple[str, int, int], list[Sample]] = {}
    log.print(f"[bold]throughput matrix[/bold]: {args.repeat} repeat(s), ~{args.seconds} s each")
    for rep in range(args.repeat):
        for size in sizes:
            for n in replicas:
                for system in ("raw", "beampipe"):
                    key = (system, size, n)
                    prev = samples.get(key)
                    frames = frames_for(system, size, args.seconds, prev[-1].fps if prev else None)
                    if system == "raw":
                        s = raw_run(args, f"tp-{size_label(size)}-x{n}-r{rep}", size, n, frames)
                    else:
                        s = bp_run(args, f"tp-{size_label(size)}-x{n}-r{rep}", size, n, frames)
                    samples.setdefault(key, []).append(s)
                    progress(s, f"[{rep + 1}/{args.repeat}] ")

    table = Table(
        title=f"Throughput at the sink, steady state (median of {args.repeat}); "
        "source -> N x frame-sum worker -> sink, ipc",
        box=box.SIMPLE_HEAD,
    )
    for col in (
        "frame",
        "N",
        "memcpy MB/s",
        "raw MB/s",
        "raw fr/s",
        "raw p50 ms",
        "raw p99 ms",
        "bp MB/s",
        "bp fr/s",
        "bp p50 ms",
        "bp p99 ms",
        "bp / raw",
    ):
        table.add_column(col, justify="right")
    rows = []
    for size in sizes:
        for n in replicas:
            raw, bp = samples[("raw", size, n)], samples[("beampipe", size, n)]
            raw_fps, bp_fps = median(raw, "fps"), median(bp, "fps")
            ratio = bp_fps / raw_fps if raw_fps else math.nan
            row = {
                "frame_bytes": size,
                "replicas": n,
                "memcpy_MBps": memcpy[size] / 1e6,
                "raw_MBps": raw_fps * size / 1e6,
                "raw_fps": raw_fps,
                "raw_p50": median(raw, "p50"),
                "raw_p99": median(raw, "p99"),
                "bp_MBps": bp_fps * size / 1e6,
                "bp_fps": bp_fps,
                "bp_p50": median(bp, "p50"),
                "bp_p99": median(bp, "p99"),
                "ratio": ratio,
                "bp_fps_all": [s.fps for s in bp],
                "raw_fps_all": [s.fps for s in raw],
            }
            rows.append(row)
            table.add_row(
                size_label(size),
                str(n),
                num(row["memcpy_MBps"]),
                num(row["raw_MBps"]),
                num(raw_fps),
                ms(row["raw_p50"]),
                ms(row["raw_p99"]),
                num(row["bp_MBps"]),
                num(bp_fps),
                ms(row["bp_p50"]),
                ms(row["bp_p99"]),
                f"{ratio:.2f}",
            )
    console.print(table)
    target = next((r for r in rows if r["frame_bytes"] == 4 * MiB and r["replicas"] == 2), None)
    if target is not None:
        ok = target["ratio"] >= 0.8
        console.print(
            f"Target 4 MiB, 2 replicas: beampipe / raw pyzmq = {target['ratio']:.2f} "
            f"(>= 0.80): {'MET' if ok else 'NOT MET'}"
        )
    results["matrix"] = {"rows": rows, "samples": [asdict(s) for v in samples.values() for s in v]}


def run_latency(args: argparse.Namespace, results: dict[str, Any]) -> None:
    rate, size = args.rate, MiB
    frames = int(rate * args.duration)
    log.print(
        f"[bold]latency[/bold]: {size_label(size)} at {rate:.0f} Hz, "
        f"{frames} frames per run, {args.repeat} repeat(s)"
    )
    bp, raw = [], []
    for rep in range(args.repeat):
        s = raw_run(args, f"lat-r{rep}", size, 1, frames, rate=rate)
        raw.append(s)
        progress(s, f"[{rep + 1}/{args.repeat}] ")
        s = bp_run(args, f"lat-r{rep}", size, 1, frames, rate=rate)
        bp.append(s)
        progress(s, f"[{rep + 1}/{args.repeat}] ")
    table = Table(
        title=f"Latency at a fixed {rate:.0f} Hz of {size_label(size)} frames, "
        f"source -> worker -> sink (median of {args.repeat})",
        box=box.SIMPLE_HEAD,
    )
    for col in (
        "system",
        "sink fr/s",
        "p50 ms",
        "p99 ms",
        "steady p50 ms",
        "steady p99 ms",
        "p99 <= 5 ms",
    ):
        table.add_column(col, justify="right")
    out = {}
    for name, ss in (("raw pyzmq", raw), ("beampipe", bp)):
        p99 = median(ss, "p99")
        table.add_row(
            name,
            num(median(ss, "fps")),
            ms(median(ss, "p50")),
            ms(p99),
            ms(median(ss, "exact_p50")),
            ms(median(ss, "exact_p99")),
            "yes" if p99 <= 5e-3 else "NO",
        )
        out[name] = {
            "fps": median(ss, "fps"),
            "p50": median(ss, "p50"),
            "p99": p99,
            "exact_p50": median(ss, "exact_p50"),
            "exact_p99": median(ss, "exact_p99"),
            "p99_all": [s.p99 for s in ss],
        }
    console.print(table)
    results["latency"] = {
        "rate": rate,
        "frame_bytes": size,
        **out,
        "samples": [asdict(s) for s in raw + bp],
    }


def run_small(args: argparse.Namespace, results: dict[str, Any]) -> None:
    size = KiB
    log.print(f"[bold]small messages[/bold]: {size_label(size)}, {args.repeat} repeat(s)")
    bp: list[Sample] = []
    raw: list[Sample] = []
    for rep in range(args.repeat):
        s = raw_run(
            args,
            f"small-r{rep}",
            size,
            1,
            frames_for("raw", size, args.seconds, raw[-1].fps if raw else None),
        )
        raw.append(s)
        progress(s, f"[{rep + 1}/{args.repeat}] ")
        frames = frames_for("beampipe", size, args.seconds, bp[-1].fps if bp else None)
        s = bp_run(args, f"small-r{rep}", size, 1, frames)
        bp.append(s)
        progress(s, f"[{rep + 1}/{args.repeat}] ")
    table = Table(
        title=f"1 KiB messages, source -> worker -> sink (median of {args.repeat})",
        box=box.SIMPLE_HEAD,
    )
    for col in ("system", "msg/s", "p50 ms", "p99 ms", ">= 20,000 msg/s"):
        table.add_column(col, justify="right")
    out = {}
    for name, ss in (("raw pyzmq", raw), ("beampipe", bp)):
        fps = median(ss, "fps")
        table.add_row(
            name,
            num(fps),
            ms(median(ss, "p50")),
            ms(median(ss, "p99")),
            "yes" if fps >= 20000 else "NO",
        )
        out[name] = {"fps": fps, "fps_all": [s.fps for s in ss]}
    console.print(table)
    bp_fps, raw_fps = out["beampipe"]["fps"], out["raw pyzmq"]["fps"]
    console.print(f"beampipe / raw pyzmq = {bp_fps / raw_fps:.2f}")
    results["small"] = {**out, "samples": [asdict(s) for s in raw + bp]}


def run_backpressure(args: argparse.Namespace, results: dict[str, Any]) -> None:
    size = int(args.bp_frame_mib * MiB)
    source_rate = 100.0
    sink_rate = 0.1 * source_rate
    frames = max(20, int(sink_rate * args.duration))
    log.print(
        f"[bold]backpressure[/bold]: {size_label(size)} frames, source {source_rate:.0f} Hz, "
        f"sink {sink_rate:.0f} Hz, {frames} frames (~{args.duration:.0f} s)"
    )
    watch = Watch(interval=1.0, rss=True, profile=args.profile, tag="bp", spy_args=args.spy_args)
    s, result = run_beampipe(
        size, 1, frames, rate=source_rate, sink_delay=1.0 / sink_rate, watch=watch
    )
    progress(s)
    streaming = s.first  # the sink's first receipt: start-up (and the frame pool) is over
    per_pipe = min(WINDOW * size, max(WINDOW_BYTES, size))
    pipes = {"source": 1, "worker": 2, "sink": 1}
    table = Table(
        title=f"RSS under a slow sink ({size_label(size)} frames, source {source_rate:.0f} Hz, "
        f"sink {sink_rate:.0f} Hz, {s.wall:.0f} s run, streaming for "
        f"{s.last - s.first:.0f} s; window {WINDOW} x {size_label(size)} / "
        f"{WINDOW_BYTES // MiB} MiB per pipe)",
        box=box.SIMPLE_HEAD,
    )
    for col in (
        "process",
        "start-up peak MB",
        "streaming: first MB",
        "peak MB",
        "final MB",
        "bound MB",
        "peak <= bound",
    ):
        table.add_column(col, justify="right")
    out = []
    all_ok = True
    for pid, label in watch.labels.items():
        samples = watch.samples.get(pid, [])
        before = [r for t, r in samples if t < streaming]
        during = [r for t, r in samples if t >= streaming]
        if not during:
            continue
        node = label.split("#")[0]
        if node in pipes:
            bound = pipes[node] * per_pipe + (POOL * size if node == "source" else 0) + 100e6
            ok = max(during) <= bound
            all_ok &= ok
        else:
            bound, ok = math.nan, None
        out.append(
            {
                "process": label,
                "pid": pid,
                "startup_peak": max(before, default=0),
                "first": during[0],
                "peak": max(during),
                "final": during[-1],
                "bound": bound,
                "ok": ok,
                "samples": [(round(t - streaming, 2), r) for t, r in samples],
            }
        )
        table.add_row(
            label,
            f"{max(before, default=0) / 1e6:.0f}",
            f"{during[0] / 1e6:.0f}",
            f"{max(during) / 1e6:.0f}",
            f"{during[-1] / 1e6:.0f}",
            "-" if math.isnan(bound) else f"{bound / 1e6:.0f}",
            "-" if ok is None else ("yes" if ok else "NO"),
        )
    console.print(table)
    console.print(
        f"sink received {s.fps:.1f} fr/s (steady); "
        f"memory bounded under the slow sink: {'MET' if all_ok else 'NOT MET'}"
    )
    results["backpressure"] = {
        "frame_bytes": size,
        "source_rate": source_rate,
        "sink_rate": sink_rate,
        "processes": out,
        "sample": asdict(s),
        "in_flight": result.metrics["source"].in_flight if "source" in result.metrics else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="beampipe throughput / latency / backpressure benchmark (see module doc)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced matrix and short modes (< 1 min for the matrix)",
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per case (default 3)")
    parser.add_argument("--latency", action="store_true", help="p99 at 2 kHz of 1 MiB")
    parser.add_argument("--small", action="store_true", help="1 KiB messages/s")
    parser.add_argument("--backpressure", action="store_true", help="RSS under a slow sink")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="run the throughput matrix too when a mode flag is given",
    )
    parser.add_argument("--all", action="store_true", help="matrix and every mode")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds for --latency (default 10) and --backpressure (default 60)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="steady-state seconds per throughput run (default 3)",
    )
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=None)
    parser.add_argument("--replicas", nargs="+", type=int, default=None)
    parser.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="source rate for --latency in Hz (default 2000: the target)",
    )
    parser.add_argument(
        "--bp-frame-mib", type=float, default=4.0, help="frame size for --backpressure (MiB)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy record every beampipe node process into this folder",
    )
    parser.add_argument(
        "--spy-args",
        default="--nonblocking",
        help='extra py-spy record options (default "--nonblocking"; e.g. "--gil" or "--native")',
    )
    parser.add_argument(
        "--perf",
        type=Path,
        default=None,
        help="also `perf record -g` every beampipe node process into this folder "
        "(native and kernel stacks; read with `perf report -i FILE`)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="report each node thread's CPU use while streaming"
    )
    parser.add_argument(
        "--no-forward",
        dest="forward",
        action="store_false",
        help="workers send on only the frame's sum, not the frame (second hop carries ~200 "
        "bytes instead of the frame); default: the frame and its sum",
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="comma-separated experimental patches of the beampipe runtime for the worker and "
        "sink processes: frame-forward (see bench_nodes.py)",
    )
    parser.add_argument(
        "--live-src",
        action="store_true",
        help="import beampipe from src/ as it is during the run instead of a "
        "snapshot taken at start",
    )
    parser.add_argument(
        "--encrypt",
        action="store_true",
        help="run beampipe with the pipeline option encrypt: true (every socket CURVE)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all samples here")
    args = parser.parse_args(argv)
    if args.encrypt:
        global PIPELINE
        PIPELINE += "encrypt: true\n"
    args.cpu_log = []
    if args.experiment:
        os.environ["BENCH_EXPERIMENT"] = args.experiment

    if args.quick:
        args.repeat = args.repeat or 1
        args.seconds = args.seconds or 0.7
        args.sizes = args.sizes or ["1KiB", "4MiB"]
        args.replicas = args.replicas or [1, 2]
    args.repeat = args.repeat or 3
    args.seconds = args.seconds or 3.0
    args.sizes = args.sizes or list(SIZES)
    args.replicas = args.replicas or list(REPLICAS)
    modes = args.latency or args.small or args.backpressure
    do_matrix = args.all or args.matrix or not modes

    info = machine()
    console.print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    results: dict[str, Any] = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    t0 = time.monotonic()
    if do_matrix:
        run_matrix(args, results)
    if args.all or args.small:
        run_small(args, results)
    if args.all or args.latency:
        args_l = argparse.Namespace(
            **{**vars(args), "duration": args.duration or (2.0 if args.quick else 10.0)}
        )
        run_latency(args_l, results)
    if args.all or args.backpressure:
        args_b = argparse.Namespace(
            **{**vars(args), "duration": args.duration or (10.0 if args.quick else 60.0)}
        )
        run_backpressure(args_b, results)
    console.print(
        f"total {time.monotonic() - t0:.0f} s; load average now "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if args.cpu_log:
        results["cpu"] = args.cpu_log
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
