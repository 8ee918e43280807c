"""Frames/s of ``peaks.find`` through beampipe (1 and 2 replicas) against OM's peakfinder8 called
directly in a loop in one process, in the same invocation (issue 18's benchmark, case ``peaks``).

Written in the style of ``bench/science.py`` (branch ``azint``: a function per case returning a
:class:`Case`), so that :func:`peaks` can become its ``peaks`` case.

Frames: EIGER 4M size, 2167 x 2070 int32: the Ni powder frame of NSLS-II XPD
(``../shared/data/powder-ni-xpd``, PerkinElmer 2048 x 2048, clipped at 0) zero-padded at the
bottom and right, each frame a Poisson draw around it with, in 30 % of them, 15-60 simulated
Bragg spots (``examples/serial-hits/spots.py``), in one HDF5 dataset chunked one frame per chunk
and compressed with bitshuffle-LZ4, as an EIGER data file. The beam centre is the frame's PONI's
(pyFAI ``getFit2D``), so the rings are 1-pixel radial bins' background.

Pipeline: ``image_files`` (the HDF5 file) -> ``peaks.find`` (``replicas`` 1, then 2) ->
``bench_nodes:Recorder``. The direct loop reads each frame with h5py and calls OM's
``peakfinder_8`` on it (float32, mask and radius map made once): the same work without the
framework. Throughput is the steady-state rate, (n - 1) / (last - first frame done), at the sink
for the pipeline and per frame done for the loop; the loop's calls alone are timed too (in the
pipeline the reading is another process's work, overlapping). The figures printed: each rate,
the ratio pipeline / (replicas x direct rate), and the framework's cost per frame in one
replica, replicas / pipeline rate - 1 / direct rate (us).

    nice python bench/science_peaks.py --frames 40 --repeat 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
XPD = REPO.parent / "shared" / "data" / "powder-ni-xpd"
SHAPE = (2167, 2070)
SETTINGS = {"adc_threshold": 200.0, "min_snr": 6.0, "min_pixels": 2, "max_pixels": 200}


@dataclass
class Case:
    """One benchmark case: ``node``, the pipeline node's mapping (YAML flow text, without
    ``replicas``), and ``direct``, which makes the reference once and returns its per-frame
    call."""

    node: str
    direct: Callable[[], Callable[[np.ndarray], object]]


def center() -> tuple[float, float]:
    """The direct beam (fs, ss) in pixels of the Ni frame's PONI (the padding is at the bottom
    and right, so it is the padded frame's too)."""
    from beampipe.nodes.peaks.geometry import center_from_poni

    fs, ss, _ = center_from_poni(str(XPD / "Ni_poni_file.poni"))
    return fs, ss


def peaks(folder: Path) -> Case:
    """``peaks.find`` (peakfinder8: adc_threshold 200, min_snr 6, 2-200 pixels, local background
    radius 3, radii 0-1200 pixels, no mask) against OM's ``peakfinder_8`` with the same
    settings."""
    fs, ss = center()
    params = ", ".join(f"{k}: {v!r}" for k, v in SETTINGS.items())
    node = f"{{use: peaks.find, params: {{center: [{fs!r}, {ss!r}], min_peaks: 20, {params}}}}}"

    def direct() -> Callable[[np.ndarray], object]:
        from om.algorithms._crystallography import peakfinder_8

        rows, cols = np.ogrid[: SHAPE[0], : SHAPE[1]]
        radius = np.hypot(cols - fs, rows - ss).astype(np.float32)
        mask = (radius <= 1200).astype(np.int8)
        s = SETTINGS

        def call(frame: np.ndarray) -> object:
            return peakfinder_8(
                2048,
                frame.astype(np.float32),
                mask,
                radius,
                0,
                None,
                None,
                0,
                SHAPE[1],
                SHAPE[0],
                1,
                1,
                s["adc_threshold"],
                s["min_snr"],
                s["min_pixels"],
                s["max_pixels"],
                3,
            )

        return call

    return Case(node, direct)


CASES: dict[str, Callable[[Path], Case]] = {"peaks": peaks}


def make_frames(path: Path, n: int) -> None:
    """The frames (see the module docstring) in ``path``."""
    import fabio
    import h5py
    import hdf5plugin

    spec = importlib.util.spec_from_file_location(
        "serial_spots", REPO / "examples" / "serial-hits" / "spots.py"
    )
    spots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spots)
    with fabio.open(str(XPD / "Ni_img_file.tiff")) as img:
        base = np.asarray(img.data, dtype=np.float64).clip(0)
    padded = np.pad(base, [(0, SHAPE[0] - base.shape[0]), (0, SHAPE[1] - base.shape[1])])
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "entry/data/data",
            shape=(n, *SHAPE),
            dtype=np.int32,
            chunks=(1, *SHAPE),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        for i, (frame, _) in enumerate(spots.frames(padded, n, hit_fraction=0.3, seed=18)):
            ds[i] = frame


def direct_rate(case: Case, path: Path) -> tuple[float, float, float]:
    """Frames/s of reading each frame with h5py and calling the reference on it; frames/s of
    the calls alone (the reading left out, as it overlaps with the work in a pipeline, where the
    source is another process); the mean number of peaks found."""
    import h5py

    call = case.direct()
    done, found, calls = [], [], 0.0
    with h5py.File(path) as f:
        ds = f["entry/data/data"]
        for i in range(ds.shape[0]):
            frame = ds[i]
            t = time.perf_counter()
            result = call(frame)
            calls += time.perf_counter() - t
            found.append(len(result[0]))
            done.append(time.perf_counter())
    return (len(done) - 1) / (done[-1] - done[0]), len(done) / calls, float(np.mean(found))


def pipeline_rate(case: Case, path: Path, folder: Path, replicas: int) -> float:
    from pipeline_run import run_quietly, sink_rate

    shutil.copy(REPO / "bench" / "bench_nodes.py", folder)
    times = folder / f"sink-{replicas}.npy"
    node = case.node.replace("{use:", f"{{replicas: {replicas}, use:", 1)
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: science
        nodes:
          frames: {{use: image_files, params: {{paths: "{path}", dataset: entry/data/data}}}}
          work: {node}
          sink: {{use: "bench_nodes:Recorder", params: {{path: "{times}"}}}}
        connections:
          - frames -> work
          - work -> sink
        """)
    )
    sys.path.insert(0, str(folder))
    run_quietly(folder / "pipeline.yaml")
    return sink_rate(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="peaks")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "eiger4m.h5"
        make_frames(path, args.frames)
        case = CASES[args.case](folder)
        print(
            f"{args.case}: {args.frames} frames {SHAPE} int32 (bitshuffle-LZ4, "
            f"{path.stat().st_size / args.frames / 2**20:.2f} MiB per frame), "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        rows = []
        for run in range(1, args.repeat + 1):
            loop, alone, found = direct_rate(case, path)
            rates = {n: pipeline_rate(case, path, folder, n) for n in (1, 2)}
            row = [loop]
            text = (
                f"run {run}: direct loop {loop:.2f} frames/s (the calls alone {alone:.2f}; "
                f"{found:.1f} peaks/frame)"
            )
            for n, rate in rates.items():
                ratio = rate / (n * loop)
                cost = (n / rate - 1 / loop) * 1e6
                row += [rate, ratio, cost]
                text += (
                    f"; {n} replica{'s' if n > 1 else ''} {rate:.2f} frames/s "
                    f"({ratio:.2f} x {n} x direct, framework {cost:.0f} us/frame)"
                )
            rows.append(row)
            print(text, flush=True)
        loop, one, r1, c1, two, r2, c2 = np.median(rows, axis=0)
        print(
            f"median of {args.repeat}: direct {loop:.2f} frames/s; 1 replica {one:.2f} "
            f"({r1:.2f} x direct, {c1:.0f} us/frame); 2 replicas {two:.2f} ({r2:.2f} x 2 x "
            f"direct, {c2:.0f} us/frame)"
        )


if __name__ == "__main__":
    main()
