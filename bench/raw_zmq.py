"""The physical reference of ``bench/throughput.py``: a raw pyzmq PUSH/PULL pipe.

Same topology as the beampipe pipeline — source -> N workers -> sink, one OS process each
(``multiprocessing`` with the ``spawn`` start method), ``ipc://`` sockets in a temporary folder —
and the same frames and work: the source sends a pool of read-only uint16 frames of
``frame_bytes`` round-robin, each worker computes the frame's sum and passes the frame on with
the sum, the sink records its receipt times. All sends and receives are ``copy=False``.

Wire: ``[header, frame]`` from the source, ``[header, frame, sum]`` from a worker; ``header`` is
16 bytes: the frame number (int64) and the source's ``time.time()`` at send (float64), so the
sink can measure the end-to-end latency as beampipe's does (source timestamp -> sink receipt).

Flow control: ZeroMQ high-water marks only. Both ends of every pipe get
``SNDHWM = RCVHWM = hwm`` (``throughput.py`` picks ``hwm`` so that roughly as many messages can be
queued per pipe as beampipe's credit window allows).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import struct
import tempfile
import time
from collections.abc import Callable

import numpy as np
import zmq

HEADER = struct.Struct("<qd")


def _socket(ctx: zmq.Context, kind: int, hwm: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _source(
    address: str,
    frame_bytes: int,
    frames: int,
    pool: int,
    hwm: int,
    rate: float,
    start: mp.synchronize.Barrier,
    done: mp.synchronize.Event,
) -> None:
    rng = np.random.default_rng(0)
    frames_pool = []
    for _ in range(pool):
        a = rng.integers(0, 100, frame_bytes // 2, dtype=np.uint16)
        a.flags.writeable = False
        frames_pool.append(a)
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.PUSH, hwm)
    sock.bind(address)
    start.wait()
    time.sleep(0.3)  # let every worker's connect complete, so the first frames are spread out
    interval = 1.0 / rate if rate else 0.0
    deadline = time.monotonic()
    for i in range(frames):
        if interval:
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            deadline += interval
        sock.send_multipart([HEADER.pack(i, time.time()), frames_pool[i % pool]], copy=False)
    done.wait()
    ctx.destroy(linger=0)


def _worker(
    upstream: str, downstream: str, hwm: int, forward: bool, start: mp.synchronize.Barrier
) -> None:
    ctx = zmq.Context()
    pull = _socket(ctx, zmq.PULL, hwm)
    pull.connect(upstream)
    push = _socket(ctx, zmq.PUSH, hwm)
    push.connect(downstream)
    start.wait()
    while True:
        header, frame = pull.recv_multipart(copy=False)
        total = np.frombuffer(frame.buffer, dtype=np.uint16).sum(dtype=np.uint64)
        if forward:
            push.send_multipart([header, frame, total.tobytes()], copy=False)
        else:
            push.send_multipart([header, total.tobytes()], copy=False)


def _sink(
    address: str,
    frames: int,
    hwm: int,
    out: str,
    start: mp.synchronize.Barrier,
    done: mp.synchronize.Event,
) -> None:
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.PULL, hwm)
    sock.bind(address)
    t = np.empty(frames)
    lat = np.empty(frames)
    start.wait()
    perf, now, unpack = time.perf_counter, time.time, HEADER.unpack
    for i in range(frames):
        parts = sock.recv_multipart(copy=False)
        t[i] = perf()
        lat[i] = now() - unpack(parts[0].bytes)[1]
    np.save(out, np.column_stack([t, lat]))
    done.set()
    ctx.destroy(linger=0)


def run(
    frame_bytes: int,
    workers: int,
    frames: int,
    *,
    hwm: int,
    pool: int = 4,
    rate: float = 0.0,
    forward: bool = True,
    timeout: float = 600.0,
    on_start: Callable[[dict[int, str]], None] | None = None,
) -> np.ndarray:
    """Run the raw pipe once; the sink's ``(frames, 2)`` array of (receipt ``perf_counter``,
    end-to-end latency in s). ``rate`` 0 = as fast as possible, else frames per second.
    ``on_start`` is called with ``{pid: role}`` once the processes are started.

    Raises:
        RuntimeError: a process died or the run exceeded ``timeout`` seconds.
    """
    spawn = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-rawzmq-") as tmp:
        src, dst = f"ipc://{tmp}/source", f"ipc://{tmp}/sink"
        out = os.path.join(tmp, "sink.npy")
        start = spawn.Barrier(workers + 2)
        done = spawn.Event()
        sink = spawn.Process(target=_sink, args=(dst, frames, hwm, out, start, done))
        source = spawn.Process(
            target=_source,
            args=(src, frame_bytes, frames, pool, hwm, rate, start, done),
        )
        procs = [
            spawn.Process(target=_worker, args=(src, dst, hwm, forward, start), daemon=True)
            for _ in range(workers)
        ]
        for p in (sink, source, *procs):
            p.start()
        if on_start is not None:
            roles = {sink.pid: "raw sink", source.pid: "raw source"}
            roles.update({p.pid: f"raw worker#{i}" for i, p in enumerate(procs)})
            on_start(roles)
        try:
            deadline = time.monotonic() + timeout
            while sink.is_alive():
                sink.join(0.2)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"raw pyzmq run timed out after {timeout} s")
                dead = [p for p in (source, *procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"raw pyzmq process died: exit code {dead[0].exitcode}")
            if sink.exitcode != 0:
                raise RuntimeError(f"raw pyzmq sink exited with {sink.exitcode}")
            return np.load(out)
        finally:
            done.set()
            for p in (sink, source, *procs):
                if p.is_alive():
                    p.terminate()
            for p in (sink, source, *procs):
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
