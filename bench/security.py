"""What the run's security costs: authentication alone (PLAIN checked by the ZAP handler) and
CURVE encryption, against raw pyzmq without security, measured in the same run.

    python bench/security.py [--repeat N] [--seconds S] [--json FILE]

For each mode (``none``: raw pyzmq; ``plain``: a :class:`beampipe.transport.security.Gate`
and PLAIN credentials, beampipe's default; ``curve``: the same with ``encrypt: true``) and
message size (1 KiB, 4 MiB):

* throughput: this process PUSHes messages to a PULL socket in another process (``spawn``) over
  ``tcp://127.0.0.1`` (``SNDHWM = RCVHWM`` = 1000 messages at 1 KiB, 16 at 4 MiB), sent from
  one preallocated buffer (``copy=False`` at 4 MiB); the receiver times from the first message
  to the last (the handshake is not included); the count is chosen so that a run lasts about
  ``--seconds`` at the previous repeat's rate;
* connection set-up: a new DEALER connects to a ROUTER in the other process, sends one byte
  and waits for the echo, 30 times: the time from connect to echo (handshake, ZAP included).

The modes are interleaved within each repeat, their order rotated from one repeat to the next
(the machine's load drifts); the tables give medians over ``--repeat`` (default 7) and the
median over the repeats of the ratio to raw pyzmq in the same repeat.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import zmq

from beampipe.transport.security import Credentials, Gate

MODES = ("none", "plain", "curve")
SIZES = {"1 KiB": 1024, "4 MiB": 4 << 20}
HWM = {1024: 1000, 4 << 20: 16}
HANDSHAKES = 30


def _server(ctx: zmq.Context, kind: int, mode: str, secret: str) -> tuple[zmq.Socket, Gate | None]:
    sock = ctx.socket(kind)
    gate = None
    if mode != "none":
        gate = Gate(ctx, Credentials(secret, mode == "curve"))
        gate.serve(sock, "bench")
    return sock, gate


def _client(ctx: zmq.Context, kind: int, mode: str, secret: str) -> zmq.Socket:
    sock = ctx.socket(kind)
    if mode != "none":
        Credentials(secret, mode == "curve").client(sock)
    return sock


def receive(mode: str, secret: str, size: int, count: int, out: Any) -> None:
    """The PULL end: ``out`` gets the endpoint, then messages/s from the first to the last."""
    ctx = zmq.Context()
    sock, gate = _server(ctx, zmq.PULL, mode, secret)
    sock.setsockopt(zmq.RCVHWM, HWM[size])
    sock.bind("tcp://127.0.0.1:*")
    out.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    sock.recv(copy=False)
    t0 = time.perf_counter()
    for _ in range(count - 1):
        sock.recv(copy=False)
    out.put((count - 1) / (time.perf_counter() - t0))
    if gate is not None:
        gate.close()
    ctx.destroy(linger=0)


def echo(mode: str, secret: str, out: Any) -> None:
    """A ROUTER that echoes ``HANDSHAKES`` messages; ``out`` gets its endpoint."""
    ctx = zmq.Context()
    sock, gate = _server(ctx, zmq.ROUTER, mode, secret)
    sock.bind("tcp://127.0.0.1:*")
    out.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    for _ in range(HANDSHAKES):
        sock.send_multipart(sock.recv_multipart())
    if gate is not None:
        gate.close()
    ctx.destroy(linger=0)


def throughput(spawn: Any, mode: str, size: int, count: int) -> float:
    secret = Credentials.generate().secret
    out = spawn.Queue()
    proc = spawn.Process(target=receive, args=(mode, secret, size, count, out))
    proc.start()
    ctx = zmq.Context()
    sock = _client(ctx, zmq.PUSH, mode, secret)
    sock.setsockopt(zmq.SNDHWM, HWM[size])
    sock.connect(out.get(timeout=60))
    payload = os.urandom(size)
    copy = size < 65536
    for _ in range(count):
        sock.send(payload, copy=copy)
    rate = out.get(timeout=600)
    proc.join()
    ctx.destroy(linger=0)
    return rate


def handshake(spawn: Any, mode: str) -> float:
    """Median seconds from connect to the first echo."""
    secret = Credentials.generate().secret
    out = spawn.Queue()
    proc = spawn.Process(target=echo, args=(mode, secret, out))
    proc.start()
    endpoint = out.get(timeout=60)
    ctx = zmq.Context()
    times = []
    for _ in range(HANDSHAKES):
        sock = _client(ctx, zmq.DEALER, mode, secret)
        t0 = time.perf_counter()
        sock.connect(endpoint)
        sock.send(b"x")
        sock.recv()
        times.append(time.perf_counter() - t0)
        sock.close(linger=0)
    proc.join()
    ctx.destroy(linger=0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    spawn = mp.get_context("spawn")
    rates: dict[tuple[str, str], list[float]] = {(m, s): [] for m in MODES for s in SIZES}
    setups: dict[str, list[float]] = {m: [] for m in MODES}
    counts = {(m, s): 20000 if n < 65536 else 100 for m in MODES for s, n in SIZES.items()}
    for r in range(args.repeat):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for name, size in SIZES.items():
            for mode in order:
                rate = throughput(spawn, mode, size, counts[mode, name])
                rates[mode, name].append(rate)
                counts[mode, name] = max(50, int(rate * args.seconds))
        for mode in order:
            setups[mode].append(handshake(spawn, mode))
        print(f"repeat {r + 1}/{args.repeat} done, load {os.getloadavg()[0]:.1f}", flush=True)
    print("\n| size | mode | msg/s (median) | MB/s | x raw pyzmq |")
    print("| --- | --- | --: | --: | --: |")
    for name, size in SIZES.items():
        raw = rates["none", name]
        for mode in MODES:
            med = statistics.median(rates[mode, name])
            ratio = statistics.median(x / y for x, y in zip(rates[mode, name], raw, strict=True))
            print(f"| {name} | {mode} | {med:,.0f} | {med * size / 1e6:,.0f} | {ratio:.2f} |")
    print("\n| mode | connect to first echo, ms (median) |")
    print("| --- | --: |")
    for mode in MODES:
        print(f"| {mode} | {1000 * statistics.median(setups[mode]):.2f} |")
    if args.json:
        data = {
            "rates": {f"{m} {s}": v for (m, s), v in rates.items()},
            "setups": setups,
        }
        with open(args.json, "w") as out:
            json.dump(data, out, indent=1)


if __name__ == "__main__":
    main()
