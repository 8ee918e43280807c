"""Benchmark nodes for ``bench/throughput.py`` (importable as ``bench_nodes:FrameSum`` etc.).

The benchmark writes its pipeline files into a temporary folder next to a copy of this module,
and the launcher puts that folder on the ``PYTHONPATH`` of every node process
(``use: bench_nodes:FrameSum``).

* :class:`FrameSum` — the trivial worker: the sum of the frame, passed on with the frame itself
  (so that both hops of source -> worker -> sink carry the full frame, as the raw pyzmq
  reference does).
* Both time Python's cyclic garbage collector in their process (``gc.callbacks``) and, given
  ``gc_log``, write ``{"collections": [gen0, gen1, gen2], "seconds": [...]}`` there at ``close``
  (the worker adds ``.REPLICA``).
* Experiments for suggested changes in ``src/`` (not part of the benchmark proper), switched on
  by ``BENCH_EXPERIMENT=name[,name]`` in the environment (``throughput.py --experiment``); they
  patch the runtime in the node processes that import this module (worker and sink):

  - ``frame-forward``: the encoder sends an array that is a whole view of a received
    ``zmq.Frame`` as that Frame (pyzmq then copies the message reference, ``zmq_msg_copy``,
    instead of wrapping the array in a new zero-copy frame whose release goes through pyzmq's
    garbage-collector thread) — for ``beampipe.message.wire.encode`` as the emitter
    (``beampipe.runtime.emitter``) calls it. (The earlier ``out-poller`` experiment is what
    ``runtime.wiring.Wiring.poll`` does now: waiting for credit polls only the control and
    output sockets.)
* :class:`Recorder` — the sink: per message, the receipt time (``time.perf_counter``, for the
  steady-state throughput) and the end-to-end latency from the source's timestamp
  (``time.time``); written as one ``.npy`` of shape (n, 2) at ``close``. With ``delay`` > 0 it
  sleeps that long per message (the slow sink of ``--backpressure``).
"""

from __future__ import annotations

import gc
import json
import os
import time

import numpy as np
import zmq

import beampipe


class GcClock:
    """Counts and times the collections of Python's cyclic garbage collector, per generation."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            generation = info["generation"]
            self.collections[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._t0

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"collections": self.collections, "seconds": self.seconds}, f)


class FrameSum(beampipe.Worker):
    """``sum`` = the sum of ``image`` (uint64), sent on together with ``image`` (zero-copy)."""

    class Params(beampipe.Params):
        forward: bool = True
        """Pass the frame on (True) or only its sum (False)."""
        gc_log: str | None = None

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._gc = GcClock()

    def close(self) -> None:
        if self.params.gc_log:
            self._gc.save(f"{self.params.gc_log}.{self.replica}")

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        image = msg.data["image"]
        total = np.asarray(image.sum(dtype=np.uint64))
        if self.params.forward:
            return beampipe.Message(data={"image": image, "sum": total})
        return beampipe.Message(data={"sum": total})


class Recorder(beampipe.Worker):
    """Sink: records (receipt perf_counter, end-to-end latency in s) per message into ``path``."""

    outputs = ()

    class Params(beampipe.Params):
        path: str
        delay: float = 0.0
        """Seconds to sleep per message (a deliberately slow sink)."""
        gc_log: str | None = None

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self._gc = GcClock()
        self._t: list[float] = []
        self._lat: list[float] = []

    def process(self, msg: beampipe.Message) -> None:
        now = time.time()
        self._t.append(time.perf_counter())
        self._lat.append(now - msg.timestamps[0][1] if msg.timestamps else float("nan"))
        if self.params.delay:
            time.sleep(self.params.delay)
        return None

    def close(self) -> None:
        if self._t is not None:
            np.save(self.params.path, np.column_stack([self._t, self._lat]).reshape(-1, 2))
            self._t = None  # type: ignore[assignment]
            if self.params.gc_log:
                self._gc.save(self.params.gc_log)


def _frame_of(array: np.ndarray) -> zmq.Frame | None:
    """The received zmq.Frame ``array`` is a whole, contiguous view of, if it is one."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, memoryview) or not isinstance(base.obj, zmq.Frame):
        return None
    if not array.flags.c_contiguous or array.nbytes != base.nbytes:
        return None
    if np.frombuffer(base, dtype=np.uint8).ctypes.data != array.ctypes.data:
        return None
    return base.obj


def _install_frame_forward() -> None:
    import beampipe.runtime.emitter as emitter_module
    from beampipe.message import Message, wire

    original = wire.encode

    def encode(item):  # type: ignore[no-untyped-def]
        frames = original(item)
        if isinstance(item, Message) and len(frames) > 1:
            frames = [frames[0]] + [
                (_frame_of(f) or f) if isinstance(f, np.ndarray) else f for f in frames[1:]
            ]
        return frames

    wire.encode = encode
    emitter_module.encode = encode


_experiments = set(filter(None, os.environ.get("BENCH_EXPERIMENT", "").split(",")))
if "frame-forward" in _experiments:
    _install_frame_forward()
