"""What the metadata ``process`` of ``azint.*`` costs a message: encode + decode
(``beampipe.message.encode``/``decode``, one core) of a 1000-bin I(q) pattern as
``azint.integrate1d`` sends it, with and without ``process`` (about 1.3 KB of JSON: every
integration parameter and the PONI file's text). ``azint.*`` sends it on each replica's first
result of a stream only (docs/nodes.md, "Azimuthal integration"); this measures what that saves
on every other message. Prints the best of ``--repeat`` rounds of ``--number`` messages.

    nice python bench/azint_process.py
"""

from __future__ import annotations

import argparse
import json
import timeit
from pathlib import Path

import numpy as np

import beampipe as bp
from beampipe.message import decode, encode
from beampipe.nodes.azint.geometry import AzintParams, chosen_method, integrator
from beampipe.nodes.azint.provenance import process_metadata

PONI = Path(__file__).parents[1] / "examples" / "powder-xpd" / "data" / "Ni_poni_file.poni"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="messages per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the best is printed)")
    args = parser.parse_args()
    params = AzintParams(poni=str(PONI), unit="q_A^-1", npt=1000, polarization_factor=0.99)
    method = chosen_method(params.method, 1).describe()
    process = process_metadata(params, integrator(params), method)
    rng = np.random.default_rng(0)
    data = {name: rng.random(1000) for name in ("intensity", "sigma", "q")}
    metadata = {
        "signal": "intensity",
        "axes": ["q"],
        "units": {"q": "1/angstrom"},
        "unit": "q_A^-1",
        "normalization_factor": 1.0,
        "method": method,
        "file": "scan/ni_0.tif",
        "frame": 0,
    }
    print(f"process: {len(json.dumps(process))} bytes of JSON")
    for label, meta in (("with process", {**metadata, "process": process}), ("without", metadata)):
        msg = bp.Message(data=data, metadata=meta, stream="scan", id=1)
        rounds = timeit.repeat(
            lambda m=msg: decode(encode(m)), number=args.number, repeat=args.repeat
        )
        size = sum(memoryview(frame).nbytes for frame in encode(msg))
        print(f"{label:>12}: {min(rounds) / args.number * 1e6:.1f} us encode + decode, {size} B")


if __name__ == "__main__":
    main()
