"""Frames/s through ``detector_sim`` -> ``ml.onnx`` -> sink with ``max_batch`` 1 and 8, against
onnxruntime called directly in a loop in one process on the same frames (batches of 1 and 8), in
the same invocation (issue 18's ``ml.onnx``).

Frames: ``detector_sim``'s 64 x 64 uint16 powder rings (its pool of 8 noisy frames, cycled), as
fast as the pipeline takes them. Model, built here with ``onnx.helper``: a small MLP on the
flattened frame, float32 ``[batch, 64, 64] -> 4096 -> 64 (ReLU) -> 8``, seeded weights; the node
casts the frames to float32, as the direct loop does. onnxruntime gets ``--threads`` intra-op
threads in both.

Throughput is the steady-state rate at the sink: (n - 1) / (last receipt - first receipt), so
process start-up (loading the model) is not counted; the direct loop's is measured the same way
(per spectrum done).

    nice python bench/onnx_infer.py --frames 5000 --repeat 2
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

from beampipe.nodes.sim.detector import DetectorSim  # noqa: E402
from beampipe.testing import run  # noqa: E402

SIDE = 64


def make_model(path: Path) -> None:
    """The MLP of the module docstring, saved at ``path``."""
    rng = np.random.default_rng(18)
    w1 = (rng.normal(size=(SIDE * SIDE, 64)) / SIDE).astype(np.float32)
    w2 = (rng.normal(size=(64, 8)) / 8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def pool(n: int) -> list[np.ndarray]:
    """The first ``n`` frames ``detector_sim`` sends with the params of :func:`pipeline`."""
    params = {"shape": [SIDE, SIDE], "frames": n, "pool": 8}
    return [m.data["image"] for m in run(DetectorSim, params=params).messages()]


def direct(model: Path, frames: list[np.ndarray], batch: int, threads: int) -> float:
    """Frames/s of onnxruntime in a loop over batches of ``batch`` frames (cast to float32 and
    stacked in the loop, as the node does)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    done = []
    for first in range(0, len(frames), batch):
        x = np.stack([f.astype(np.float32) for f in frames[first : first + batch]])
        session.run(["y"], {"x": x})
        done.extend([time.perf_counter()] * len(x))
    return (len(done) - 1) / (done[-1] - done[0])


def pipeline(n: int, model: Path, folder: Path, batch: int, threads: int) -> float:
    shutil.copy(REPO / "bench" / "bench_nodes.py", folder)
    times = folder / f"sink-{batch}.npy"
    params = (
        f"{{model: '{model}', cast: true, inputs: {{image: x}}, max_batch: {batch}, "
        f"max_wait: 0.01, provider: cpu, threads: {threads}}}"
    )
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(f"""\
        name: onnx-infer
        nodes:
          frames:
            use: detector_sim
            params: {{shape: [{SIDE}, {SIDE}], frames: {n}, pool: 8}}
          ml: {{use: ml.onnx, params: {params}}}
          sink: {{use: "bench_nodes:Recorder", params: {{path: "{times}"}}}}
        connections:
          - frames -> ml
          - ml -> sink
        """)
    )
    sys.path.insert(0, str(folder))
    run_quietly(folder / "pipeline.yaml")
    return sink_rate(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = folder / "mlp.onnx"
        frames = pool(args.frames)
        make_model(model)
        print(
            f"{args.frames} frames of {SIDE} x {SIDE} uint16, MLP {SIDE * SIDE}-64-8, "
            f"{args.threads} onnxruntime thread(s)"
        )
        for repeat in range(1, args.repeat + 1):
            for batch in (1, 8):
                loop = direct(model, frames, batch, args.threads)
                through = pipeline(args.frames, model, folder, batch, args.threads)
                print(
                    f"run {repeat}, batch {batch}: direct loop {loop:.0f} frames/s; pipeline "
                    f"{through:.0f} frames/s ({through / loop:.2f} x direct)"
                )


if __name__ == "__main__":
    main()
