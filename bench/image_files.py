"""Frames/s of ``image_files`` -> sink against a plain loop reading the same files with fabio or
h5py, in the same run, on frames of EIGER 4M size (2162 x 2068, int32 for CBF, uint32 for HDF5).

Data (made in a temporary folder, the same for both): ``--frames`` CBF files (byte-offset
compressed, as a PILATUS/EIGER writes them) and one HDF5 file holding the same number of frames
bitshuffle-LZ4 compressed, one frame per chunk (as the EIGER file writer). Counts are Poisson with
mean 0.5 (a weakly exposed frame: mostly 0 and 1, as in diffraction away from the rings).

* beampipe: ``image_files`` (``pace: max``) -> ``bench_nodes:Recorder`` (which does nothing with
  the frame) run by the launcher; rate = (n - 1) / (last - first receipt time) at the sink.
* plain: one process reading the frames in a loop (``fabio.open(path).data``; ``ds[i]``) and
  touching each (``frame[0, 0]``); rate = (n - 1) / (last - first frame read).

Usage: ``python bench/image_files.py [--frames 60] [--repeat 3] [--window-mb 64]``; a table on
stdout. Alternate the cases on a loaded machine and compare within one invocation only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
from fabio.cbfimage import CbfImage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fabio  # noqa: E402
from throughput import Quiet  # noqa: E402

from beampipe.config import load_pipeline  # noqa: E402
from beampipe.launch import Launcher  # noqa: E402

SHAPE = (2162, 2068)

PIPELINE = """
name: bench-image-files
nodes:
  frames:
    use: image_files
    params: {{paths: {paths}, stream_by: folder}}
  sink:
    use: bench_nodes:Recorder
    params: {{path: {out}}}
connections:
  - frames -> sink
"""


def make_data(folder: Path, frames: int) -> None:
    """``frames`` CBF files in ``folder/cbf`` and ``folder/h5/frames.h5`` (bitshuffle-LZ4)."""
    (folder / "cbf").mkdir()
    (folder / "h5").mkdir()
    rng = np.random.default_rng(0)
    stack = rng.poisson(0.5, size=(frames, *SHAPE)).astype(np.uint32)
    for k, frame in enumerate(stack):
        CbfImage(data=frame.astype(np.int32)).write(str(folder / "cbf" / f"f_{k:05d}.cbf"))
    with h5py.File(folder / "h5" / "frames.h5", "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        ds = entry.create_dataset(
            "data/data", data=stack, chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4")
        )
        entry["data"].attrs.update({"NX_class": "NXdata", "signal": "data"})
        del ds


def plain(kind: str, folder: Path) -> float:
    times = []
    if kind == "cbf":
        for path in sorted((folder / "cbf").glob("*.cbf")):
            frame = fabio.open(str(path)).data
            frame[0, 0]
            times.append(time.perf_counter())
    else:
        with h5py.File(folder / "h5" / "frames.h5") as f:
            ds = f["entry/data/data"]
            for i in range(ds.shape[0]):
                frame = ds[i]
                frame[0, 0]
                times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def pipeline(kind: str, folder: Path, window_mb: int) -> float:
    run = folder / f"run-{kind}"
    run.mkdir(exist_ok=True)
    shutil.copy(HERE / "bench_nodes.py", run)
    out = run / "sink.npy"
    paths = str(folder / "cbf" / "*.cbf") if kind == "cbf" else str(folder / "h5" / "frames.h5")
    (run / "pipeline.yaml").write_text(PIPELINE.format(paths=paths, out=out))
    launcher = Launcher(load_pipeline(run / "pipeline.yaml"), Quiet(), window_bytes=window_mb << 20)
    result = launcher.run()
    if result.exit_code != 0:
        raise RuntimeError("\n".join(result.errors))
    t = np.load(out)[:, 0]
    return (len(t) - 1) / (t[-1] - t[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window-mb", type=int, default=64, help="byte window of each pipe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        folder = Path(tmp)
        make_data(folder, args.frames)
        size = sum(p.stat().st_size for p in (folder / "cbf").iterdir()) / args.frames / 2**20
        h5 = (folder / "h5" / "frames.h5").stat().st_size / args.frames / 2**20
        print(f"{args.frames} frames {SHAPE}: CBF {size:.2f} MiB/frame, HDF5 bslz4 {h5:.2f}")
        print(f"load average {os.getloadavg()[0]:.1f}")
        print("| case | run | plain loop, frames/s | image_files -> sink, frames/s | ratio |")
        print("| --- | --: | --: | --: | --: |")
        for r in range(1, args.repeat + 1):
            for kind in ("cbf", "hdf5"):
                ref = plain(kind, folder)
                got = pipeline(kind, folder, args.window_mb)
                print(f"| {kind} | {r} | {ref:.1f} | {got:.1f} | {got / ref:.2f} |", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
