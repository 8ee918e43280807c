"""What the viewer's preview of an element map costs per message (issue 20).

The message is what the ``map`` reducer emits for a scan of ``--elements`` element lines on a
``--ny`` x ``--nx`` raster, half measured (``Map.result`` of a filled state: ``area`` and
``area_sigma`` (n, ny, nx), ``chisq`` (ny, nx), ``measured``, ``x``/``y`` in um, with ``split``
one (ny, nx) map per line). Medians of ``--repeat`` timings of ``--loops`` calls each, in this
process:

* the preview: :meth:`PortPreview.add` with every message binned (its clock moves 1 s per
  message, so the rate limit of two binnings per second never holds one back: the worst case);
* one update's plot: ``payload("area", slice)`` and its JSON (what a page is sent, at most
  four times a second, whatever the message rate);
* an I(q) message (``intensity``, ``sigma``, ``q`` of ``--npt`` points, ``signal:
  intensity``, as ``azint.integrate1d`` sends them): :meth:`PortPreview.add`, which also adds
  the pattern to the stream's waterfall;
* baselines in the same run: decoding the message from the wire (what the viewer's subscriber
  does to every message it gets anyway), encoding it (what the reducer does to send it), and
  binning only the first slice of each item (what the viewer did before it kept every slice).

    python bench/viewer_previews.py [--elements 10] [--ny 100] [--nx 100]

Prints one line per measurement; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from beampipe.message import Message, decode, encode
from beampipe.nodes.reduce.raster import Map
from beampipe.viewer.images import bin_image
from beampipe.viewer.previews import PortPreview
from beampipe.viewer.websocket import dumps


def per_call(function: Callable[[], object], loops: int, repeat: int) -> float:
    """Median seconds per call of ``function()`` over ``repeat`` timings of ``loops`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            function()
        times.append((time.perf_counter() - t0) / loops)
    return statistics.median(times)


def map_message(elements: int, ny: int, nx: int) -> Message:
    """The ``map`` reducer's emission half-way through the scan."""
    params = {
        "shape": [ny, nx],
        "fields": ["area", "area_sigma", "chisq"],
        "x": "samx",
        "y": "samy",
        "grid": {"x": [0.0, 0.5], "y": [0.0, 0.5], "units": "um"},
        "split": True,
    }
    node = Map(Map.Params.model_validate(params), name="maps")
    state = node.start("scan", {})
    rng = np.random.default_rng(0)
    state.names = [f"line {k}" for k in range(elements)]
    half = ny // 2
    for name, shape in (("area", (elements,)), ("area_sigma", (elements,)), ("chisq", ())):
        maps = np.full((*shape, ny, nx), np.nan)
        maps[..., :half, :] = rng.gamma(2.0, 1e4, (*shape, half, nx))
        state.maps[name] = maps
    state.measured[:half] = True
    msg = node.result("scan", state, final=False)
    msg.stream, msg.id = "scan", half * nx
    return msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=10)
    parser.add_argument("--ny", type=int, default=100)
    parser.add_argument("--nx", type=int, default=100)
    parser.add_argument("--npt", type=int, default=1000, help="points of an I(q) pattern")
    parser.add_argument("--loops", type=int, default=50, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings")
    args = parser.parse_args()

    msg = map_message(args.elements, args.ny, args.nx)
    frames = encode(msg)
    wire = sum(len(memoryview(f).cast("B")) for f in frames)
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    preview = PortPreview(clock=clock)
    preview.add(msg)
    payload = dumps(preview.payload("area", 3))
    images = [v for v in msg.data.values() if v.ndim >= 2]
    timings = {
        "preview: PortPreview.add (binned)": per_call(
            lambda: preview.add(msg), args.loops, args.repeat
        ),
        "update: payload + JSON of one map": per_call(
            lambda: dumps(preview.payload("area", 3)), args.loops, args.repeat
        ),
        "baseline: decode (the subscriber)": per_call(
            lambda: decode(frames), args.loops, args.repeat
        ),
        "baseline: encode (the reducer)": per_call(lambda: encode(msg), args.loops, args.repeat),
        "baseline: first slices only": per_call(
            lambda: [bin_image(v.reshape(-1, *v.shape[-2:])[0]) for v in images],
            args.loops,
            args.repeat,
        ),
    }
    q = np.linspace(0.5, 40.0, args.npt)
    pattern = Message(
        data={"intensity": 1e3 / q, "sigma": np.sqrt(1e3 / q), "q": q},
        metadata={"signal": "intensity", "axes": ["q"], "units": {"q": "nm^-1"}},
        stream="run",
        id=1,
    )
    curves = PortPreview()
    pattern_frames = encode(pattern)
    timings["I(q): PortPreview.add (+ waterfall)"] = per_call(
        lambda: curves.add(pattern), args.loops, args.repeat
    )
    timings["I(q) baseline: decode"] = per_call(
        lambda: decode(pattern_frames), args.loops, args.repeat
    )
    shape = (args.elements, args.ny, args.nx)
    print(
        f"map message {shape}: {len(msg.data)} items, {wire / 1e6:.2f} MB on the wire; "
        f"one update's plot {len(payload) / 1e3:.0f} kB; median of {args.repeat} x {args.loops}:"
    )
    for label, seconds in timings.items():
        print(f"  {label:<36} {seconds * 1e6:8.0f} µs")
    add = timings["preview: PortPreview.add (binned)"]
    print(f"  preview / decode: {add / timings['baseline: decode (the subscriber)']:.2f}")


if __name__ == "__main__":
    main()
