"""Frames/s of a science worker through beampipe (1 and 2 replicas) against the same library
called directly in a loop in one process, in the same invocation (issue 18's benchmark).

Cases (``--case``), one function each returning a :class:`Case`: ``integrate1d``
(``azint.integrate1d``, against pyFAI's ``integrate1d``) and ``peaks`` (``peaks.find``, against
OM's compiled peakfinder8). Another case is added by writing its function and naming it in
:data:`CASES`.

Frames: EIGER 4M size, 2167 x 2070 uint32: the Ni powder frame of NSLS-II XPD
(``examples/powder-xpd/data``, PerkinElmer 2048 x 2048, clipped at 0) zero-padded at the bottom
and right to 2167 x 2070, each frame a Poisson draw around it (seeded), in one HDF5 dataset
chunked one frame per chunk and compressed with bitshuffle-LZ4, as an EIGER data file. The
geometry is the frame's PONI with a detector of 200 um pixels of the padded shape, so the rings
are where the beamline saw them. For ``peaks``, 30 % of the frames also get 15-60 simulated Bragg
spots (Gaussian, Poisson noise: ``examples/serial-hits/spots.py``), about 11 peaks per frame.

Pipeline: ``image_files`` (the HDF5 file) -> the case's node (``replicas`` 1, then 2) ->
``bench_nodes:Recorder``. The direct loop reads each frame with h5py and calls the library on
it: the same work without the framework. Throughput is the steady-state rate, (n - 1) / (last -
first frame done), at the sink for the pipeline and per frame done for the loop, so start-up and
the first frame (pyFAI builds its look-up table there) are not counted.

pyFAI's Cython engines run OpenMP threads; ``--threads`` (default 1) sets ``OMP_NUM_THREADS``
for the loop and every node process alike, so that 2 replicas on 2 cores are compared with 2 x
one core's direct rate. The figures printed: each rate, the ratio pipeline / (replicas x direct
rate), and the framework's cost per frame in one replica, replicas / pipeline rate - 1 / direct
rate (us).

    nice python bench/science.py --case integrate1d --frames 40 --repeat 2
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
XPD = REPO / "examples" / "powder-xpd" / "data"
SHAPE = (2167, 2070)


@dataclass
class Case:
    """One benchmark case: ``node``, the pipeline node's mapping (YAML flow text, without
    ``replicas``), and ``direct``, which makes the reference once and returns its per-frame
    call."""

    node: str
    direct: Callable[[], Callable[[np.ndarray], object]]
    spots: bool = False
    """Frames with simulated Bragg spots in 30 % of them."""


def integrate1d(folder: Path) -> Case:
    """``azint.integrate1d`` (q in 1/nm, 1000 bins, CSR, Poisson sigma, polarization 0.99)
    against pyFAI's ``AzimuthalIntegrator.integrate1d`` with the same geometry and options."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ai = AzimuthalIntegrator()
    ai.load(str(XPD / "Ni_poni_file.poni"))
    names = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
    geometry = {"distance" if k == "dist" else k: float(getattr(ai, k)) for k in names}
    geometry.update(pixel1=2e-4, pixel2=2e-4)
    options = {"unit": "q_nm^-1", "polarization_factor": 0.99, "error_model": "poisson"}
    params = ", ".join(f"{k}: {v!r}" for k, v in {**geometry, **options}.items())
    params += f", shape: {list(SHAPE)}"

    def direct() -> Callable[[np.ndarray], object]:
        from pyFAI.detectors import Detector

        ref = AzimuthalIntegrator(
            dist=ai.dist,
            poni1=ai.poni1,
            poni2=ai.poni2,
            rot1=ai.rot1,
            rot2=ai.rot2,
            rot3=ai.rot3,
            detector=Detector(pixel1=2e-4, pixel2=2e-4, max_shape=SHAPE),
            wavelength=ai.wavelength,
        )
        return lambda frame: ref.integrate1d(frame, 1000, **options)

    return Case(f"{{use: azint.integrate1d, params: {{npt: 1000, {params}}}}}", direct)


def peaks(folder: Path) -> Case:
    """``peaks.find`` (peakfinder8: adc_threshold 200, min_snr 6, 2-200 pixels, local background
    radius 3, radii 0-1200 pixels from the PONI's beam centre, no mask) against OM's
    ``peakfinder_8`` called with the same settings, the radius map and mask made once."""
    from beampipe.nodes.peaks.geometry import center_from_poni

    fs, ss, _ = center_from_poni(str(XPD / "Ni_poni_file.poni"))  # the padding is bottom right
    settings = {"adc_threshold": 200.0, "min_snr": 6.0, "min_pixels": 2, "max_pixels": 200}
    params = ", ".join(f"{k}: {v!r}" for k, v in settings.items())
    node = f"{{use: peaks.find, params: {{center: [{fs!r}, {ss!r}], min_peaks: 20, {params}}}}}"

    def direct() -> Callable[[np.ndarray], object]:
        from om.algorithms._crystallography import peakfinder_8

        rows, cols = np.ogrid[: SHAPE[0], : SHAPE[1]]
        radius = np.hypot(cols - fs, rows - ss).astype(np.float32)
        mask = (radius <= 1200).astype(np.int8)
        args = (SHAPE[1], SHAPE[0], 1, 1, *settings.values(), 3)
        return lambda frame: peakfinder_8(
            2048, frame.astype(np.float32), mask, radius, 0, None, None, 0, *args
        )

    return Case(node, direct, spots=True)


CASES: dict[str, Callable[[Path], Case]] = {"integrate1d": integrate1d, "peaks": peaks}


def make_frames(path: Path, n: int, spots: bool = False) -> None:
    import fabio
    import h5py
    import hdf5plugin

    with fabio.open(str(XPD / "Ni_img_file.tiff.gz")) as img:
        base = np.asarray(img.data, dtype=np.float64).clip(0)
    padded = np.pad(base, [(0, SHAPE[0] - base.shape[0]), (0, SHAPE[1] - base.shape[1])])
    rng = np.random.default_rng(18)
    if spots:
        spec = importlib.util.spec_from_file_location(
            "serial_spots", REPO / "examples" / "serial-hits" / "spots.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with_spots = module.frames(padded, n, hit_fraction=0.3, seed=18)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "entry/data/data",
            shape=(n, *SHAPE),
            dtype=np.uint32,
            chunks=(1, *SHAPE),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        for i in range(n):
            frame = next(with_spots)[0] if spots else rng.poisson(padded)
            ds[i] = frame.astype(np.uint32)


def direct_rate(case: Case, path: Path) -> float:
    """Frames/s of reading each frame with h5py and calling the reference on it."""
    import h5py

    call = case.direct()
    done = []
    with h5py.File(path) as f:
        ds = f["entry/data/data"]
        for i in range(ds.shape[0]):
            call(ds[i])
            done.append(time.perf_counter())
    return (len(done) - 1) / (done[-1] - done[0])


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
    parser.add_argument("--case", choices=sorted(CASES), default="integrate1d")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS (default 1)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before pyFAI is imported; inherited
    sys.path.insert(0, str(REPO / "bench"))
    from beampipe.nodes.azint.geometry import load_pyfai

    load_pyfai()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "eiger4m.h5"
        case = CASES[args.case](folder)
        make_frames(path, args.frames, spots=case.spots)
        print(
            f"{args.case}: {args.frames} frames {SHAPE} uint32 (bitshuffle-LZ4, "
            f"{path.stat().st_size / args.frames / 2**20:.2f} MiB per frame), "
            f"OMP_NUM_THREADS={args.threads}, {os.cpu_count()} cores",
            flush=True,
        )
        rows = []
        for run in range(1, args.repeat + 1):
            loop = direct_rate(case, path)
            rates = {n: pipeline_rate(case, path, folder, n) for n in (1, 2)}
            row = [loop]
            text = f"run {run}: direct loop {loop:.2f} frames/s"
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
