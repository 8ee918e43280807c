"""An ONNX model as ``ml.onnx`` sees it: the onnxruntime session, the declared inputs and outputs
(name, shape, dtype), and the checks of the node's params against them.

The model is read by onnxruntime (https://onnxruntime.ai), which the extra ``ml`` installs; the
declared shapes and element types are those of the graph's inputs and outputs (ONNX's
``ValueInfoProto``): an axis is an int, or a name or ``None`` when it is dynamic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "Feed",
    "ModelError",
    "Signature",
    "Tensor",
    "check",
    "open_session",
    "read_signature",
    "signature_of",
]

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}
"""onnxruntime's element types -> numpy dtype names (the ones a message's arrays can have)."""

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ModelError(ValueError):
    """The model file is missing or not an ONNX model onnxruntime can load, or the node's params
    do not fit the model's declared inputs and outputs (a name it does not have, an input no
    data item feeds, a shape or dtype other than the declared one, batching over an axis that
    is not dynamic), or the execution provider asked for is not available. The text names the
    node, the param, the model's input or output and the shapes or dtypes."""


@dataclass(frozen=True)
class Tensor:
    """A declared input or output of the model: ``shape`` holds an int per fixed axis and a
    name (or None) per dynamic one; ``dtype`` is a numpy dtype name (None: a type numpy has
    no dtype for, e.g. a sequence or map)."""

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: str | None

    def shape_text(self, skip_first: bool = False) -> str:
        """The declared shape as ``[batch, 3, 64]`` (dynamic axes by name, ``?`` if unnamed)."""
        if self.shape is None:
            return "[unknown rank]"
        dims = self.shape[1:] if skip_first else self.shape
        return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


@dataclass(frozen=True)
class Signature:
    """The model's declared inputs and outputs, in the graph's order."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def input(self, name: str) -> Tensor | None:
        return next((t for t in self.inputs if t.name == name), None)


def _tensors(args: Sequence[Any]) -> tuple[Tensor, ...]:
    return tuple(
        Tensor(a.name, None if a.shape is None else tuple(a.shape), _DTYPES.get(a.type))
        for a in args
    )


def open_session(
    path: str, provider: str = "cpu", threads: int = 0, where: str = "", optimize: bool = True
) -> Any:
    """An ``onnxruntime.InferenceSession`` of the model at ``path`` on ``provider`` (``cpu``,
    ``cuda``, or ``auto``: CUDA where onnxruntime has it, else CPU), with ``threads`` intra-op
    threads (0: onnxruntime's default), graph optimisations on if ``optimize``.

    Raises:
        ModelError: no such file; onnxruntime cannot load it (not ONNX, or an operator it does
            not have); ``cuda`` asked for and not available. ``where`` starts the text.
        ImportError: onnxruntime is not installed (``pip install 'beampipe[ml]'``).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{where}ml.onnx needs onnxruntime (pip install 'beampipe[ml]')") from exc
    if not os.path.isfile(path):
        raise ModelError(f"{where}param 'model': no such file {path!r}")
    available = ort.get_available_providers()
    if provider == "auto":
        provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if PROVIDERS[provider] not in available:
        raise ModelError(
            f"{where}param 'provider': {provider} asked for, but onnxruntime here has "
            f"{', '.join(available)} (install onnxruntime-gpu with CUDA, or provider: auto)"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings are not the run's
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider == "cuda" else [])
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as exc:
        cause = " ".join(str(exc).split())[:300]
        raise ModelError(
            f"{where}param 'model': {path!r} is not an ONNX model onnxruntime can load "
            f"({type(exc).__name__}: {cause})"
        ) from None


def signature_of(session: Any) -> Signature:
    """The declared inputs and outputs of an ``InferenceSession``."""
    return Signature(_tensors(session.get_inputs()), _tensors(session.get_outputs()))


@lru_cache(maxsize=16)
def _read(path: str, mtime_ns: int, size: int) -> Signature:
    return signature_of(open_session(path, optimize=False))


def read_signature(path: str, where: str = "") -> Signature:
    """The declared inputs and outputs of the model at ``path``, read once per version of the
    file (by modification time and size) in a process.

    Raises:
        ModelError, ImportError: as :func:`open_session`.
    """
    try:
        stat = os.stat(path)
    except OSError:
        raise ModelError(f"{where}param 'model': no such file {path!r}") from None
    try:
        return _read(path, stat.st_mtime_ns, stat.st_size)
    except ModelError as exc:
        raise ModelError(f"{where}{exc}") from None


def _float(value: float | Mapping[str, float], name: str, default: float) -> float:
    return value.get(name, default) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class Feed:
    """How a data item becomes a model input: its names, the declared input, the scaling
    (``x * scale + offset``, computed in the input's dtype) and whether it is converted."""

    data: str
    tensor: Tensor
    scale: float
    offset: float
    convert: bool
    """The item is converted to the input's dtype (``cast``, or scaled)."""


def check(params: Any, sig: Signature, where: str = "") -> tuple[list[Feed], dict[str, str]]:
    """Check the params of ``ml.onnx`` against the model's declared inputs and outputs;
    ``(feeds, {model output: data name})``.

    Raises:
        ModelError: what does not fit, naming the param, the model's input or output and the
            declared and expected shapes or dtypes (``where`` starts the text).
    """
    names = [t.name for t in sig.inputs]
    mapping = dict(params.inputs) or {name: name for name in names}
    fed = {}
    for data, name in mapping.items():
        if name not in names:
            raise ModelError(
                f"{where}param 'inputs.{data}': the model has no input {name!r} "
                f"(its inputs: {', '.join(map(repr, names))})"
            )
        if name in fed:
            raise ModelError(f"{where}param 'inputs': model input {name!r} is fed twice")
        fed[name] = data
    for name in names:
        if name not in fed:
            raise ModelError(
                f"{where}param 'inputs': no data item feeds model input {name!r}: map one to it "
                f"(inputs: {{DATA: {name}}})"
            )
    for param in ("shapes", "dtypes", "scale", "offset"):
        value = getattr(params, param)
        for name in value if isinstance(value, Mapping) else ():
            if name not in names:
                raise ModelError(
                    f"{where}param '{param}.{name}': the model has no input {name!r} "
                    f"(its inputs: {', '.join(map(repr, names))})"
                )
    feeds = [_feed(params, t, fed[t.name], where) for t in sig.inputs]
    outs = [t.name for t in sig.outputs]
    for name in params.outputs:
        if name not in outs:
            raise ModelError(
                f"{where}param 'outputs.{name}': the model has no output {name!r} "
                f"(its outputs: {', '.join(map(repr, outs))})"
            )
    outputs = dict(params.outputs) or {name: name for name in outs}
    return feeds, outputs


def _feed(params: Any, t: Tensor, data: str, where: str) -> Feed:
    """The :class:`Feed` of model input ``t`` from data item ``data``, checked."""
    what = f"model input {t.name!r}"
    if t.dtype is None:
        raise ModelError(f"{where}{what} is not a tensor of numbers or bools: not supported")
    if t.shape is None:
        raise ModelError(f"{where}{what} has no declared rank: not supported")
    if params.batch_axis:
        first = t.shape[0] if t.shape else 0
        if not t.shape or (isinstance(first, int) and first != 1):
            raise ModelError(
                f"{where}param 'batch_axis': {what} is declared {t.shape_text()}, without a "
                "leading batch axis (dynamic or 1): set batch_axis: false to feed each message "
                "as it is"
            )
        if params.max_batch > 1 and isinstance(first, int):
            raise ModelError(
                f"{where}param 'max_batch': {params.max_batch}, but {what} is declared "
                f"{t.shape_text()}: its batch axis is fixed to 1 (export the model with a "
                "dynamic batch axis, or max_batch: 1)"
            )
    elif params.max_batch > 1:
        raise ModelError(f"{where}param 'max_batch': batching needs batch_axis: true")
    expected = params.shapes.get(t.name)
    if expected is not None:
        declared = t.shape[1:] if params.batch_axis else t.shape
        fits = len(expected) == len(declared) and all(
            not isinstance(d, int) or d == e for d, e in zip(declared, expected, strict=True)
        )
        if not fits:
            per = " per message" if params.batch_axis else ""
            raise ModelError(
                f"{where}param 'shapes.{t.name}': {list(expected)}, but {what} is declared "
                f"{t.shape_text()} ({t.shape_text(params.batch_axis)}{per})"
            )
    dtype = params.dtypes.get(t.name)
    if dtype is not None and np.dtype(dtype) != np.dtype(t.dtype):
        raise ModelError(
            f"{where}param 'dtypes.{t.name}': {np.dtype(dtype).name}, but {what} is declared "
            f"{t.dtype}"
        )
    scale = _float(params.scale, t.name, 1.0)
    offset = _float(params.offset, t.name, 0.0)
    scaled = scale != 1.0 or offset != 0.0
    if scaled and np.dtype(t.dtype).kind != "f":
        raise ModelError(
            f"{where}param 'scale'/'offset': {what} is {t.dtype}: scaling is for float inputs"
        )
    return Feed(data, t, scale, offset, params.cast or scaled)
