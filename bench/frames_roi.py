"""Frames/s of a source -> ``frame.roi`` -> sink on frames of EIGER 4M size, against a plain loop
that reads the same frames and computes the same ROIs with numpy in one process, in the same
invocation (issue 17's benchmark): ``hdf5`` (``image_files`` on bitshuffle-LZ4 HDF5, the loop
reading with h5py) and ``cbf`` (``image_files`` on one CBF file per frame, byte-offset compressed
as a PILATUS/EIGER writes them, int32; the loop reading with ``fabio.open(path).data``).

Frames: the Pilatus 1M SAXS frame of NSLS-II LiX (``../shared/data/saxs-waxs-lix``, int32
1043 x 981) tiled 2 x 2 and padded to 2167 x 2070 (EIGER 4M), as uint32, each frame a Poisson
draw around it (seeded), in one HDF5 dataset chunked one frame per chunk and compressed with
bitshuffle-LZ4 (``hdf5plugin``), as an EIGER data file.

ROIs: three rectangles and one polygon, with no mask.

Throughput is the steady-state rate at the sink: (n - 1) / (last receipt - first receipt), so
process start-up is not counted; the plain loop's is measured the same way (per frame done).
Runs alternate plain, 1 replica, 2 replicas, ``--repeat`` times; the last line gives the medians.
The plain loop runs twice: in this process (the C allocator as a script has it) and in a child
process with the allocator settings beampipe gives its node processes
(``beampipe.launch.allocator.LARGE_BUFFERS``), so the ratio is shown against both.

    nice python bench/frames_roi.py --frames 100 --repeat 2 --format hdf5
    nice python bench/frames_roi.py --frames 40 --repeat 3 --format cbf
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import fabio
import h5py
import hdf5plugin
import numpy as np
from fabio.cbfimage import CbfImage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pipeline_run import run_quietly, sink_rate  # noqa: E402

from beampipe.launch.allocator import LARGE_BUFFERS  # noqa: E402
from beampipe.nodes.frame.regions import Region, RoiSpec  # noqa: E402

SAXS = REPO.parent / "shared" / "data" / "saxs-waxs-lix" / "AgBH-2020Aug16.h5"
SHAPE = (2167, 2070)
ROIS = {
    "beam": {"rect": {"x": 400, "y": 700, "width": 200, "height": 150}},
    "ring": {"rect": {"x": 1100, "y": 900, "width": 600, "height": 500}},
    "edge": {"rect": {"x": 0, "y": 0, "width": 2070, "height": 20}},
    "arc": {"polygon": [[100.5, 100.5], [900.5, 120.5], [500.5, 600.5]]},
}


def make_frames(path: Path, n: int) -> None:
    with h5py.File(SAXS) as f:
        base = f["AgBH_2020Aug16/primary/data/pil1M_image"][0].clip(0)
    tiled = np.pad(np.tile(base, (2, 2)), [(0, SHAPE[0] - 2 * 1043), (0, SHAPE[1] - 2 * 981)])
    rng = np.random.default_rng(17)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "entry/data/data",
            shape=(n, *SHAPE),
            dtype=np.uint32,
            chunks=(1, *SHAPE),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )
        for i in range(n):
            ds[i] = rng.poisson(tiled).astype(np.uint32)


def make_cbf(path: Path, folder: Path) -> None:
    """The frames of the HDF5 file at ``path`` as CBF files ``folder/f_NNNNN.cbf`` (int32)."""
    folder.mkdir()
    with h5py.File(path) as f:
        ds = f["entry/data/data"]
        for i in range(ds.shape[0]):
            CbfImage(data=ds[i].astype(np.int32)).write(str(folder / f"f_{i:05d}.cbf"))


def frames(kind: str, path: Path):
    """The frames as the plain loop reads them: h5py ``ds[i]``, or fabio on each CBF file."""
    if kind == "cbf":
        for cbf in sorted(path.glob("*.cbf")):
            yield fabio.open(str(cbf)).data
        return
    with h5py.File(path) as f:
        ds = f["entry/data/data"]
        for i in range(ds.shape[0]):
            yield ds[i]


def plain(kind: str, path: Path) -> float:
    """Frames/s of reading + the same ROI statistics in one loop."""
    regions = {k: Region.make(k, RoiSpec(**v), SHAPE, None) for k, v in ROIS.items()}
    done = []
    for frame in frames(kind, path):
        for region in regions.values():
            region.stats(frame)
        done.append(time.perf_counter())
    return (len(done) - 1) / (done[-1] - done[0])


def plain_large_buffers(kind: str, path: Path) -> float:
    """:func:`plain` in a child process with the node processes' allocator settings."""
    out = subprocess.run(
        [sys.executable, __file__, "--format", kind, "--loop-only", str(path)],
        env={**os.environ, **LARGE_BUFFERS},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


SOURCES = {
    "hdf5": '{{use: image_files, params: {{paths: "{path}", dataset: entry/data/data}}}}',
    "cbf": '{{use: image_files, params: {{paths: "{path}/*.cbf", stream_by: folder}}}}',
}


def pipeline(kind: str, path: Path, folder: Path, replicas: int) -> float:
    shutil.copy(REPO / "bench" / "bench_nodes.py", folder)
    times = folder / f"sink-{replicas}.npy"
    rois = json.dumps(ROIS)
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: frames-roi
        nodes:
          frames: {SOURCES[kind].format(path=path)}
          roi: {{use: frame.roi, replicas: {replicas}, params: {{rois: {rois}}}}}
          sink: {{use: "bench_nodes:Recorder", params: {{path: "{times}"}}}}
        connections:
          - frames -> roi
          - roi -> sink
        """)
    )
    sys.path.insert(0, str(folder))
    run_quietly(folder / "pipeline.yaml")
    return sink_rate(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--format", choices=["hdf5", "cbf"], default="hdf5")
    parser.add_argument("--loop-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_only:
        print(plain(args.format, args.loop_only))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "eiger4m.h5"
        make_frames(path, args.frames)
        if args.format == "cbf":
            make_cbf(path, folder / "cbf")
            path = folder / "cbf"
        files = sorted(path.glob("*.cbf")) if args.format == "cbf" else [path]
        size = sum(p.stat().st_size for p in files)
        print(
            f"{args.frames} frames {SHAPE}, {args.format}: "
            f"{size / args.frames / 2**20:.2f} MiB per frame on disk"
        )
        ratios: list[tuple[float, ...]] = []
        for run in range(1, args.repeat + 1):
            loop = plain(args.format, path)
            large = plain_large_buffers(args.format, path)
            one = pipeline(args.format, path, folder, 1)
            two = pipeline(args.format, path, folder, 2)
            ratios.append((loop, large, one / loop, two / loop, one / large, two / large))
            print(
                f"run {run}: plain loop {loop:.1f} frames/s ({large:.1f} with large buffers); "
                f"pipeline 1 replica {one:.1f} ({one / loop:.2f} x plain, {one / large:.2f} x "
                f"large), 2 replicas {two:.1f} ({two / loop:.2f} x plain, {two / large:.2f} x "
                "large)",
                flush=True,
            )
        loop, large, one, two, one_l, two_l = np.median(ratios, axis=0)
        print(
            f"median of {args.repeat}: plain loop {loop:.1f} frames/s ({large:.1f} with large "
            f"buffers); 1 replica {one:.2f} x plain ({one_l:.2f} x large), 2 replicas "
            f"{two:.2f} x plain ({two_l:.2f} x large)"
        )


if __name__ == "__main__":
    main()
