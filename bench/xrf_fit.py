"""Spectra/s through ``mca_files`` -> ``xrf.fit`` (1 and 2 replicas) -> sink, against PyMca's fit
called directly in a loop in one process on the same spectra, in the same invocation (issue 20's
benchmark).

Spectra: PyMca's real steel spectrum (``tests/data/xrf/Steel.spe``, 2048 channels), each a
Poisson draw around it (seeded), written as one SPEC scan with one ``@A`` MCA line per point;
fitted with ``Steel.cfg`` in ``--mode`` (``linear``, PyMca's linear fit, by default).

``--mode fast``: ``xrf.fit``'s stack fit (PyMca's ``FastXRFLinearFit`` on batches of
``--max-batch`` spectra), with ``Steel.cfg`` changed to the SNIP background that the fast fit
needs (``[fit] stripalgorithm = 1``). Its direct baseline is ``fitMultipleSpectra`` called once
on the whole stack in one process: spectra / the call's wall time, which includes the ~0.5 s in
which PyMca configures itself on every call (so use several thousand spectra); printed beside it,
the same stack through beampipe's own ``StackFit`` (the model built once, as in a replica).

Throughput is the steady-state rate at the sink: (n - 1) / (last receipt - first receipt), so
process start-up (reading the .cfg, configuring PyMca) is not counted; the direct loop's is
measured the same way (per spectrum fitted), with one fit object configured before the loop.
Target (issue 20): >= 0.9 x (replicas x direct rate) while replicas <= cores.

    nice python bench/xrf_fit.py --spectra 200 --repeat 2
    nice python bench/xrf_fit.py --mode fast --spectra 5000 --repeat 2
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
from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory, FastXRFLinearFit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pipeline_run import run_quietly, sink_rate  # noqa: E402

from beampipe.nodes.xrf.fit import load_config  # noqa: E402
from beampipe.nodes.xrf.stackfit import StackFit  # noqa: E402

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


def snip_config(folder: Path) -> Path:
    """Steel.cfg with the SNIP background (``[fit] stripalgorithm = 1``), for the fast fit."""
    path = folder / "Steel-snip.cfg"
    path.write_text(CONFIG.read_text().replace("\nstripalgorithm = 0\n", "\nstripalgorithm = 1\n"))
    return path


def direct_stack(spectra: list[np.ndarray], config: Path) -> tuple[float, float]:
    """Spectra/s of ``FastXRFLinearFit.fitMultipleSpectra`` called once on the whole stack, and
    of :class:`StackFit` (model built beforehand) on the same stack."""
    stack = np.stack(spectra)
    fast = FastXRFLinearFit.FastXRFLinearFit()
    fast.setFitConfigurationFile(str(config))
    start = time.perf_counter()
    fast.fitMultipleSpectra(y=stack, refit=True)
    pymca = len(spectra) / (time.perf_counter() - start)
    fit = StackFit(load_config(config))
    fit.fit(stack[:1])
    start = time.perf_counter()
    fit.fit(stack)
    return pymca, len(spectra) / (time.perf_counter() - start)


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


def pipeline(scan: Path, folder: Path, replicas: int, mode: str, batch: int) -> float:
    shutil.copy(REPO / "bench" / "bench_nodes.py", folder)
    times = folder / f"sink-{replicas}.npy"
    config = snip_config(folder) if mode == "fast" else CONFIG
    params = f'config: "{config}", mode: {mode}'
    if mode == "fast":
        params += f", max_batch: {batch}"
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: xrf-fit
        nodes:
          spectra: {{use: mca_files, params: {{paths: "{scan}"}}}}
          fit: {{use: xrf.fit, replicas: {replicas}, params: {{{params}}}}}
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
    parser.add_argument("--mode", choices=["linear", "full", "fast"], default="linear")
    parser.add_argument("--max-batch", type=int, default=32, help="fast mode: spectra per stack")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan = folder / "scan.mca"
        spectra = make_scan(scan, args.spectra)
        print(f"{args.spectra} spectra of 2048 channels, {args.mode} fit with {CONFIG.name}")
        for run in range(1, args.repeat + 1):
            if args.mode == "fast":
                loop, ours = direct_stack(spectra, snip_config(folder))
                print(f"run {run}: StackFit on the whole stack {ours:.1f} spectra/s")
            else:
                loop = direct(spectra, args.mode)
            one = pipeline(scan, folder, 1, args.mode, args.max_batch)
            two = pipeline(scan, folder, 2, args.mode, args.max_batch)
            what = "fitMultipleSpectra on the stack" if args.mode == "fast" else "direct loop"
            print(
                f"run {run}: {what} {loop:.1f} spectra/s; pipeline 1 replica {one:.1f} "
                f"({one / loop:.2f} x direct), 2 replicas {two:.1f} ({two / (2 * loop):.2f} x "
                "2 x direct)"
            )


if __name__ == "__main__":
    main()
