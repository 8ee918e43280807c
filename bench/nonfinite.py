"""What counting NaN/inf in sent arrays costs (node option ``check_finite``, default on).

Two measurements, each against a baseline taken in the same invocation:

1. **Per frame**, in this process: :meth:`beampipe.runtime.notes.NoteLog.count_nonfinite` on a
   4 MiB float32 frame (1024 x 1024 Poisson counts; once all finite, once with one NaN, which
   takes the exact count), against what a node does to every frame it sends anyway (encoding
   it, :func:`beampipe.message.wire.encode`) and against the plain numpy check
   ``np.isfinite(frame).all()``. Medians of ``--repeat`` timings of ``--loops`` calls each.
2. **Through a pipeline**: ``detector_sim`` (float32 frames of 4 MiB, ``rate: max``) ->
   ``bench_nodes:FrameSum`` (passes the frame on) -> ``bench_nodes:Recorder``, run with
   ``check_finite: true`` on the source and the worker, then with ``false``, alternating,
   ``--runs`` times each; throughput (frames/s over the sink's steady second half) and the
   median ratio on/off.

    python bench/nonfinite.py [--frames 1500] [--runs 3]

Prints one line per measurement and a summary; nothing is asserted (the 2-core machines are
noisy: compare the ratios, see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pipeline_run import run_quietly

from beampipe.message import Message, encode
from beampipe.runtime.notes import NoteLog

HERE = Path(__file__).resolve().parent
SHAPE = (1024, 1024)

PIPELINE = """\
name: nonfinite-bench
nodes:
  det:
    use: detector_sim
    params: {{shape: [1024, 1024], dtype: float32, frames: {frames}, rate: max}}
    check_finite: {check}
  work:
    use: bench_nodes:FrameSum
    check_finite: {check}
  sink:
    use: bench_nodes:Recorder
    params: {{path: {path}}}
connections:
  - det.out -> work.in
  - work.out -> sink.in
"""


def per_call(function, loops: int, repeat: int) -> float:
    """Median seconds per call of ``function()`` over ``repeat`` timings of ``loops`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            function()
        times.append((time.perf_counter() - t0) / loops)
    return statistics.median(times)


def micro(loops: int, repeat: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    frame = rng.poisson(20, SHAPE).astype(np.float32)
    bad = frame.copy()
    bad[500, 500] = np.nan
    notes = NoteLog()
    return {
        "count_nonfinite (all finite)": per_call(
            lambda: notes.count_nonfinite({"image": frame}, "s", 1), loops, repeat
        ),
        "count_nonfinite (one NaN)": per_call(
            lambda: notes.count_nonfinite({"image": bad}, "s", 1), loops, repeat
        ),
        "baseline: np.isfinite(frame).all()": per_call(
            lambda: np.isfinite(frame).all(), loops, repeat
        ),
        "baseline: encode(Message(frame))": per_call(
            lambda: encode(Message(data={"image": frame}, stream="s", id=1)), loops, repeat
        ),
    }


def pipeline_rate(folder: Path, frames: int, check: bool) -> float:
    """Frames/s at the sink over the second half of the run."""
    out = folder / f"sink-{check}.npy"
    text = PIPELINE.format(frames=frames, check=str(check).lower(), path=out)
    path = folder / "pipeline.yaml"
    path.write_text(text)
    run_quietly(path)
    t = np.load(out)[:, 0]
    half = t[len(t) // 2 :]
    return (len(half) - 1) / (half[-1] - half[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500, help="frames per pipeline run")
    parser.add_argument("--runs", type=int, default=3, help="pipeline runs per setting")
    parser.add_argument("--loops", type=int, default=50, help="calls per micro timing")
    parser.add_argument("--repeat", type=int, default=7, help="micro timings")
    args = parser.parse_args()

    print(f"per 4 MiB float32 frame {SHAPE}, median of {args.repeat} x {args.loops} calls:")
    timings = micro(args.loops, args.repeat)
    for label, seconds in timings.items():
        print(f"  {label:<38} {seconds * 1e6:8.0f} µs")
    check = timings["count_nonfinite (all finite)"]
    print(
        f"  count_nonfinite / encode: {check / timings['baseline: encode(Message(frame))']:.2f}, "
        f"/ np.isfinite().all(): {check / timings['baseline: np.isfinite(frame).all()']:.2f}"
    )

    folder = Path(tempfile.mkdtemp(prefix="bench-nonfinite-"))
    shutil.copy(HERE / "bench_nodes.py", folder)
    sys.path.insert(0, str(folder))
    try:
        rates: dict[bool, list[float]] = {True: [], False: []}
        for k in range(args.runs):
            for setting in (True, False):
                rate = pipeline_rate(folder, args.frames, setting)
                rates[setting].append(rate)
                print(f"  run {k + 1}: check_finite {str(setting).lower():<5} {rate:7.0f} frames/s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    paired = statistics.median(a / b for a, b in zip(rates[True], rates[False], strict=True))
    print(
        f"through detector_sim -> FrameSum -> Recorder ({args.frames} frames, median of "
        f"{args.runs}): check_finite on {on:.0f} frames/s, off {off:.0f} frames/s, "
        f"ratio of medians {on / off:.2f}, median of paired ratios {paired:.2f}"
    )


if __name__ == "__main__":
    main()
