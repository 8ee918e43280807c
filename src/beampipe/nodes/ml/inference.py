"""Inference of an ONNX model on each message, with onnxruntime: ``use: ml.onnx``."""

from __future__ import annotations

import sys
from typing import Any, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from pydantic_core import PydanticCustomError

import beampipe
from beampipe.nodes.ml.model import (
    Feed,
    ModelError,
    check,
    open_session,
    read_signature,
    signature_of,
)

__all__ = ["InputMismatch", "OnnxInference"]


class InputMismatch(ValueError):
    """A message does not fit the model: a data item the model needs is missing or is not an
    array, or its dtype or shape is not the declared one. The text names the node, stream, id,
    data item, model input and both dtypes or shapes."""


class OnnxInference(beampipe.Worker):
    """An ONNX model run by onnxruntime on each message; several messages at hand are stacked
    along the model's batch axis into one inference call.

    Input: per message, one array per model input, under the data name ``inputs`` maps to it
    (by default the input's own name): the model input's declared shape without its leading
    batch axis (``batch_axis: true``, the default) or with it (``false``: fed as it is), and its
    declared dtype, unless converted (``cast``, or scaled: ``x * scale + offset`` computed in the
    input's dtype).

    Output, per message (stream and id kept): data ``{outputs[name]: array}`` for each model
    output (by default all, under their own names), of the model's dtype, the batch axis
    removed; metadata: the input's, with ``signal`` = the first output's data name and
    ``onnx_provider`` = the execution provider that ran it (``CUDAExecutionProvider`` or
    ``CPUExecutionProvider``), which is also the node's info ``execution_provider`` in the
    metrics (:meth:`beampipe.Worker.report_info`).

    Batching (``max_batch`` > 1): the runtime hands :meth:`process_batch` up to ``max_batch``
    messages at hand, waiting at most ``max_wait`` s after the first (docs/nodes.md, "Your own
    node"); messages whose arrays have the same shapes go in one call, stacked along axis 0.

    Raises:
        ModelError: (at ``beampipe validate`` and when the node starts) see
            :class:`~beampipe.nodes.ml.model.ModelError`.
        InputMismatch: a message does not fit the model.
        ImportError: onnxruntime is not installed (``pip install 'beampipe[ml]'``).
    """

    class Params(beampipe.Params):
        """``model``: the ``.onnx`` file. ``inputs``: ``{data name: model input name}``
        (default: each input from the data item of its name). ``outputs``: ``{model output
        name: data name}`` (default: every output, under its name). ``shapes``, ``dtypes``:
        ``{model input: shape per message, dtype}`` the pipeline expects, checked against the
        model's declaration. ``scale``, ``offset``: a number, or ``{model input: number}``.
        ``cast``: convert each item to its input's dtype. ``batch_axis``: the model's inputs and
        outputs have a leading batch axis that the messages' arrays do not. ``max_batch``,
        ``max_wait`` (s): batching. ``provider``: ``auto`` (CUDA where present, else CPU),
        ``cpu`` or ``cuda``. ``threads``: onnxruntime's intra-op threads (0: its default)."""

        model: beampipe.InputPath
        inputs: dict[str, str] = Field(default_factory=dict)
        outputs: dict[str, str] = Field(default_factory=dict)
        shapes: dict[str, list[NonNegativeInt]] = Field(default_factory=dict)
        dtypes: dict[str, str] = Field(default_factory=dict)
        scale: float | dict[str, float] = 1.0
        offset: float | dict[str, float] = 0.0
        cast: bool = False
        batch_axis: bool = True
        max_batch: PositiveInt = 1
        max_wait: float = Field(0.0, ge=0.0, le=60.0)
        provider: Literal["auto", "cpu", "cuda"] = "auto"
        threads: NonNegativeInt = 0

        @model_validator(mode="after")
        def _fits_model(self) -> OnnxInference.Params:
            for name, dtype in self.dtypes.items():
                try:
                    np.dtype(dtype)
                except TypeError:
                    raise ValueError(f"param 'dtypes.{name}': {dtype!r}: not a dtype") from None
            try:
                check(self, read_signature(self.model))
            except ModelError as exc:  # its text names the param: no "Value error" before it
                raise PydanticCustomError("value_error", "{text}", {"text": str(exc)}) from None
            return self

    params: OnnxInference.Params

    def __init__(self, params: OnnxInference.Params, name: str = "") -> None:
        super().__init__(params, name)
        where = f"{self.name}: "
        self.session = open_session(params.model, params.provider, params.threads, where)
        self.feeds, self.outputs_map = check(params, signature_of(self.session), where)
        self.provider: str = self.session.get_providers()[0]
        """The execution provider that runs the model (chosen when the node starts)."""
        self.report_info("execution_provider", self.provider)
        self.max_batch = params.max_batch
        self.max_wait = params.max_wait
        self._names = list(self.outputs_map)
        print(f"{self.name}: {params.model} on {self.provider}", file=sys.stderr)

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        return self.process_batch([msg])[0]

    def process_batch(self, msgs: list[Any]) -> list[Any]:
        """One result per message (see the class); one inference call per group of messages
        whose arrays have the same shapes."""
        arrays = [self._arrays(msg) for msg in msgs]
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, feed in enumerate(arrays):
            groups.setdefault(tuple(a.shape for a in feed), []).append(i)
        results: list[Any] = [None] * len(msgs)
        for members in groups.values():
            outs = self._run([arrays[i] for i in members])
            for k, i in enumerate(members):
                results[i] = self._message(msgs[i], [out[k] for out in outs])
        return results

    def _arrays(self, msg: beampipe.Message) -> list[np.ndarray]:
        """The arrays of ``msg`` for the model's inputs, converted and checked."""
        return [self._array(msg, feed) for feed in self.feeds]

    def _array(self, msg: beampipe.Message, feed: Feed) -> np.ndarray:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}: data {feed.data!r}"
        t = feed.tensor
        value = msg.data.get(feed.data)
        if value is None or isinstance(value, bytes):
            have = ", ".join(map(repr, msg.data)) or "none"
            what = "missing" if value is None else "bytes, not an array"
            raise InputMismatch(
                f"{where} (for model input {t.name!r}) is {what} (the message's data: {have}; "
                "param 'inputs' maps data names to model inputs)"
            )
        x = np.asarray(value)
        dtype = np.dtype(t.dtype)
        if feed.convert:
            x = x.astype(dtype)
            if feed.scale != 1.0:
                x *= dtype.type(feed.scale)
            if feed.offset != 0.0:
                x += dtype.type(feed.offset)
        elif x.dtype != dtype:
            raise InputMismatch(
                f"{where} is {x.dtype.name}, model input {t.name!r} is declared {dtype.name} "
                "(cast: true, or scale/offset, converts it)"
            )
        declared = t.shape[1:] if self.params.batch_axis else t.shape
        fits = x.ndim == len(declared) and all(
            not isinstance(d, int) or d == n for d, n in zip(declared, x.shape, strict=True)
        )
        if not fits:
            per = " per message" if self.params.batch_axis else ""
            raise InputMismatch(
                f"{where} has shape {list(x.shape)}, model input {t.name!r} is declared "
                f"{t.shape_text()} ({t.shape_text(self.params.batch_axis)}{per})"
            )
        return x

    def _run(self, group: list[list[np.ndarray]]) -> list[np.ndarray]:
        """The model's outputs for the messages of ``group`` (their arrays per input), with one
        leading axis over the messages."""
        feeds: dict[str, np.ndarray] = {}
        for j, feed in enumerate(self.feeds):
            parts = [arrays[j] for arrays in group]
            feeds[feed.tensor.name] = np.stack(parts) if self.params.batch_axis else parts[0]
        outs = self.session.run(self._names, feeds)
        return outs if self.params.batch_axis else [out[np.newaxis] for out in outs]

    def _message(self, msg: beampipe.Message, outs: list[np.ndarray]) -> beampipe.Message:
        data = {self.outputs_map[name]: out for name, out in zip(self._names, outs, strict=True)}
        metadata = {
            **msg.metadata,
            "signal": self.outputs_map[self._names[0]],
            "onnx_provider": self.provider,
        }
        return beampipe.Message(data=data, metadata=metadata)
