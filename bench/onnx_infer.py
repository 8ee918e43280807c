"""Messages/s through ``mca_files`` -> ``ml.onnx`` -> sink with ``max_batch`` 1 and 8, against
onnxruntime called directly in a loop in one process on the same spectra (batches of 1 and 8),
in the same invocation (issue 18's ``ml.onnx``).

Spectra: Poisson draws (seeded) around PyMca's real steel spectrum (``tests/data/xrf/Steel.spe``,
2048 channels), written as one SPEC scan. Model, built here with ``onnx.helper``: a small MLP,
float32 ``[batch, 2048] -> 64 (ReLU) -> 8``, seeded weights; the node casts the float64 spectra to
float32, as the direct loop does. onnxruntime gets ``--threads`` intra-op threads in both.

Throughput is the steady-state rate at the sink: (n - 1) / (last receipt - first receipt), so
process start-up (loading the model) is not counted; the direct loop's is measured the same way
(per spectrum done).

    nice python bench/onnx_infer.py --spectra 2000 --repeat 2
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
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pipeline_run import run_quietly, sink_rate  # noqa: E402
from xrf_fit import make_scan  # noqa: E402


def make_model(path: Path) -> None:
    """The MLP of the module docstring, saved at ``path``."""
    rng = np.random.default_rng(18)
    w1 = (rng.normal(size=(2048, 64)) / 45).astype(np.float32)
    w2 = (rng.normal(size=(64, 8)) / 8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def direct(model: Path, spectra: list[np.ndarray], batch: int, threads: int) -> float:
    """Spectra/s of onnxruntime in a loop over batches of ``batch`` spectra (cast to float32
    and stacked in the loop, as the node does)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    done = []
    for first in range(0, len(spectra), batch):
        x = np.stack([s.astype(np.float32) for s in spectra[first : first + batch]])
        session.run(["y"], {"x": x})
        done.extend([time.perf_counter()] * len(x))
    return (len(done) - 1) / (done[-1] - done[0])


def pipeline(scan: Path, model: Path, folder: Path, batch: int, threads: int) -> float:
    shutil.copy(REPO / "bench" / "bench_nodes.py", folder)
    times = folder / f"sink-{batch}.npy"
    params = (
        f"{{model: '{model}', cast: true, inputs: {{spectrum: x}}, max_batch: {batch}, "
        f"max_wait: 0.01, provider: cpu, threads: {threads}}}"
    )
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: onnx-infer
        nodes:
          spectra: {{use: mca_files, params: {{paths: "{scan}"}}}}
          ml: {{use: ml.onnx, params: {params}}}
          sink: {{use: "bench_nodes:Recorder", params: {{path: "{times}"}}}}
        connections:
          - spectra -> ml
          - ml -> sink
        """)
    )
    sys.path.insert(0, str(folder))
    run_quietly(folder / "pipeline.yaml")
    return sink_rate(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan, model = folder / "scan.mca", folder / "mlp.onnx"
        spectra = make_scan(scan, args.spectra)
        make_model(model)
        print(f"{args.spectra} spectra of 2048 channels, MLP 2048-64-8, {args.threads} thread(s)")
        for run in range(1, args.repeat + 1):
            for batch in (1, 8):
                loop = direct(model, spectra, batch, args.threads)
                through = pipeline(scan, model, folder, batch, args.threads)
                print(
                    f"run {run}, batch {batch}: direct loop {loop:.0f} spectra/s; pipeline "
                    f"{through:.0f} spectra/s ({through / loop:.2f} x direct)"
                )


if __name__ == "__main__":
    main()
