"""Spectra/s through ``mca_files`` -> ``xrf.fit`` (1 and 2 replicas) -> sink, against PyMca's fit
called directly in a loop in one process on the same spectra, in the same invocation (issue 20's
benchmark).

Spectra: PyMca's real steel spectrum (``tests/data/xrf/Steel.spe``, 2048 channels), each a
Poisson draw around it (seeded), written as one SPEC scan with one ``@A`` MCA line per point;
fitted with ``Steel.cfg`` in ``--mode`` (``linear``, PyMca's linear fit, by default).

Throughput is the steady-state rate at the sink: (n - 1) / (last receipt - first receipt), so
process start-up (reading the .cfg, configuring PyMca) is not counted; the direct loop's is
measured the same way (per spectrum fitted), with one fit object configured before the loop.
Target (issue 20): >= 0.9 x (replicas x direct rate) while replicas <= cores.

    nice python bench/xrf_fit.py --spectra 200 --repeat 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PyMca5.PyMcaIO import ConfigDict, specfilewrapper
from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pipeline_run import run_quietly, sink_rate  # noqa: E402

DATA = REPO / "tests" / "data" / "xrf"
CONFIG = DATA / "Steel.cfg"


def make_scan(path: Path, n: int) -> list[np.ndarray]:
    """Writes ``n`` Poisson draws around Steel.spe as one SPEC scan; returns them."""
    base = np.asarray(specfilewrapper.Specfile(str(DATA / "Steel.spe"))[0].mca(1))
    rng = np.random.default_rng(20)
    spectra = [rng.poisson(base).astype(np.float64) for _ in range(n)]
    lines = ["#F bench", "", "#S 1 bench", "#N 1", f"#@CHANN {base.size} 0 {base.size - 1} 1"]
    lines += ["#L point"]
    for k, s in enumerate(spectra):
        lines += [str(k), "@A " + " ".join(str(int(v)) for v in s)]
    path.write_text("\n".join(lines) + "\n")
    return spectra


def direct(spectra: list[np.ndarray], mode: str) -> float:
    """Spectra/s of PyMca's fit in a loop, one fit object configured once."""
    config = ConfigDict.ConfigDict()
    config.read(str(CONFIG))
    config["fit"]["linearfitflag"] = 1 if mode == "linear" else 0
    fit = ClassMcaTheory.ClassMcaTheory()
    config = fit.configure(config)
    done = []
    for y in spectra:
        fit.setData(
            np.arange(y.size, dtype=np.float64),
            y,
            xmin=config["fit"]["xmin"],
            xmax=config["fit"]["xmax"],
        )
        fit.estimate()
        fit.startfit(digest=1)
        done.append(time.perf_counter())
    return (len(done) - 1) / (done[-1] - done[0])


def pipeline(scan: Path, folder: Path, replicas: int, mode: str) -> float:
    shutil.copy(REPO / "bench" / "bench_nodes.py", folder)
    times = folder / f"sink-{replicas}.npy"
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: xrf-fit
        nodes:
          spectra: {{use: mca_files, params: {{paths: "{scan}"}}}}
          fit: {{use: xrf.fit, replicas: {replicas}, params: {{config: "{CONFIG}", mode: {mode}}}}}
          sink: {{use: "bench_nodes:Recorder", params: {{path: "{times}"}}}}
        connections:
          - spectra -> fit
          - fit -> sink
        """)
    )
    sys.path.insert(0, str(folder))
    run_quietly(folder / "pipeline.yaml")
    return sink_rate(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--mode", choices=["linear", "full"], default="linear")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan = folder / "scan.mca"
        spectra = make_scan(scan, args.spectra)
        print(f"{args.spectra} spectra of 2048 channels, {args.mode} fit with {CONFIG.name}")
        for run in range(1, args.repeat + 1):
            loop = direct(spectra, args.mode)
            one = pipeline(scan, folder, 1, args.mode)
            two = pipeline(scan, folder, 2, args.mode)
            print(
                f"run {run}: direct loop {loop:.1f} spectra/s; pipeline 1 replica {one:.1f} "
                f"({one / loop:.2f} x direct), 2 replicas {two:.1f} ({two / (2 * loop):.2f} x "
                "2 x direct)"
            )


if __name__ == "__main__":
    main()
