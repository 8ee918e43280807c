"""``ml.onnx``: tiny models built here with ``onnx.helper`` (a linear layer + ReLU, a 3x3
convolution + ReLU on frames, a model with two inputs and two outputs), run through the node and
compared with onnxruntime called directly on the same inputs (exact); batched equals one by one;
through ``beampipe run`` on the real spectra of examples/xrf-map and the real XPD frame of
examples/powder-xpd (binned by ``frame.bin``); the errors for bad params, models and messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import NODES, REPO, Recorder, beampipe
from onnx import TensorProto, helper, numpy_helper
from prometheus_client import generate_latest
from pydantic import ValidationError

import beampipe as bp
from beampipe.config import load_pipeline
from beampipe.launch import Launcher
from beampipe.nodes.ml.inference import InputMismatch, OnnxInference
from beampipe.nodes.ml.model import ModelError
from beampipe.testing import Harness, run
from beampipe.viewer.prometheus import RunCollector, registry

RNG = np.random.default_rng(18)
PROVIDER = (
    "CUDAExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers()
    else "CPUExecutionProvider"
)


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def linear_model(path: Path, n_in: int = 16, n_out: int = 4, batch: str | int = "batch") -> Path:
    """``y = relu(x @ W + b)``, x: float32 [batch, n_in], y: float32 [batch, n_out]."""
    w = RNG.normal(size=(n_in, n_out)).astype(np.float32)
    b = RNG.normal(size=n_out).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return save(graph, path)


def conv_model(path: Path, ny: int, nx: int) -> Path:
    """Two 3x3 filters + ReLU on a frame: ``frame`` float32 [batch, ny, nx] -> ``features``
    float32 [batch, 2, ny, nx] (zero padding)."""
    kernel = RNG.normal(size=(2, 1, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["frame", "axis1"], ["chan"]),
            helper.make_node("Conv", ["chan", "K"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["features"]),
        ],
        "conv",
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, ["batch", ny, nx])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2, ny, nx])],
        [
            numpy_helper.from_array(kernel, "K"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    return save(graph, path)


def two_inputs_model(path: Path) -> Path:
    """``sum = a + b``, ``prod = a * b``; a, b: float32 [batch, 8]."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 8]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["batch", 8]),
        ],
    )
    return save(graph, path)


def same(a: np.ndarray, b: np.ndarray) -> None:
    """``a`` equals ``b``: exactly on CPU, where onnxruntime computes a row of a batch as a batch
    of one; on CUDA to float32 rounding (its kernels may differ with the batch size)."""
    if PROVIDER == "CPUExecutionProvider":
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def direct(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime called directly."""
    return ort.InferenceSession(str(path), providers=[PROVIDER]).run(None, feeds)


def messages(arrays: list[np.ndarray], name: str = "x", stream: str = "s") -> list[bp.Message]:
    return [
        bp.Message(data={name: a}, metadata={"k": i}, stream=stream, id=i + 1)
        for i, a in enumerate(arrays)
    ]


@pytest.mark.parametrize("max_batch", [1, 4])
def test_linear_equals_onnxruntime_directly(tmp_path: Path, max_batch: int) -> None:
    model = linear_model(tmp_path / "linear.onnx")
    xs = [RNG.normal(size=16).astype(np.float32) for _ in range(10)]
    results = run(OnnxInference, messages(xs), params={"model": str(model), "max_batch": max_batch})
    out = results.messages()
    assert [(m.stream, m.id) for m in out] == [("s", i + 1) for i in range(10)]
    # the node's calls: one per message, or batches of 4, 4, 2 (what one feed() brings)
    sizes = [1] * 10 if max_batch == 1 else [4, 4, 2]
    first = 0
    for size in sizes:
        (expected,) = direct(model, {"x": np.stack(xs[first : first + size])})
        for k in range(size):
            y = out[first + k].data["y"]
            assert y.dtype == np.float32 and y.shape == (4,)
            np.testing.assert_array_equal(y, expected[k])
        first += size
    assert out[3].metadata == {"k": 3, "signal": "y", "onnx_provider": PROVIDER}
    assert results.warnings == {} and results.dead_letters == []


def test_batched_equals_one_by_one(tmp_path: Path) -> None:
    model = conv_model(tmp_path / "conv.onnx", 32, 48)
    frames = [RNG.poisson(100, size=(32, 48)).astype(np.float32) for _ in range(8)]
    one = run(OnnxInference, messages(frames, "frame"), params={"model": str(model)})
    batched = run(
        OnnxInference, messages(frames, "frame"), params={"model": str(model), "max_batch": 8}
    )
    (expected,) = direct(model, {"frame": np.stack(frames)})
    for a, b, e in zip(one.messages(), batched.messages(), expected, strict=True):
        assert a.data["features"].shape == (2, 32, 48)
        np.testing.assert_array_equal(b.data["features"], e)
        same(a.data["features"], b.data["features"])


def test_two_inputs_mapped_scaled_and_cast(tmp_path: Path) -> None:
    model = two_inputs_model(tmp_path / "two.onnx")
    ps = [RNG.integers(0, 1000, size=8).astype(np.uint16) for _ in range(5)]
    qs = [RNG.normal(size=8) for _ in range(5)]  # float64
    items = [
        bp.Message(data={"p": p, "q": q}, stream="s", id=i + 1)
        for i, (p, q) in enumerate(zip(ps, qs, strict=True))
    ]
    params = {
        "model": str(model),
        "inputs": {"p": "a", "q": "b"},
        "outputs": {"prod": "product"},
        "scale": {"a": 0.5},
        "offset": {"a": -2.0},
        "cast": True,
        "shapes": {"a": [8], "b": [8]},
        "dtypes": {"a": "float32"},
        "max_batch": 5,
    }
    out = run(OnnxInference, items, params=params).messages()
    a = np.stack([p.astype(np.float32) * np.float32(0.5) + np.float32(-2.0) for p in ps])
    b = np.stack([q.astype(np.float32) for q in qs])
    _, prod = direct(model, {"a": a, "b": b})
    assert [sorted(m.data) for m in out] == [["product"]] * 5
    for k, m in enumerate(out):
        np.testing.assert_array_equal(m.data["product"], prod[k])


def test_messages_of_different_shapes_go_in_separate_calls(tmp_path: Path) -> None:
    path = tmp_path / "dyn.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])],
    )
    save(graph, path)
    xs = [RNG.normal(size=n).astype(np.float32) for n in (4, 6, 4, 6, 5)]
    out = run(OnnxInference, messages(xs), params={"model": str(path), "max_batch": 8}).messages()
    for x, m in zip(xs, out, strict=True):
        np.testing.assert_array_equal(m.data["y"], np.maximum(x, 0))


def test_harness_batches_and_falls_back_one_by_one_on_a_bad_message(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "linear.onnx")
    xs = [RNG.normal(size=16).astype(np.float32) for _ in range(4)]
    xs[2] = xs[2].astype(np.float64)  # wrong dtype: the batch call raises, then process() names it
    harness = Harness(OnnxInference, {"model": str(model), "max_batch": 4})
    with pytest.raises(InputMismatch, match=r"stream 's', id 3: data 'x' is float64, model input"):
        harness.feed(messages(xs))
    assert [m.id for m in harness.results.messages()] == [1, 2]
    harness.close()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            np.zeros(16, np.float64),
            r"id 1: data 'x' is float64, model input 'x' is declared float32",
        ),
        (np.zeros(15, np.float32), r"data 'x' has shape \[15\], model input 'x' is declared "),
        (np.zeros((2, 16), np.float32), r"has shape \[2, 16\].*\[batch, 16\] \(\[16\] per message"),
    ],
)
def test_message_that_does_not_fit_the_model(tmp_path: Path, data: np.ndarray, error: str) -> None:
    model = linear_model(tmp_path / "linear.onnx")
    with pytest.raises(InputMismatch, match=error):
        run(OnnxInference, messages([data]), params={"model": str(model)})


def test_missing_data_item(tmp_path: Path) -> None:
    model = linear_model(tmp_path / "linear.onnx")
    with pytest.raises(InputMismatch, match=r"data 'x' \(for model input 'x'\) is missing .*'z'"):
        run(OnnxInference, messages([np.zeros(16, np.float32)], "z"), params={"model": str(model)})


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (
            {"shapes": {"x": [15]}},
            r"param 'shapes.x': \[15\], but model input 'x' is declared "
            r"\[batch, 16\] \(\[16\] per message\)",
        ),
        (
            {"dtypes": {"x": "float64"}},
            r"param 'dtypes.x': float64, but model input 'x' is "
            "declared float32",
        ),
        (
            {"inputs": {"frame": "image"}},
            r"param 'inputs.frame': the model has no input 'image' "
            r"\(its inputs: 'x'\)",
        ),
        ({"outputs": {"z": "out"}}, r"param 'outputs.z': the model has no output 'z'"),
        ({"scale": {"q": 2.0}}, r"param 'scale.q': the model has no input 'q'"),
        ({"batch_axis": False, "max_batch": 2}, r"param 'max_batch': batching needs batch_axis"),
    ],
)
def test_params_that_do_not_fit_the_model(tmp_path: Path, params: dict, error: str) -> None:
    model = linear_model(tmp_path / "linear.onnx")
    with pytest.raises(ValidationError, match=error):
        OnnxInference.Params.model_validate({"model": str(model), **params})


def test_models_that_do_not_fit(tmp_path: Path) -> None:
    fixed = linear_model(tmp_path / "fixed.onnx", batch=1)
    with pytest.raises(
        ValidationError,
        match=r"param 'max_batch': 4, but model input 'x' is "
        r"declared \[1, 16\]: its batch axis is fixed to 1",
    ):
        OnnxInference.Params.model_validate({"model": str(fixed), "max_batch": 4})
    two = two_inputs_model(tmp_path / "two.onnx")
    with pytest.raises(
        ValidationError,
        match=r"param 'inputs': no data item feeds model input "
        "'b'",
    ):
        OnnxInference.Params.model_validate({"model": str(two), "inputs": {"p": "a"}})
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model\n")
    with pytest.raises(
        ValidationError,
        match=r"param 'model': '.*junk.onnx' is not an ONNX "
        "model onnxruntime can load",
    ):
        OnnxInference.Params.model_validate({"model": str(junk)})
    with pytest.raises(ValidationError, match=r"param 'model': no such file '.*nothere.onnx'"):
        OnnxInference.Params.model_validate({"model": str(tmp_path / "nothere.onnx")})
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelError, match=r"ml: param 'provider': cuda asked for, but "):
            OnnxInference(OnnxInference.Params(model=str(two), provider="cuda"), "ml")


PIPELINE = """\
name: onnx
nodes:
  spectra:
    use: mca_files
    params: {paths: [scan.mca]}
  ml:
    use: ml.onnx
    params:
      model: linear.onnx
      inputs: {spectrum: x}
      outputs: {y: features}
      cast: true
      max_batch: 8
      max_wait: 0.05
  capture:
    use: capture:Capture
    params: {path: out.pickle}
connections:
  - spectra.out -> ml.in
  - ml.out -> capture.in
"""


def test_pipeline_on_real_spectra_equals_onnxruntime(folder: Path) -> None:
    tmp_path = folder  # on sys.path: capture.py is imported from there
    shutil.copy(REPO / "examples" / "xrf-map" / "data" / "scan.mca", tmp_path)
    shutil.copy(NODES / "capture.py", tmp_path)
    model = linear_model(tmp_path / "linear.onnx", n_in=2048, n_out=8)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    result = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    spectra = run(bp_node("mca_files"), params={"paths": [str(tmp_path / "scan.mca")]}).messages()
    from capture import load

    got = [item for item in load(tmp_path / "out.pickle") if item[0] == "msg"]
    assert [item[2] for item in got] == list(range(1, 20))
    session = ort.InferenceSession(str(model), providers=[PROVIDER])
    for spectrum, item in zip(spectra, got, strict=True):
        (expected,) = session.run(None, {"x": spectrum.data["spectrum"][None].astype(np.float32)})
        same(item[5]["features"], expected[0])  # a row of a batch, and a batch of one
        assert item[4]["onnx_provider"] == PROVIDER
    assert f"ml: execution_provider {PROVIDER}" in result.stderr.splitlines()  # the summary


def test_the_execution_provider_of_each_replica_is_in_the_metrics_status_and_prometheus(
    folder: Path,
) -> None:
    shutil.copy(REPO / "examples" / "xrf-map" / "data" / "scan.mca", folder)
    shutil.copy(NODES / "capture.py", folder)
    linear_model(folder / "linear.onnx", n_in=2048, n_out=8)
    path = folder / "pipeline.yaml"
    path.write_text(
        PIPELINE.replace("  ml:\n    use: ml.onnx\n", "  ml:\n    use: ml.onnx\n    replicas: 2\n")
    )
    launcher = Launcher(load_pipeline(path), Recorder())
    result = launcher.run()
    assert result.exit_code == 0, result.errors
    assert result.metrics["ml"].info == {"execution_provider": PROVIDER}  # both replicas: once
    assert result.metrics["ml"].messages_in == 19
    status = [r for r in launcher.status()["replicas"] if r["node"] == "ml"]
    assert [r["info"] for r in status] == [{"execution_provider": PROVIDER}] * 2
    text = generate_latest(registry(RunCollector("onnx", lambda: launcher.published, dict)))
    for replica in (0, 1):
        line = (
            f'beampipe_node_info{{key="execution_provider",node="ml",pipeline="onnx",'
            f'replica="{replica}",value="{PROVIDER}"}} 1.0'
        )
        assert line in text.decode().splitlines()


def bp_node(name: str) -> type:
    from beampipe.worker.registry import resolve

    return resolve(name)


XPD_PIPELINE = """\
name: onnx-xpd
nodes:
  frames:
    use: image_files
    params: {paths: FRAME}
  bin:
    use: frame.bin
    params: {factor: 16}
  ml:
    use: ml.onnx
    params: {model: conv.onnx, inputs: {image: frame}, cast: true, scale: 0.001, max_batch: 4}
  capture:
    use: capture:Capture
    params: {path: out.pickle}
connections:
  - frames.out -> bin.in
  - bin.out -> ml.in
  - ml.out -> capture.in
"""


def test_pipeline_on_a_real_frame_equals_onnxruntime(folder: Path) -> None:
    tmp_path = folder  # on sys.path: capture.py is imported from there
    import fabio

    frame = REPO / "examples" / "powder-xpd" / "data" / "Ni_img_file.tiff.gz"
    shutil.copy(NODES / "capture.py", tmp_path)
    model = conv_model(tmp_path / "conv.onnx", 128, 128)
    (tmp_path / "pipeline.yaml").write_text(XPD_PIPELINE.replace("FRAME", str(frame)))
    result = beampipe("run", "pipeline.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    raw = fabio.open(str(frame)).data.astype(np.float64)
    binned = raw.reshape(128, 16, 128, 16).sum(axis=(1, 3))
    x = binned.astype(np.float32) * np.float32(0.001)
    (expected,) = direct(model, {"frame": x[None]})
    from capture import load

    (item,) = [item for item in load(tmp_path / "out.pickle") if item[0] == "msg"]
    np.testing.assert_array_equal(item[5]["features"], expected[0])
    assert item[4]["onnx_provider"] == PROVIDER


def test_validate_names_node_and_param(tmp_path: Path) -> None:
    linear_model(tmp_path / "linear.onnx", n_in=2048, n_out=8)
    text = PIPELINE.replace(
        "inputs: {spectrum: x}", "inputs: {spectrum: x}\n      shapes: {x: [1024]}"
    )
    (tmp_path / "pipeline.yaml").write_text(text)
    shutil.copy(NODES / "capture.py", tmp_path)
    result = beampipe("validate", "pipeline.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert (
        "pipeline.yaml:8: node 'ml': params: param 'shapes.x': [1024], but model input 'x' is "
        "declared [batch, 2048] ([2048] per message)" in (result.stderr + result.stdout)
    )


def test_beampipe_status_of_a_deployed_pipeline_shows_the_execution_provider(tmp_path: Path):
    from test_manager import Home

    shutil.copy(REPO / "examples" / "xrf-map" / "data" / "scan.mca", tmp_path)
    shutil.copy(NODES / "capture.py", tmp_path)
    linear_model(tmp_path / "linear.onnx", n_in=2048, n_out=8)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    home = Home(tmp_path / "home")
    try:
        done = home.run("deploy", "pipeline.yaml", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pipeline_id = done.stdout.strip()
        status = home.finished(pipeline_id)
        assert status["state"] == "done", status
        (ml,) = [r for r in status["replicas"] if r["node"] == "ml"]
        assert ml["info"] == {"execution_provider": PROVIDER}
        table = home.run("status", pipeline_id, cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        assert f"ml#0: execution_provider {PROVIDER}" in table.stdout.splitlines()
    finally:
        home.cleanup()
